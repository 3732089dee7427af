"""The quick argv parse of hq-submit and hq-client (hq/client/cli/quick.py) gives exactly the
dict docopt gives, whenever it gives one (else docopt decides, so errors stay the same)."""

from docopt import DocoptExit, docopt
from hypothesis import given, settings, strategies as st

from hq.client.cli import client, submit

SUBMIT_WORDS = ["-c", "2", "-c4", "--slots=3", "--slots", "-w", "--wait", "-q", "-wq", "--json",
                "-n", "x y", "--name=a=b", "-m", "4G", "--mem", "-t", "5", "-a", "1,2",
                "--after=3", "--hold", "--progress", "-O", "f", "-e", "-o", "o.%j", "--",
                "-", "-f", "file", "--each-line=lines", "--wai", "-h", "--help", "--bogus",
                "-Z", "true", "echo", "ls", "/tmp", "-l", "{}", "--priority=-3", "-p", "-3",
                "--reservation", "R", "-S", "/bin/bash", "--host=h", "-E", "a,b", "-i", "t"]
CLIENT_WORDS = ["status", "details", "list", "cancel", "hold", "release", "wait", "lswjobs",
                "--json", "--jobs=1,2", "--jobs", "1", "2", "17", "--batch=3", "--batch",
                "--timeout=5", "--timeout", "--progress", "--state=running", "--limit=4",
                "--", "-", "-1", "--bogus", "--jso", "-h", "--help"]


def docopt_or_none(doc, argv, **options):
    try:
        return dict(docopt(doc, argv=argv, **options))
    except (DocoptExit, SystemExit):
        return None


def check_submit(argv):
    quick = submit.quick(list(argv))
    if quick is not None:
        assert quick == docopt_or_none(submit.__doc__, list(argv), options_first=True), argv


def check_client(argv):
    quick = client.quick(list(argv))
    if quick is not None:
        assert quick == docopt_or_none(client.__doc__, list(argv)), argv


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(SUBMIT_WORDS), max_size=7))
def test_submit_quick_parse_is_docopts(argv):
    check_submit(argv)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CLIENT_WORDS[:8]), st.lists(st.sampled_from(CLIENT_WORDS), max_size=5))
def test_client_quick_parse_is_docopts(command, rest):
    check_client([command, *rest])


def test_usual_command_lines_take_the_quick_path():
    """The bug: the quick parser left the common forms to docopt (30 ms each)."""
    for argv in (["true"], ["--wait", "true"], ["-c", "2", "-m", "1G", "-t", "60", "sleep", "1"],
                 ["--json", "--wait", "true"], ["-w", "--", "ls", "/tmp"], ["-q", "echo", "-n"]):
        assert submit.quick(argv) is not None, argv
        check_submit(argv)
    for argv in (["status"], ["status", "--jobs=1,2"], ["details", "5", "--json"],
                 ["wait", "5", "6"], ["wait", "--batch=2", "--progress"], ["cancel", "4"]):
        assert client.quick(argv) is not None, argv
        check_client(argv)


def test_unusual_command_lines_are_left_to_docopt():
    for argv in (["-"], ["-f", "x"], ["--wai", "true"], ["-h"], [], ["--bogus", "x"]):
        assert submit.quick(argv) is None, argv
    for argv in (["wait"], ["wait", "1", "--batch=2"], ["lswjobs"], ["status", "3"],
                 ["details", "--", "3"], ["hold"]):
        assert client.quick(argv) is None, argv


def test_double_dash_ends_the_options():
    """`hq-submit --wait -- ls /tmp` ran the command '-- ls /tmp'."""
    args = submit.quick(["--wait", "--", "ls", "/tmp"])
    assert args["COMMAND"] == ["--", "ls", "/tmp"] and args["--wait"]
