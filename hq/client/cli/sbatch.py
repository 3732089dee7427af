"""Slurm's #SBATCH options in hq's terms: an honoured option becomes an hq-submit option; any
other is named in a warning (ignored) or refuses the submission (hq cannot honour it)."""

import re
import shlex

from hq.client.cli.common import parse_size
from hq.errors import HQError

VALUE, FLAG, OPTIONAL = "value", "flag", "optional"   # how an option takes its value
MAX_ARRAY = 100000          # jobs in one array
NO_HOST_LISTS = "hq does not expand Slurm host lists: name one host"
GPUS = "hq does not allocate GPUs or other generic resources"

# Every option hq knows: long name -> (short letter, kind). Honoured ones are in HONOURED,
# refused ones in REFUSED; the rest are ignored with a warning (IGNORED gives some a reason).
OPTIONS = {
    "job-name": ("J", VALUE), "cpus-per-task": ("c", VALUE), "ntasks": ("n", VALUE),
    "ntasks-per-node": (None, VALUE), "nodes": ("N", VALUE), "mem": (None, VALUE),
    "mem-per-cpu": (None, VALUE), "time": ("t", VALUE), "output": ("o", VALUE),
    "error": ("e", VALUE), "chdir": ("D", VALUE), "dependency": ("d", VALUE),
    "array": ("a", VALUE), "hold": ("H", FLAG), "nodelist": ("w", VALUE),
    "exclude": ("x", VALUE), "export": (None, VALUE),
    "partition": ("p", VALUE), "account": ("A", VALUE), "qos": ("q", VALUE),
    "mail-type": (None, VALUE), "mail-user": (None, VALUE), "comment": (None, VALUE),
    "requeue": (None, FLAG), "no-requeue": (None, FLAG), "exclusive": (None, OPTIONAL),
    "constraint": ("C", VALUE), "licenses": ("L", VALUE), "time-min": (None, VALUE),
    "nice": (None, OPTIONAL), "signal": (None, VALUE), "open-mode": (None, VALUE),
    "hint": (None, VALUE), "threads-per-core": (None, VALUE), "distribution": ("m", VALUE),
    "propagate": (None, OPTIONAL), "get-user-env": (None, OPTIONAL), "profile": (None, VALUE),
    "wckey": (None, VALUE), "reservation": (None, VALUE), "parsable": (None, FLAG),
    "kill-on-invalid-dep": (None, VALUE), "quiet": ("Q", FLAG), "verbose": ("v", FLAG),
    "oversubscribe": ("s", FLAG), "no-kill": ("k", OPTIONAL), "wait": ("W", FLAG),
    "input": ("i", VALUE), "mem-bind": (None, VALUE), "mincpus": (None, VALUE),
    "tmp": (None, VALUE), "deadline": (None, VALUE), "clusters": ("M", VALUE),
    "gres": (None, VALUE), "gpus": ("G", VALUE), "gpus-per-node": (None, VALUE),
    "gpus-per-task": (None, VALUE), "gpus-per-socket": (None, VALUE),
    "cpus-per-gpu": (None, VALUE), "mem-per-gpu": (None, VALUE), "begin": ("b", VALUE),
    "nodefile": ("F", VALUE),
}
SHORT = {short: name for name, (short, _) in OPTIONS.items() if short}
IGNORED = {
    "partition": "hq has no partitions (-g/--group chooses hosts)",
    "account": "hq keeps no accounts", "qos": "hq has no QOS (-p/--priority orders jobs)",
    "mail-type": "hq sends no mail", "mail-user": "hq sends no mail",
    "requeue": "hq requeues a job whose host is lost while -r/--retries last",
    "no-requeue": "hq requeues a job whose host is lost while -r/--retries last (-r 0: never)",
    "exclusive": "hq gives a job its cores, not a whole host",
    "constraint": "hq has no node features (-g/--group chooses hosts)",
    "reservation": "hq's reservations have codes (--reservation CODE)",
    "export": "the job gets the whole environment of the submission",
    "input": "a job's standard input is /dev/null",
}
REFUSED = {
    "gres": GPUS, "gpus": GPUS, "gpus-per-node": GPUS, "gpus-per-task": GPUS,
    "gpus-per-socket": GPUS, "cpus-per-gpu": GPUS, "mem-per-gpu": GPUS,
    "begin": "hq cannot hold a job back until a time (use --hold and release it)",
    "nodefile": "hq runs a job on one host",
}
KNOWN_PATTERNS = set("jxAau")       # output file name patterns hq fills in


