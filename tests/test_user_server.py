"""The user-server's own log: what it writes about hosts and ssh outcomes is one line per
event, with control characters escaped."""

import os

from tests.helpers import Cluster, wait_until

EVIL = "evil\x1b[2J\x07\x9bFAKE"      # no newline: cluster.tab is read line by line


def test_user_server_log_escapes_host_names_and_outcomes(tmp_path):
    """Catches a host name (or an ssh outcome naming it) written raw to the user-server log,
    where an ESC sequence or a newline forges or hides lines."""
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite",
                hosts=(("localhost", "-", "local", "127.0.0.1"), (EVIL, "1", "-", "127.0.0.1:2")))
    with c.running():
        log = os.path.join(c.home, "log", "user-server.log")

        def logged():
            c.run("hq-client", "invokeservers", check=True)   # until the server asks for it
            with open(log, "rb") as handle:
                text = handle.read()
            return text if b"evil\\x1b[2J\\x07\\x9bFAKE" in text else None
        text = wait_until(logged, 20, message="the user-server to log the evil host")
        assert b"\x1b" not in text and b"\x07" not in text and "\x9b".encode() not in text
        assert mode_of(os.path.dirname(log)) == 0o700 and mode_of(log) == 0o600


def mode_of(path):
    return os.stat(path).st_mode & 0o777
