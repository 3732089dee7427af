"""What every hq command line shares: one-line errors with stable codes, JSON and tables.

`run(name, body, argv)` turns HQError and bad input into `name: message [CODE]`, exit 1.
"""

import json
import sys

from hq.errors import HQError

SIZE_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def run(name, body):
    """Call body(); map errors to one line on stderr and an exit status."""
    try:
        return body() or 0
    except HQError as exc:
        print(f"{name}: {exc.message} [{exc.code}]", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"{name}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
              file=sys.stderr)
        return 1


def usage_error(message):
    raise HQError("BAD_USAGE", message)


def print_json(value):
    json.dump(value, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


def table(rows, columns):
    """Print rows (dicts) as aligned columns with a header."""
    cells = [[str(c).upper() for c in columns]]
    cells += [["-" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def parse_int(text, what, minimum=0):
    try:
        value = int(text)
    except (TypeError, ValueError):
        usage_error(f"{what} must be a whole number, not {text!r}")
    if value < minimum:
        usage_error(f"{what} must be at least {minimum}")
    return value


def parse_size(text):
    """Bytes from '500M', '4G', '1.5G' or a plain number of megabytes."""
    raw = text.strip().upper().removesuffix("B")
    unit = raw[-1] if raw and raw[-1] in SIZE_UNITS else ""
    try:
        number = float(raw[:-1] if unit else raw)
    except ValueError:
        usage_error(f"memory must look like 500M or 4G, not {text!r}")
    if number < 0:
        usage_error("memory must not be negative")
    return int(number * SIZE_UNITS[unit])


def job_ids(values):
    return [parse_int(v, "job id", 1) for v in values]
