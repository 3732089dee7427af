"""hq-admin: look at and steer the cluster (words as in the original hq).

Usage:
  hq-admin jobs [--user=USER] [--state=STATE] [--limit=N] [--json]
  hq-admin COMMAND [--json] [--wide]
  hq-admin adduser NAME --key=FILE [--json]
  hq-admin (-h | --help)

Commands:
  help                    This text.
  info                    Server address, database, counts.
  status                  info plus jobs of all users counted by state.
  lscluster               Each host: state, status, cores, slots used/max, jobs, load, load from
                          outside hq, free memory, seconds since its last heartbeat.
  hostinfo:NAME           One host: facts, recent health samples, running jobs.
  activatehost:NAME       Let a host take new jobs.
  deactivatehost:NAME     Give a host no new jobs (running jobs finish).
  activate                Let the cluster take new jobs (also: activatecluster).
  deactivate              Give no host new jobs (also: deactivatecluster).
  reload                  Re-read cluster.tab and users: new hosts appear, removed hosts drain.
  lsusers                 Users: roles, enabled, slots in use, jobs by state.
  lsuser:NAME             One user.
  enableuser:NAME         Let a user's jobs run again.
  disableuser:NAME        A disabled user's jobs wait; their requests are refused.
  jobs                    Jobs of every user (--user, --state: comma-separated, --limit;
                          the newest 10000 unless --limit says otherwise).
  shutdown                Stop hq-server (jobs keep running; state is in the database).
  adduser NAME --key=FILE Register the CURVE public key in FILE (a user's
                          $HQ_HOME/keys/user.key) for user NAME (added with USER if unknown).

Options:
  --json           Print JSON.
  --wide           lscluster, hostinfo: whole reasons (else cut to the terminal's width,
                   COLUMNS or 80).
  --user=USER      Only this user's jobs.
  --state=STATE    Only jobs in these states (comma-separated: pending,running).
  --limit=N        At most the N newest jobs.
  --key=FILE       A CURVE public key file (zmq certificate); '-': standard input.
"""

import sys

from hq.client.cli.common import (main as cli_main, newest_rows, parse_int, print_json, table,
                                  table_lines, usage_error)
from hq.errors import HQError
from hq.protocol import ADMIN
from hq.text import escape

ALIASES = {"activatecluster": "activate", "deactivatecluster": "deactivate"}
WITH_ARGUMENT = {"activatehost": "host", "deactivatehost": "host", "hostinfo": "host",
                 "lsuser": "user", "enableuser": "user", "disableuser": "user"}
WITHOUT_ARGUMENT = {"info", "status", "lscluster", "activate", "deactivate", "shutdown",
                    "reload", "lsusers", "jobs"}
JOB_COLUMNS = ["id", "user", "state", "host", "cores", "priority", "reason", "command"]


def parse(word):
    command, _, arg = word.partition(":")
    command = ALIASES.get(command.lower(), command.lower())
    if command == "adduser":
        usage_error("usage: hq-admin adduser NAME --key=FILE")
    if command in WITH_ARGUMENT and not arg:
        usage_error(f"'{command}' needs a {WITH_ARGUMENT[command]} name: {command}:NAME")
    if command not in WITH_ARGUMENT.keys() | WITHOUT_ARGUMENT:
        usage_error(f"unknown command {word!r}; see 'hq-admin help'")
    return command, arg


def gib(value):
    return f"{(value or 0) / (1 << 30):.1f}G"


def screen_width(wide):
    """Columns to fit tables in: none with --wide, else COLUMNS, the terminal's, or 80."""
    if wide:
        return None
    import os
    try:
        return max(40, int(os.environ["COLUMNS"]))
    except (KeyError, ValueError):
        pass
    try:
        return max(40, os.get_terminal_size(sys.stdout.fileno()).columns)
    except (OSError, ValueError):
        return 80