class SlurmOptions:
    """What the #SBATCH lines of a script ask for, as hq-submit options (docopt keys)."""

    def __init__(self):
        self.args = {}
        self.warnings = []
        self.stderr_follows = False     # --output without --error: stderr to the same file
        self.mem_per_cpu = None         # bytes per core (--mem-per-cpu)
        self.tasks = {}                 # ntasks, cpus, per_node, nodes as given


def translate(lines, name):
    """SlurmOptions of `lines`: [(line number, text after '#SBATCH')] of script `name`."""
    slurm = SlurmOptions()
    for number, text in lines:
        where = f"{name} line {number}: #SBATCH"
        try:
            words = shlex.split(text, comments=True)
        except ValueError as exc:
            raise HQError("BAD_USAGE", f"{where} {text.strip()}: {exc}") from None
        for option, value, shown in options_of(words):
            apply(slurm, option, value, f"{where} {shown}")
    finish(slurm)
    return slurm


def options_of(words):
    """(long name, or the word as written if unknown; value or None; text) of each option
    in `words`. An unknown option takes the next word as its value unless it starts with -."""
    i = 0
    while i < len(words):
        word, i = words[i], i + 1
        if word.startswith("--"):
            name, equals, value = word[2:].partition("=")
            value = value if equals else None
        elif word.startswith("-") and len(word) > 1:
            name = SHORT.get(word[1], word)
            value = (word[2:].removeprefix("=") or None) if name in OPTIONS else None
        else:
            yield word, None, word
            continue
        kind = OPTIONS.get(name, (None, None))[1]
        if value is None and i < len(words) and (
                kind == VALUE or (kind is None and not words[i].startswith("-"))):
            value, word, i = words[i], f"{word} {words[i]}", i + 1
        yield name, value, word


def apply(slurm, option, value, where):
    """Take one option into `slurm`; HQError for one hq cannot honour."""
    if option in REFUSED:
        raise HQError("BAD_USAGE", f"{where}: {REFUSED[option]}")
    handler = HONOURED.get(option)
    if handler is None:
        reason = IGNORED.get(option) or ("not used by hq" if option in OPTIONS
                                         else "unknown option")
        slurm.warnings.append(f"{where} ignored: {reason}")
        return
    if OPTIONS[option][1] == VALUE and not value:
        raise HQError("BAD_USAGE", f"{where}: needs a value")
    try:
        handler(slurm, value, where)
    except HQError as exc:
        raise HQError(exc.code, exc.message if exc.message.startswith(where)
                      else f"{where}: {exc.message}") from None


def _count(text, what):
    if not text.isdigit() or int(text) < 1:
        raise HQError("BAD_USAGE", f"{what} must be a whole number of at least 1")
    return int(text)


def _nodes(slurm, value, where):
    low = value.split("-", 1)[0]
    if _count(low, "the number of nodes") > 1:
        raise HQError("BAD_USAGE", "hq runs a job on one host (--nodes=1)")
    slurm.tasks["nodes"] = 1


def _tasks(key):
    def handler(slurm, value, where):
        slurm.tasks[key] = _count(value, "the number")
    return handler


def _memory(slurm, value, where):
    slurm.args["--mem"] = f"{parse_size(value) >> 10}K"


def _memory_per_cpu(slurm, value, where):
    slurm.mem_per_cpu = parse_size(value)


def _time(slurm, value, where):
    seconds = parse_time(value)
    if seconds:
        slurm.args["--time-limit"] = str(seconds)
    else:
        slurm.args.pop("--time-limit", None)


def _output(key):
    def handler(slurm, value, where):
        unknown = sorted(set(re.findall(r"%\d*(.)", value)) - KNOWN_PATTERNS)
        if unknown:
            slurm.warnings.append(f"{where}: hq does not fill in %{', %'.join(unknown)}")
        slurm.args[key] = value
        if key == "--stdout":
            slurm.stderr_follows = True
    return handler


