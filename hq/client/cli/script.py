"""hq-submit SCRIPT: a batch script read at submission (its text goes with the job) and the
options of its '#HQ' and '#SBATCH' lines, under those of the command line; also --array."""

import os
import shlex
import sys

from hq.client.cli import sbatch
from hq.client.cli.common import usage_error
from hq.protocol import MAX_SCRIPT

PREFIXES = ("#HQ", "#SBATCH")
# hq-submit options a '#HQ' line may give: the options of one job (not -f, --wait, --json...)
JOB_KEYS = {"--name", "--slots", "--mem", "--stdout", "--stderr", "-O", "--logfile", "--dir",
            "--priority", "--group", "--host", "--exclude-hosts", "--info-text", "--shell",
            "--time-limit", "--retries", "--after", "--reservation", "--hold", "--array",
            "--append"}
PATHS = ("--stdout", "--stderr", "--logfile")


def wanted(args):
    """Whether hq-submit's arguments submit a script (or an array): --script, --array, or a
    first word that names a file starting with '#!'."""
    streamed = args["-"] or args["-f"] or args["--each-line"]
    if streamed and (args["--script"] or args["--array"]):
        usage_error("--script and --array submit one script or command, not -, -f or "
                    "--each-line")
    if streamed:
        return False
    words = args["COMMAND"] or args["ARGS"]
    return bool(args["--script"] or args["--array"] or (words and is_script(words[0])))


def is_script(word):
    """A readable regular file whose first bytes are '#!'."""
    try:
        if not os.path.isfile(word):
            return False
        with open(word, "rb") as handle:
            return handle.read(2) == b"#!"
    except (OSError, ValueError):
        return False


def read_script(path):
    """The text of a script: UTF-8 without NUL, at most MAX_SCRIPT bytes, starting with #!."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SCRIPT + 1)
    except OSError as exc:
        usage_error(f"{path}: {exc.strerror}")
    if len(data) > MAX_SCRIPT:
        usage_error(f"{path}: larger than {MAX_SCRIPT} bytes, hq's limit for a script")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        usage_error(f"{path}: not UTF-8 text (byte {exc.start})")
    if "\0" in text:
        usage_error(f"{path}: contains a NUL byte (not a script?)")
    if not text.startswith("#!"):
        usage_error(f"{path}: a script starts with '#!' and its interpreter (#!/bin/sh)")
    if "\r\n" in text:
        usage_error(f"{path}: has DOS line breaks (\\r\\n); convert it with dos2unix")
    return text


def directives(text):
    """{prefix: [(line number, rest of the line)]} of the #HQ and #SBATCH lines at the top
    (before the first line that is neither blank nor a comment), and the numbers of such lines
    further down (ignored, as Slurm ignores them)."""
    found, late, top = {prefix: [] for prefix in PREFIXES}, [], True
    if "#HQ" not in text and "#SBATCH" not in text:
        return found, late
    for number, line in enumerate(text.split("\n")[1:], 2):
        prefix = line.startswith("#") and _prefix(line)
        if top and prefix:
            found[prefix].append((number, line[len(prefix):]))
        elif prefix:
            late.append(number)
        elif top and line.strip() and not line.lstrip().startswith("#"):
            top = False
    return found, late


def _prefix(line):
    """The directive prefix a line starts with (followed by a blank or nothing), or None."""
    for prefix in PREFIXES:
        if line.startswith(prefix) and line[len(prefix):len(prefix) + 1] in ("", " ", "\t"):
            return prefix
    return None


def option_table(doc):
    """{option as written: (docopt key, takes a value)} from the Options of hq-submit's usage."""
    table = {}
    for line in doc.split("Options:", 1)[1].splitlines():
        spec = line.strip().split("  ", 1)[0]
        if not spec.startswith("-"):
            continue
        words = spec.replace(",", " ").replace("=", " ").split()
        names = [w for w in words if w.startswith("-")]
        key = next((n for n in names if n.startswith("--")), names[0])
        for written in names:
            table[written] = (key, len(names) < len(words))
    return table