def show_hosts(hosts, width=None):
    """The hosts' table; with a `width`, a reason that would not fit goes on a line of its own
    under its host, cut to the width."""
    for host in hosts:
        host["slots"] = f"{host['slots_used']}/{host['max_slots']}"
        host["mem_free"] = gib(host["mem_available"])
        host["load"] = f"{host['load1'] or 0:.2f}"
        host["outside"] = f"{host['foreign_load'] or 0:.2f}"
        host["seen"] = "-" if host["heartbeat_age"] is None else f"{host['heartbeat_age']}s"
        host["reason"] = "" if host["status"] == "up" else host.get("status_reason") or ""
        if not host["in_config"]:
            host["state"] += "(removed)"
    columns = ["name", "state", "status", "cores", "slots", "jobs", "load", "outside",
               "mem_free", "seen"]
    lines = table_lines(hosts, columns + ["reason"])
    if width is None or max(map(len, lines)) <= width:
        print("\n".join(lines))
        return
    for host, line in zip([None, *hosts], table_lines(hosts, columns)):
        print(line)
        if host and host["reason"]:
            why = "  reason: " + escape(host["reason"])
            print(why if len(why) <= width else why[:width - 3] + "...")


def rounded(rows):
    """Metrics rows with floats rounded for reading (loads to 2 places, percent to 1)."""
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float):
                row[key] = round(value, 1 if key == "cpu_percent" else 2)
        if row.get("mem_available") is not None:
            row["mem_available"] = gib(row["mem_available"])
    return rows


def show(command, reply, as_json, width=None):
    reply.pop("req", None)
    if as_json:
        print_json(reply)
    elif command == "lscluster":
        print(f"cluster {reply['cluster']}")
        show_hosts(reply["hosts"], width)
    elif command == "hostinfo":
        show_hosts([reply["host"]], width)
        host = reply["host"]
        print()
        print(escape(f"groups {','.join(host['groups']) or '-'}  os {host['os']}  memory "
                     f"{gib(host['memory_total'])}  agents {','.join(host['agents']) or '-'}"))
        print()
        table(rounded(reply["metrics"]), ["time", "load1", "foreign_load", "cpu_percent",
                                          "mem_available", "nprocs"])
        print()
        table(reply["jobs"], ["id", "user", "state", "cores", "started", "command"])
    elif command == "lsusers":
        for user in reply["users"]:
            flatten_user(user)
        table(reply["users"], ["name", "roles", "enabled", "slots_used", "pending", "running",
                               "done", "failed"])
    elif command == "lsuser":
        flatten_user(reply["user"])
        for key, value in reply["user"].items():
            print(f"{key:<14} {escape(value)}")
    elif command == "jobs":
        table(reply["jobs"], JOB_COLUMNS)
    else:
        for key, value in reply.items():
            if isinstance(value, dict):
                value = " ".join(f"{k}={v}" for k, v in value.items())
            print(f"{key:<14} {escape(value)}")


def adduser(args):
    from hq.client.api import Client
    from hq.security import read_public_key
    try:
        key = read_public_key(args["--key"]).decode()
    except HQError as exc:
        if exc.message.startswith("cannot read"):    # e.g. in another user's private home
            exc.message += (f" (the key is public: ask {args['NAME']} for a copy of their "
                            "$HQ_HOME/keys/user.key, or pipe it into --key=-)")
        raise
    reply = Client().request(ADMIN, command="adduser", arg=args["NAME"], key=key)
    show("adduser", reply, args["--json"])
    return 0


def flatten_user(user):
    user.update(user.pop("counts"))
    user["roles"] = ",".join(user["roles"])
    user["agents"] = ",".join(user["agents"]) or "-"


def admin(args):
    if args["adduser"]:
        return adduser(args)
    from hq.client.api import Client
    if args["jobs"]:
        return jobs(args)
    word = args["COMMAND"]
    if word == "help":
        print(__doc__.strip())
        return 0
    command, arg = parse(word)
    reply = Client().admin(command, arg=arg)
    show(command, reply, args["--json"], screen_width(args["--wide"]))
    return 0


def jobs(args):
    from hq.client.api import Client
    client = Client()
    fields = {"for_user": args["--user"] or "",
              "states": [s for s in (args["--state"] or "").split(",") if s]}
    limit = parse_int(args["--limit"], "--limit", 1) if args["--limit"] else 0
    rows = newest_rows(lambda n: client.admin("jobs", limit=n, **fields)["jobs"], limit,
                       "hq-admin")
    show("jobs", {"jobs": rows}, args["--json"])
    return 0


def main(argv=None):
    return cli_main("hq-admin", __doc__, admin, argv)


if __name__ == "__main__":
    sys.exit(main())
