"""hq-admin: look at and steer the cluster (words as in the original hq).

Usage:
  hq-admin COMMAND [--json]
  hq-admin adduser NAME --key=FILE [--json]
  hq-admin (-h | --help)

Commands:
  help                    This text.
  info                    Server address, database, counts.
  status                  info plus jobs of all users counted by state.
  lscluster               Each host: state, status, cores, slots used/max, load, free memory,
                          seconds since its last heartbeat.
  activatehost:NAME       Let a host take new jobs.
  deactivatehost:NAME     Give a host no new jobs (running jobs finish).
  activate                Let the cluster take new jobs (also: activatecluster).
  deactivate              Give no host new jobs (also: deactivatecluster).
  shutdown                Stop hq-server (jobs keep running; state is in the database).
  adduser NAME --key=FILE Register the CURVE public key in FILE (a user's
                          $HQ_HOME/keys/user.key) for user NAME (added with USER if unknown).

Options:
  --json      Print JSON.
  --key=FILE  A CURVE public key file (zmq certificate).
"""

import sys

from hq.cli.common import print_json, run, table, usage_error
from hq.protocol import ADMIN

ALIASES = {"activatecluster": "activate", "deactivatecluster": "deactivate"}
WITH_ARGUMENT = {"activatehost", "deactivatehost"}
WITHOUT_ARGUMENT = {"info", "status", "lscluster", "activate", "deactivate", "shutdown"}


def parse(word):
    command, _, arg = word.partition(":")
    command = ALIASES.get(command.lower(), command.lower())
    if command == "adduser":
        usage_error("usage: hq-admin adduser NAME --key=FILE")
    if command in WITH_ARGUMENT and not arg:
        usage_error(f"'{command}' needs a host name: {command}:NAME")
    if command not in WITH_ARGUMENT | WITHOUT_ARGUMENT:
        usage_error(f"unknown command {word!r}; see 'hq-admin help'")
    return command, arg


def show(command, reply, as_json):
    reply.pop("req", None)
    if as_json:
        print_json(reply)
    elif command == "lscluster":
        print(f"cluster {reply['cluster']}")
        for host in reply["hosts"]:
            host["slots"] = f"{host['slots_used']}/{host['max_slots']}"
            host["mem_free"] = f"{(host['mem_available'] or 0) / (1 << 30):.1f}G"
            host["load"] = f"{host['load1'] or 0:.2f}"
            host["heartbeat"] = "-" if host["heartbeat_age"] is None else f"{host['heartbeat_age']}s"
            host["reason"] = "" if host["status"] == "up" else host.get("status_reason") or ""
        table(reply["hosts"], ["name", "state", "status", "cores", "slots", "load", "mem_free",
                               "heartbeat", "reason"])
    else:
        for key, value in reply.items():
            if isinstance(value, dict):
                value = " ".join(f"{k}={v}" for k, v in value.items())
            print(f"{key:<14} {value}")


def adduser(args):
    from hq.client import Client
    from hq.security import read_public_key
    key = read_public_key(args["--key"]).decode()
    reply = Client().request(ADMIN, command="adduser", arg=args["NAME"], key=key)
    show("adduser", reply, args["--json"])
    return 0


def admin(args):
    if args["adduser"]:
        return adduser(args)
    word = args["COMMAND"]
    if word == "help":
        print(__doc__.strip())
        return 0
    command, arg = parse(word)
    from hq.client import Client
    reply = Client().admin(command, arg)
    show(command, reply, args["--json"])
    return 0


def main(argv=None):
    from docopt import docopt
    args = docopt(__doc__, argv=argv)
    return run("hq-admin", lambda: admin(args))


if __name__ == "__main__":
    sys.exit(main())
