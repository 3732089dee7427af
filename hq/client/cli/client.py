"""hq-client: look at and steer your own jobs.

Usage:
  hq-client status [--json] [--jobs=IDS]
  hq-client details [--json] [JOBID...]
  hq-client list [--state=STATE] [--limit=N] [--batch=ID] [--json]
  hq-client cancel (--batch=ID | JOBID...)
  hq-client hold JOBID...
  hq-client release JOBID...
  hq-client wait [--timeout=S] [--json] [--progress] (--batch=ID | JOBID...)
  hq-client WORD [--json]
  hq-client (-h | --help)

Words of the original hq:
  lswjobs[:N|:all]   Waiting jobs (held, pending); the 10 newest unless N or all (at
                     most the newest 10000).
  lspjobs[:N|:all]   Jobs sent to a host, not yet started (dispatched).
  lsrjobs[:N|:all]   Running jobs.
  lsfjobs[:N|:all]   Finished jobs (done, failed, cancelled, lost).
  lajob:ID           Everything about one job.
  findjobs:TEXT      Jobs whose command, name, info text or group contains TEXT.
  lss                Your agents: hosts where one runs.
  invokeservers      Start your agents on every active host.
  cleanup            Stop your agents that run no jobs.

Options:
  --json           Print JSON (a stable contract for scripts).
  --jobs=IDS       The state of each of these jobs (comma-separated ids), in one request;
                   ids the server does not know are named (exit 1).
  --state=STATE    Only jobs in this state (comma-separated: pending,running).
  --limit=N        At most the N newest jobs (default: the newest 10000).
  --batch=ID       The jobs of this submission (batch id: see 'hq-submit -').
  --timeout=S      Give up waiting after S seconds (exit 2).
  --progress       Show progress while waiting: a bar on a terminal, else plain lines
                   (on standard error).
"""

import sys

from hq.client.cli.common import (job_ids, main as cli_main, newest_rows, parse_int, print_json,
                                  table, usage_error)
from hq.client.cli.details import show_details
from hq.client.cli.submit import exit_status
from hq.errors import TIMEOUT, UNKNOWN_JOB, HQError
from hq.text import escape

LIST_COLUMNS = ["id", "state", "host", "name", "exit_code", "command"]


def status(client, args):
    if args["--jobs"] is not None:
        return job_states(client, args)
    counts = client.status()
    if args["--json"]:
        print_json(counts)
    else:
        for state, count in counts.items():
            print(f"{state:<10} {count}")


def job_states(client, args):
    """`status --jobs ID,...`: one line `ID STATE` a job (JSON: {jobs: {id: state},
    unknown: [ids]}); ids the server does not know are named on stderr, exit 1."""
    ids = job_ids([i.strip() for i in args["--jobs"].split(",") if i.strip()])
    if not ids:
        usage_error("--jobs needs at least one job id")
    states, unknown = client.states(ids)
    if args["--json"]:
        print_json({"jobs": {str(i): states[i] for i in ids if i in states},
                    "unknown": unknown})
    else:
        sys.stdout.write("".join(f"{i} {states[i]}\n" for i in ids if i in states))
    if unknown:
        shown = ", ".join(map(str, unknown[:20])) + (", ..." if len(unknown) > 20 else "")
        print(f"hq-client: no job {shown} of yours [{UNKNOWN_JOB}]", file=sys.stderr)
        return 1
    return 0


def details(client, args):
    return show_details(client.details(job_ids(args["JOBID"])), args["--json"])


def list_jobs(client, args):
    states = [s for s in (args["--state"] or "").split(",") if s]
    limit = parse_int(args["--limit"], "--limit", 1) if args["--limit"] else 0
    batch = parse_int(args["--batch"], "--batch", 1) if args["--batch"] else None
    jobs = newest_rows(lambda n: client.list(states, n, batch), limit, "hq-client")
    if args["--json"]:
        print_json(jobs)
    else:
        table(jobs, LIST_COLUMNS)


