"""hq-reservation: hold slots on hosts for the jobs that carry a code (the original hq's
command; there the slots were held but nothing could use them).

Usage:
  hq-reservation -a HOST:SLOTS... [--code=CODE] [--users=NAMES] [--json]
  hq-reservation -d CODE
  hq-reservation -s [--json]
  hq-reservation (-h | --help)

Options:
  -a          Reserve SLOTS slots on each HOST; prints the reservation's code.
  --code=CODE Choose the code (default: a random one).
  --users=NAMES  Comma-separated users whose jobs may use the slots (default: you).
  -d CODE     Delete a reservation (its waiting jobs fail; running ones finish).
  -s          Show the reservations (an admin sees all; a user those made for them).
  --json      Print JSON.

Jobs of those users use reserved slots with 'hq-submit --reservation CODE'; no other job
gets them. Reserving and deleting need the ADMIN role.
"""

import sys

from hq.client.cli.common import main as cli_main, parse_int, print_json, table, usage_error
from hq.jobview import iso
from hq.text import escape


def parse_pairs(words):
    pairs = []
    for word in words:
        host, sep, slots = word.rpartition(":")
        if not sep or not host:
            usage_error(f"expected HOST:SLOTS, not {word!r}")
        pairs.append([host, parse_int(slots, f"slots of {host}", 1)])
    return pairs


def reservation(args):
    from hq.client.api import Client
    client = Client()
    if args["-a"]:
        users = [u for u in (args["--users"] or "").split(",") if u]
        reply = client.admin("reserve", args["--code"] or "",
                             hosts=parse_pairs(args["HOST:SLOTS"]), users=users)
        if args["--json"]:
            print_json({"code": reply["code"], "hosts": reply["hosts"],
                        "users": reply["users"]})
        else:
            print(escape(reply["code"]))
    elif args["-d"]:
        reply = client.admin("unreserve", args["-d"])
        failed = reply["failed_jobs"]
        print(f"reservation {escape(reply['code'])} deleted" +
              (f"; waiting jobs failed: {', '.join(map(str, failed))}" if failed else ""))
    else:
        rows = client.admin("reservations")["reservations"]
        if args["--json"]:
            print_json(rows)
        else:
            for row in rows:
                row["created"] = iso(row["created"])
                row["users"] = ",".join(row["users"])
            table(rows, ["code", "host", "slots", "used", "user", "users", "created"])
    return 0


def main(argv=None):
    return cli_main("hq-reservation", __doc__, reservation, argv)


if __name__ == "__main__":
    sys.exit(main())
