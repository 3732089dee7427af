"""hq-submit: submit a command or a batch script (or one command per line of a file or
standard input) to hq.

Usage:
  hq-submit [options] COMMAND...
  hq-submit [options] SCRIPT [ARGS...]
  hq-submit [options] --script=FILE [ARGS...]
  hq-submit [options] (- | -f FILE)
  hq-submit [options] --each-line=FILE COMMAND...
  hq-submit (-h | --help)

Lines of standard input (-), of FILE (-f) or of --each-line FILE are read as they come and sent
in chunks; blank lines and lines starting with '#' are skipped. Job ids are printed one per line
in input order as each chunk is accepted. All jobs of one submission share a batch id (printed
on standard error; see 'hq-client list --batch ID'). A line that cannot be submitted stops the
submission: the jobs printed before it stay submitted, and the exit status is 1.

A first word that names a readable file starting with '#!' is a batch SCRIPT (--script says
so for any file): its text is read now and runs with its #! interpreter and ARGS, so the file
may change or go once hq-submit returns. Its '#HQ' lines (these options) and '#SBATCH' lines
(Slurm's options) at the top set options; the command line wins. See README "Coming from Slurm".

Exit status: 0 when submitted (with --wait: the worst exit code of the jobs, 128+N for a job
killed by signal N); 1 when refused or on bad input, with one line on standard error:
'hq-submit: MESSAGE [CODE]'.

Options:
  -n NAME, --name=NAME              Job name.
  -c N, --slots=N                   Cores (slots) on one host (default: 1).
  -m SIZE, --mem=SIZE               Memory the job needs: 500M, 4G (plain number: MB).
  -o FILE, --stdout=FILE            Standard output file; %j is the job id
                                    (default: $HQ_HOME/output/%j.out).
  -e FILE, --stderr=FILE            Standard error file (default: $HQ_HOME/output/%j.err).
  -O FILE                           Same as -e (the original hq's letter).
  -l FILE, --logfile=FILE           Command, host, times, stdout and stderr in one file.
  -d DIR, --dir=DIR                 Working directory (default: the current directory).
  -p N, --priority=N                Higher runs first (default: 0).
  -g GROUP, --group=GROUP           Run on a host of this group.
  --host=HOST                       Run on this host.
  -E HOSTS, --exclude-hosts=HOSTS   Comma-separated hosts not to use.
  -i TEXT, --info-text=TEXT         Free text kept with the job.
  -S SHELL, --shell=SHELL           Shell that runs the command (default: /bin/sh).
  -t SECONDS, --time-limit=SECONDS  Kill the job after this many seconds.
  -r N, --retries=N                 Times to requeue the job if its host is lost.
  -a IDS, --after=IDS               Start only after these jobs (comma-separated ids)
                                    ended done; if one fails the job fails too.
  --reservation=CODE                Use slots reserved with hq-reservation for CODE.
  -f FILE                           Submit one job per line of FILE.
  --each-line=FILE                  One job per line of FILE ('-': standard input): COMMAND
                                    with {} replaced by the line shell-quoted (as GNU
                                    parallel does: 'x; rm y' stays one word), which the
                                    job also finds in $HQ_ENTRY.
  --raw                             With --each-line: {} is the line as it is (the line
                                    is shell code: only for input you trust).
  --append                          Append to the output files (default: truncated when
                                    the job starts, as Slurm does).
  --script=FILE                     FILE is a batch script (see above).
  --array=SPEC                      One job per index: 1-10, 0-100:5 (step), 1,3,7; each
                                    gets $HQ_ARRAY_INDEX (%a in -o/-e paths).
  --hold                            Submit held: runs after 'hq-client release'.
  -w, --wait                        Wait for the job(s); exit with the (worst) exit code.
                                    Shows a progress bar when standard error is a terminal.
  --progress                        Show progress while waiting (plain lines when standard
                                    error is not a terminal).
  -q, --quiet                       Print nothing (no job ids, no progress bar).
  --json                            Print the submitted job(s) as JSON (only JSON on
                                    standard output; with --wait: the ended jobs).
"""

import os
import sys

from hq.client.cli.common import (INT64_MAX, main as cli_main, parse_int, parse_size, print_json,
                                  usage_error)
from hq.errors import SERVER_UNREACHABLE, USER_SERVER_UNREACHABLE, HQError


def job_options(args):
    directory = args["--dir"]
    if directory is not None and not os.path.isdir(directory):
        usage_error(f"-d {directory}: no such directory")
    options = {
        "name": args["--name"], "cores": parse_int(args["--slots"] or 1, "-c/--slots", 1),
        "priority": parse_int(args["--priority"] or 0, "-p/--priority", -1 << 30),
        "stdout": args["--stdout"], "stderr": args["--stderr"] or args["-O"],
        "logfile": args["--logfile"], "group_req": args["--group"],
        "host_req": args["--host"], "exclude_hosts": args["--exclude-hosts"],
        "info_text": args["--info-text"], "shell": args["--shell"],
    }
    if args["--mem"]:
        options["memory"] = parse_size(args["--mem"])
    if args["--time-limit"]:
        options["time_limit"] = parse_int(args["--time-limit"], "-t/--time-limit", 1)
    if args["--after"]:
        ids = [i.strip() for i in args["--after"].split(",") if i.strip()]
        options["after"] = [parse_int(i, "--after job id", 1, INT64_MAX) for i in ids]
    if args["--reservation"]:
        options["reservation"] = args["--reservation"]
    if args["--retries"]:
        options["retries"] = parse_int(args["--retries"], "-r/--retries", 0)
    return options, (os.path.abspath(directory) if directory else None)