def change(client, args, action):
    if args["--batch"]:
        reply = client.cancel(batch=parse_int(args["--batch"], "--batch", 1))
        print(f"hq-client: {len(reply['changed']) + reply.get('parked', 0)} jobs cancelled",
              file=sys.stderr)
        return 0
    ids = job_ids(args["JOBID"])
    reply = getattr(client, action)(ids)
    for job_id, why in reply.get("unchanged", {}).items():
        print(f"hq-client: job {job_id} not changed: {escape(why)}", file=sys.stderr)
    return 0


def wait(client, args):
    from hq.client.cli.progress import Progress
    timeout = float(parse_int(args["--timeout"], "--timeout", 0)) if args["--timeout"] else None
    try:
        with Progress(sys.stderr, shown=args["--progress"]) as progress:
            if args["--batch"]:
                return wait_batch(client, args, timeout, progress)
            jobs = client.wait(job_ids(args["JOBID"]), timeout=timeout, progress=progress)
    except HQError as exc:
        if exc.code != TIMEOUT:
            raise
        print(f"hq-client: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    if args["--json"]:
        print_json(jobs)
    else:
        for job in jobs:
            print(ended_line(job))
    return 0 if all(exit_status(j) == 0 and j["state"] == "done" for j in jobs) else 1


def ended_line(job):
    """`ID STATE exit N`, `ID STATE signal N (SIGNAME)` for a job killed by a signal, else
    `ID STATE (reason)` (a cancelled or lost job has no exit code)."""
    head = f"{job['id']} {job['state']}"
    if job["exit_code"] is not None:
        return f"{head} exit {job['exit_code']}"
    if job.get("signal"):
        import signal
        try:
            name = f" ({signal.Signals(job['signal']).name})"
        except ValueError:
            name = ""
        return f"{head} signal {job['signal']}{name}"
    return f"{head} ({escape(job['reason'])})" if job.get("reason") else head


def wait_batch(client, args, timeout, progress):
    counts = client.wait_batch(parse_int(args["--batch"], "--batch", 1), timeout, progress)
    counts = {state: n for state, n in counts.items() if n}
    if args["--json"]:
        print_json(counts)
    else:
        print(" ".join(f"{state} {n}" for state, n in counts.items()))
    return 0 if set(counts) <= {"done"} else 1


def dispatch(args):
    from hq.client.api import Client
    client = Client()
    for action in ("cancel", "hold", "release"):
        if args[action]:
            return change(client, args, action)
    if args["status"]:
        return status(client, args)
    if args["details"]:
        return details(client, args)
    if args["list"]:
        return list_jobs(client, args)
    if args["WORD"]:
        from hq.client.cli.words import run_word
        return run_word(client, args["WORD"], args["--json"])
    return wait(client, args)


def ids_xor_batch(args):
    return bool(args["--batch"]) != bool(args["JOBID"])


QUICK_EXTRA = {"status": False, "details": False, "list": False, "cancel": False,
               "hold": False, "release": False, "wait": False, "JOBID": [], "WORD": None,
               "-h": False, "--help": False}
QUICK_COMMANDS = {        # word: (options it takes, check) as in the usage lines
    "status": ({"--json", "--jobs"}, lambda a: not a["JOBID"]),
    "details": ({"--json"}, None),
    "list": ({"--state", "--limit", "--batch", "--json"}, lambda a: not a["JOBID"]),
    "cancel": ({"--batch"}, ids_xor_batch),
    "hold": (set(), lambda a: bool(a["JOBID"])),
    "release": (set(), lambda a: bool(a["JOBID"])),
    "wait": ({"--timeout", "--json", "--progress", "--batch"}, ids_xor_batch),
}


def quick(argv):
    """The usual command lines parsed without docopt (None: left to docopt)."""
    from hq.client.cli.quick import parse
    return parse(__doc__, argv, QUICK_EXTRA, QUICK_COMMANDS, positional="JOBID")


def main(argv=None):
    return cli_main("hq-client", __doc__, dispatch, argv, quick=quick)


if __name__ == "__main__":
    sys.exit(main())
