"""hq-submit: submit a command (or one per line of a file or standard input) to hq.

Usage:
  hq-submit [options] COMMAND...
  hq-submit [options] (- | -f FILE)
  hq-submit (-h | --help)

Options:
  -n NAME, --name=NAME              Job name.
  -c N, --slots=N                   Cores (slots) on one host [default: 1].
  -m SIZE, --mem=SIZE               Memory the job needs: 500M, 4G (plain number: MB).
  -o FILE, --stdout=FILE            Standard output file; %j is the job id
                                    (default: $HQ_HOME/output/%j.out).
  -e FILE, --stderr=FILE            Standard error file (default: $HQ_HOME/output/%j.err).
  -O FILE                           Same as -e (the original hq's letter).
  -l FILE, --logfile=FILE           Command, host, times, stdout and stderr in one file.
  -d DIR, --dir=DIR                 Working directory (default: the current directory).
  -p N, --priority=N                Higher runs first [default: 0].
  -g GROUP, --group=GROUP           Run on a host of this group.
  --host=HOST                       Run on this host.
  -E HOSTS, --exclude-hosts=HOSTS   Comma-separated hosts not to use.
  -i TEXT, --info-text=TEXT         Free text kept with the job.
  -S SHELL, --shell=SHELL           Shell that runs the command [default: /bin/sh].
  -t SECONDS, --time-limit=SECONDS  Kill the job after this many seconds.
  -r N, --retries=N                 Times to requeue the job if its host is lost.
  -a IDS, --after=IDS               Start only after these jobs (comma-separated ids)
                                    ended done; if one fails the job fails too.
  --reservation=CODE                Use slots reserved with hq-reservation for CODE.
  -f FILE                           Submit one job per line of FILE.
  --hold                            Submit held: runs after 'hq-client release'.
  -w, --wait                        Wait for the job(s); exit with the (worst) exit code.
  -q, --quiet                       Print nothing.
  --json                            Print the submitted job(s) as JSON.
"""

import os
import sys

from hq.cli.common import parse_int, parse_size, print_json, run, usage_error


def job_options(args):
    directory = args["--dir"]
    if directory is not None and not os.path.isdir(directory):
        usage_error(f"-d {directory}: no such directory")
    options = {
        "name": args["--name"], "cores": parse_int(args["--slots"], "-c/--slots", 1),
        "priority": parse_int(args["--priority"], "-p/--priority", -1 << 30),
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
        options["after"] = [parse_int(i, "--after job id", 1) for i in ids]
    if args["--reservation"]:
        options["reservation"] = args["--reservation"]
    if args["--retries"]:
        options["retries"] = parse_int(args["--retries"], "-r/--retries", 0)
    return options, (os.path.abspath(directory) if directory else None)


def read_commands(handle):
    for line in handle:
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def submit(args):
    from hq.client import Client
    options, cwd = job_options(args)
    client = Client()
    from_stdin = args["-"] or args["COMMAND"] == ["-"]    # docopt takes a lone "-" as COMMAND
    if from_stdin or args["-f"]:
        handle = sys.stdin if from_stdin else open(args["-f"], encoding="utf-8")
        with handle:
            ids = client.submit_many(read_commands(handle), hold=args["--hold"], cwd=cwd,
                                     **options)
        if not ids:
            usage_error("no commands in the input")
    else:
        ids = [client.submit(" ".join(args["COMMAND"]), hold=args["--hold"], cwd=cwd,
                             **options)]
    if args["--json"] and not args["--wait"]:
        print_json(client.details(ids, events=False))
    elif not args["--quiet"]:
        sys.stdout.write("".join(f"{i}\n" for i in ids))
        sys.stdout.flush()
    if args["--wait"]:
        jobs = client.wait(ids)
        if args["--json"]:
            print_json(jobs)
        return max(exit_status(job) for job in jobs)
    return 0


def exit_status(job):
    """The shell's view of a finished job: its exit code, 128+signal, or 1."""
    if job["exit_code"] is not None:
        return min(255, job["exit_code"])
    if job["signal"]:
        return 128 + job["signal"]
    return 0 if job["state"] == "done" else 1


def main(argv=None):
    from docopt import docopt
    args = docopt(__doc__, argv=argv, options_first=True)
    return run("hq-submit", lambda: submit(args))


if __name__ == "__main__":
    sys.exit(main())
