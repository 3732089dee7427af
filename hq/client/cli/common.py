"""What every hq command line shares: one-line errors with stable codes, JSON and tables.

`run(name, body)` turns HQError and bad input into `name: message [CODE]`, exit 1.
"""

import json
import math
import sys

from hq.errors import BAD_USAGE, HQError
from hq.text import escape

SIZE_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
INT32_MAX = (1 << 31) - 1        # the server's bound on counts, seconds, priorities
INT64_MAX = (1 << 63) - 1        # ... and on bytes
MAX_ROWS = 10000                 # jobs a list shows unless --limit asks for another number


def run(name, body):
    """Call body(); map errors to one line on stderr and an exit status."""
    try:
        return body() or 0
    except HQError as exc:
        print(f"{name}: {escape(exc.message)} [{exc.code}]", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f": {escape(exc.filename)}" if exc.filename else ""
        print(f"{name}: {escape(exc.strerror or exc)}{where}", file=sys.stderr)
        return 1


def parse_args(doc, argv, name, **options):
    """docopt's parse of argv; a command line it refuses is one line, exit 1 (HQError)."""
    from docopt import DocoptExit, docopt
    try:
        return docopt(doc, argv=argv, **options)
    except DocoptExit:
        given = " ".join(sys.argv[1:] if argv is None else argv)
        raise HQError(BAD_USAGE, f"cannot parse {given[:200]!r}; see '{name} --help'") from None


def main(name, doc, body, argv=None, quick=None, **options):
    """A command line's main(): parse (`quick(argv)` first, if given: None leaves the command
    line to docopt), then run body(args) with one-line errors."""
    def parsed():
        args = quick(sys.argv[1:] if argv is None else list(argv)) if quick else None
        return body(args if args is not None else parse_args(doc, argv, name, **options))
    return run(name, parsed)


def usage_error(message):
    raise HQError(BAD_USAGE, message)


def print_json(value):
    json.dump(value, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


def table(rows, columns):
    """Print rows (dicts) as aligned columns with a header; cells escaped."""
    for line in table_lines(rows, columns):
        print(line)


def table_lines(rows, columns):
    """The lines of `table`: a header, then a line a row."""
    cells = [[str(c).upper() for c in columns]]
    cells += [["-" if r.get(c) is None else escape(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]


def newest_rows(fetch, limit, name):
    """fetch(limit) (rows in id order); without a limit, the newest MAX_ROWS, with a note on
    stderr when there are more: a list of a million jobs is no use on a terminal."""
    if limit:
        return fetch(limit)
    rows = fetch(MAX_ROWS + 1)
    if len(rows) > MAX_ROWS:
        rows = sorted(rows, key=lambda row: row["id"])[-MAX_ROWS:]
        print(f"{name}: showing the newest {MAX_ROWS} jobs; there are more (narrow with "
              "--state or --batch, or ask for --limit=N)", file=sys.stderr)
    return rows


def parse_int(text, what, minimum=0, maximum=INT32_MAX):
    try:
        value = int(text)
    except (TypeError, ValueError):
        usage_error(f"{what} must be a whole number, not {str(text)[:50]!r}")
    if value < minimum:
        usage_error(f"{what} must be at least {minimum}")
    if value > maximum:
        usage_error(f"{what} must be at most {maximum}")
    return value


def parse_size(text):
    """Bytes from '500M', '4G', '1.5G' or a plain number of megabytes."""
    raw = text.strip().upper().removesuffix("B")
    unit = raw[-1] if raw and raw[-1] in SIZE_UNITS else ""
    try:
        number = float(raw[:-1] if unit else raw)
    except ValueError:
        usage_error(f"memory must look like 500M or 4G, not {text[:50]!r}")
    if not math.isfinite(number):
        usage_error(f"memory must be a finite size, not {text[:50]!r}")
    if number < 0:
        usage_error("memory must not be negative")
    if number * SIZE_UNITS[unit] > INT64_MAX:
        usage_error(f"memory {text[:50]!r} is too large")
    return int(number * SIZE_UNITS[unit])


def job_ids(values):
    return [parse_int(v, "job id", 1, INT64_MAX) for v in values]