def _dependency(slurm, value, where):
    ids = []
    for part in value.split(","):
        kind, _, rest = part.partition(":")
        if kind != "afterok" or not rest or "?" in part:
            raise HQError("BAD_USAGE", "hq starts a job after others only once they ended "
                          "done: afterok:ID[:ID...] only")
        ids += [job.split("+")[0] for job in rest.split(":")]
    slurm.args["--after"] = ",".join(ids)


def _host(key):
    def handler(slurm, value, where):
        if "[" in value or (key == "--host" and "," in value):
            raise HQError("BAD_USAGE", NO_HOST_LISTS if "[" in value
                          else "hq runs a job on one host: name one")
        slurm.args[key] = value
    return handler


def _export(slurm, value, where):
    if value.split(",")[0].upper() != "ALL":
        slurm.warnings.append(f"{where} ignored: {IGNORED['export']}")


def _open_mode(slurm, value, where):
    if value == "append":
        slurm.args["--append"] = True
    elif value != "truncate":
        slurm.warnings.append(f"{where} ignored: --open-mode is append or truncate")


def _set(key, value=None):
    def handler(slurm, given, where):
        slurm.args[key] = given if value is None else value
    return handler


HONOURED = {
    "job-name": _set("--name"), "cpus-per-task": _tasks("cpus"), "ntasks": _tasks("ntasks"),
    "ntasks-per-node": _tasks("per_node"), "nodes": _nodes, "mem": _memory,
    "mem-per-cpu": _memory_per_cpu, "time": _time, "output": _output("--stdout"),
    "error": _output("--stderr"), "chdir": _set("--dir"), "dependency": _dependency,
    "array": _set("--array"), "hold": _set("--hold", True), "nodelist": _host("--host"),
    "exclude": _host("--exclude-hosts"), "export": _export, "open-mode": _open_mode,
}


def finish(slurm):
    """Cores from tasks and CPUs per task (all on one host)."""
    tasks = slurm.tasks.get("ntasks") or slurm.tasks.get("per_node") or 1
    if slurm.tasks.keys() - {"nodes"}:
        slurm.args["--slots"] = str(tasks * slurm.tasks.get("cpus", 1))


def parse_time(text):
    """Seconds from Slurm's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
    (0, UNLIMITED, INFINITE: no limit, 0)."""
    value = text.strip()
    if value.upper() in ("UNLIMITED", "INFINITE"):
        return 0
    days, dash, clock = value.rpartition("-") if "-" in value else ("0", "", value)
    parts = clock.split(":")
    if not all(p.isdigit() for p in [days, *parts]) or len(parts) > 3:
        raise HQError("BAD_USAGE", f"{text!r} is not a Slurm time (MM, MM:SS, HH:MM:SS, "
                      "D-HH, D-HH:MM or D-HH:MM:SS)")
    numbers = [int(p) for p in parts]
    if dash:                                  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    elif len(numbers) == 3:                   # HH:MM:SS
        hours, minutes, seconds = numbers
    else:                                     # MM, MM:SS
        hours, minutes, seconds = 0, numbers[0], (numbers + [0])[1]
    return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds


def array_indices(spec):
    """The indices of an array: A-B[:S] ranges and single numbers separated by commas, and a
    ignored '%N' limit (a warning, or None); ([indices], warning)."""
    text, _, limit = spec.partition("%")
    indices = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if not match:
            raise HQError("BAD_USAGE", f"array {spec!r}: write A-B, A-B:STEP or A,B,C")
        low, high, step = int(match[1]), int(match[2] or match[1]), int(match[3] or 1)
        if high < low or step < 1 or high >= 1 << 31 or len(indices) + (high - low) // step \
                >= MAX_ARRAY:
            raise HQError("BAD_USAGE", f"array {spec!r}: ranges go up, below 2^31, at most "
                          f"{MAX_ARRAY} jobs")
        indices.update(range(low, high + 1, step))
    warning = f"array {spec!r}: the limit %{limit} is ignored (hq runs as many as fit)" \
        if limit else None
    return sorted(indices), warning