def hq_options(lines, name, table):
    """{docopt key: value} given by '#HQ' lines (later lines win)."""
    given = {}
    for number, text in lines:
        where = f"{name} line {number}: #HQ{text.rstrip()}"
        try:
            words = shlex.split(text, comments=True)
        except ValueError as exc:
            usage_error(f"{where}: {exc}")
        while words:
            word = words.pop(0)
            written, equals, value = word.partition("=") if word.startswith("--") else (
                word[:2], "", word[2:])
            key, takes_value = table.get(written, (None, False))
            if key not in JOB_KEYS:
                usage_error(f"{where}: {word!r} is not an option of a job")
            if takes_value and not (equals or value):
                if not words:
                    usage_error(f"{where}: {written} needs a value")
                value = words.pop(0)
            given[key] = value if takes_value else True
    return given


def merged_options(args, found, name, doc):
    """hq-submit's `args` with the job options of the #SBATCH lines, then of the #HQ lines,
    under those of the command line (which win). Prints the #SBATCH lines' warnings."""
    slurm = sbatch.translate(found["#SBATCH"], name)
    options = {}
    for source in (slurm.args, hq_options(found["#HQ"], name, option_table(doc)), args):
        source = {k: v for k, v in source.items() if k in JOB_KEYS and v}
        if source.get("-O"):
            source["--stderr"] = source.pop("-O")
        options.update(source)
    for key in ("--stdout", "--stderr"):     # Slurm's are relative to the job's directory
        path = options.get(key)
        if path and path == slurm.args.get(key) and options.get("--dir"):
            options[key] = os.path.join(options["--dir"], path)
    if slurm.stderr_follows and not options.get("--stderr"):
        options["--stderr"] = options["--stdout"]
    if slurm.mem_per_cpu and not options.get("--mem"):
        cores = str(options.get("--slots") or 1)
        if cores.isdigit():
            options["--mem"] = f"{slurm.mem_per_cpu * int(cores) >> 10}K"
    for warning in slurm.warnings:
        print(f"hq-submit: warning: {warning}", file=sys.stderr)
    return {**args, **{key: None for key in JOB_KEYS}, **options}


def fill_names(options, name):
    """%x (the job's name) and %u (the user) in output paths; hq-server fills in %j, %a, %A."""
    for key in PATHS:
        if options.get(key) and "%" in options[key]:
            import getpass
            options[key] = options[key].replace("%x", name or "").replace(
                "%u", getpass.getuser())


def submit(client, args, job_options):
    """Submit the script (or command) of hq-submit's `args`; the job ids."""
    from hq.client.cli.submit import __doc__ as doc
    words = list(args["COMMAND"] or args["ARGS"])
    path = args["--script"] or (words.pop(0) if words and is_script(words[0]) else None)
    if path is None and not words:
        usage_error("no command given")
    text = read_script(path) if path else None
    found, late = directives(text) if text else ({p: [] for p in PREFIXES}, [])
    for number in late:
        print(f"hq-submit: warning: {path} line {number}: directive after the first command "
              "ignored", file=sys.stderr)
    options = merged_options(args, found, path, doc)
    if path and not options["--name"]:
        options["--name"] = os.path.basename(path)
    fill_names(options, options["--name"])
    indices = None
    if options["--array"]:
        indices, warning = sbatch.array_indices(options["--array"])
        if warning:
            print(f"hq-submit: warning: {warning}", file=sys.stderr)
    job, cwd = job_options(options)
    command = shlex.join([path, *words]) if path else " ".join(words)
    jobs = [command] if indices is None else [{"command": command, "array_index": i}
                                              for i in indices]
    from hq.client.cli.submit import job_env
    return client.submit_many(jobs, hold=bool(options["--hold"]), cwd=cwd, script=text,
                              env=job_env(options), **job)