def submit(args):
    from hq.client.api import Client
    if args["COMMAND"][:1] == ["--"]:           # `hq-submit -w -- ls /tmp`: end of options
        args["COMMAND"] = args["COMMAND"][1:]
        if not args["COMMAND"] and not (args["-f"] or args["-"]):
            usage_error("no command after '--'")
    options, cwd = job_options(args)
    client = Client()
    if args["COMMAND"] == ["-"] and not args["--each-line"]:
        args["-"], args["COMMAND"] = True, []     # docopt takes a lone '-' for COMMAND
    from hq.client.cli import script
    if script.wanted(args):
        ids = script.submit(client, args, job_options)
    elif args["-"] or args["-f"] or args["--each-line"]:
        return submit_stream(client, args, options, cwd)
    else:
        command = " ".join(args["COMMAND"])
        ids = client.submit_many([command], hold=args["--hold"], cwd=cwd, env=job_env(args),
                                 **options)
    if args["--json"]:
        if not args["--wait"]:
            print_json(client.details(ids, events=False))
    elif not args["--quiet"]:
        print("\n".join(map(str, ids)), flush=True)
    if args["--wait"]:
        with progress_display(args) as progress:
            jobs = client.wait(ids, progress=progress)
        if args["--json"]:
            print_json(jobs)
        return max(exit_status(job) for job in jobs)
    return 0


def submit_stream(client, args, options, cwd):
    """Stream lines into one batch; print ids as chunks are accepted; wait if asked."""
    from hq.client.cli.lines import LineChunks
    source = args["--each-line"] or args["-f"] or "-"
    template = " ".join(args["COMMAND"]) if args["--each-line"] else None
    if template is not None:
        import shlex
        quote = (lambda line: line) if args["--raw"] else shlex.quote

        def make_job(line):
            return {"command": template.replace("{}", quote(line)), "entry": line}
    else:
        def make_job(line):
            return line
    handle = sys.stdin.buffer if source == "-" else open(source, "rb")
    with handle:
        reader = LineChunks(handle.fileno(), make_job)
        batch, count, ids = submit_chunks(client, args, options, cwd, reader)
    if not count:
        usage_error("no commands in the input")
    if not args["--quiet"]:
        print(f"hq-submit: {count} jobs submitted as batch {batch}", file=sys.stderr)
    if args["--json"]:
        print_json(client.details(ids, events=False))
    if args["--wait"]:
        return wait_batch(client, batch, args)
    return 0


def submit_chunks(client, args, options, cwd, reader):
    """(batch, number of jobs, ids if --json) after sending every chunk of `reader`."""
    batch, count, ids = None, 0, []
    stream = client.submit_stream(reader, hold=args["--hold"], cwd=cwd, env=job_env(args),
                                  **options)
    try:
        for number, (batch, chunk_ids) in enumerate(stream):
            reader.forget(number)
            count += len(chunk_ids)
            if args["--json"]:
                ids += chunk_ids
            elif not args["--quiet"]:
                sys.stdout.write("".join(f"{i}\n" for i in chunk_ids))
                sys.stdout.flush()
    except HQError as exc:
        raise HQError(exc.code, refusal(exc, reader, count, batch)) from None
    return batch, count, ids


def refusal(exc, reader, count, batch):
    """The message for a refused chunk: the line at fault, and what stays submitted."""
    message = exc.message
    numbers = reader.lines.get(getattr(exc, "chunk", None))
    if numbers and exc.index is not None and 0 <= exc.index < len(numbers):
        message = f"line {numbers[exc.index]}: " + message.split(": ", 1)[-1]
    elif numbers:
        message = f"lines {numbers[0]}-{numbers[-1]}: {message}"
    kept = f"{count} jobs submitted before it (batch {batch})" if count else "nothing submitted"
    if not count and exc.code in (SERVER_UNREACHABLE, USER_SERVER_UNREACHABLE):
        kept = "nothing submitted before it"    # its own fate is unknown: the message says so
    return f"{message}; stopped there, {kept}"


def wait_batch(client, batch, args):
    with progress_display(args) as progress:
        counts = client.wait_batch(batch, progress=progress)
    if counts.get("done", 0) == sum(counts.values()):
        return 0
    failed = client.list(["failed", "lost", "cancelled"], batch=batch)
    return max((exit_status(job) for job in failed), default=1)


def job_env(args):
    """The jobs' environment: this one, with HQ_OPEN_MODE=append for --append (None: as is)."""
    return dict(os.environ, HQ_OPEN_MODE="append") if args["--append"] else None


def progress_display(args):
    """A progress display for --progress, or for --wait on a terminal, never with -q (a
    context manager giving None when there is none to show)."""
    from hq.client.cli.progress import Progress
    shown = (args["--progress"] or sys.stderr.isatty()) and not args["--quiet"]
    return Progress(sys.stderr, shown=shown)


def exit_status(job):
    """The shell's view of a finished job: its exit code, 128+signal, or 1."""
    if job["exit_code"] is not None:
        return min(255, job["exit_code"])
    if job["signal"]:
        return 128 + job["signal"]
    return 0 if job["state"] == "done" else 1


def quick(argv):
    """The usual `hq-submit [options] COMMAND...` parsed without docopt (None: not usual)."""
    from hq.client.cli.quick import parse
    args = parse(__doc__, argv, {"COMMAND": [], "SCRIPT": None, "ARGS": [], "-": False,
                                 "-h": False, "--help": False},
                 positional="COMMAND", options_first=True)
    usual = args and args["COMMAND"] and not (args["-f"] or args["--each-line"])
    return args if usual else None


def main(argv=None):
    return cli_main("hq-submit", __doc__, submit, argv, quick=quick, options_first=True)


if __name__ == "__main__":
    sys.exit(main())
