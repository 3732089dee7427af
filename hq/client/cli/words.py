"""The original hq's hq-client words (lswjobs:N, lajob:ID, findjobs:TEXT, lss, invokeservers,
cleanup), each mapped onto the new requests; `--json` prints the same data as JSON."""

from hq.client.cli.common import newest_rows, parse_int, print_json, table, usage_error
from hq.client.cli.details import show_details
from hq.text import escape

LISTS = {"lswjobs": ["held", "pending"], "lspjobs": ["dispatched"], "lsrjobs": ["running"],
         "lsfjobs": ["done", "failed", "cancelled", "lost"]}
COLUMNS = ["id", "state", "host", "name", "submitted", "exit_code", "command"]
WORDS = sorted(LISTS) + ["lajob", "findjobs", "lss", "invokeservers", "cleanup"]
DEFAULT_COUNT = 10


def count(arg):
    if not arg:
        return DEFAULT_COUNT
    return 0 if arg == "all" else parse_int(arg, "count (N or all)", 1)


def run_word(client, word, as_json):
    name, _, arg = word.partition(":")
    name = name.lower()
    if name in LISTS:
        jobs = newest_rows(lambda n: client.list(LISTS[name], limit=n), count(arg),
                           "hq-client")
        return show(jobs, as_json, COLUMNS)
    if name == "lajob":
        if not arg:
            usage_error("lajob needs a job id: lajob:ID")
        return show_details(client.details([parse_int(arg, "job id", 1)]), as_json)
    if name == "findjobs":
        if not arg:
            usage_error("findjobs needs a text: findjobs:TEXT")
        jobs = newest_rows(lambda n: client.request_list(text=arg, limit=n), 0, "hq-client")
        return show(jobs, as_json, COLUMNS)
    if name == "lss":
        return show(client.agents("list")["agents"], as_json, ["host", "status", "state", "busy"])
    if name == "invokeservers":
        asked = client.agents("start")["asked"]
        return show_line({"asked": asked}, as_json,
                         f"asked for agents on {', '.join(asked)}" if asked else
                         "your agents already run on every active host")
    if name == "cleanup":
        reply = client.agents("stop")
        reply.pop("req", None)
        text = f"stopped agents on: {', '.join(reply['stopped']) or 'none'}"
        if reply["busy"]:
            text += f"; still running jobs on: {', '.join(reply['busy'])}"
        return show_line(reply, as_json, text)
    usage_error(f"unknown command {word!r}; words: {', '.join(WORDS)} (see hq-client --help)")


def show(rows, as_json, columns):
    if as_json:
        print_json(rows)
    else:
        table(rows, columns)
    return 0


def show_line(reply, as_json, text):
    if as_json:
        print_json(reply)
    else:
        print(escape(text))
    return 0
