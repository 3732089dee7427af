"""hq.Client checks what it sends: a bad environment is refused before it reaches hq-server,
and every SUBMIT carries the submitter's umask."""

import os

import pytest

from hq.client.api import checked_env, current_umask, submission_body
from hq.errors import HQError
from tests.helpers import Cluster


@pytest.fixture
def sqlite_cluster(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite")
    with c.running():
        yield c


BAD_ENVS = [{"A": "x\0y"}, {"A\0": "x"}, {"": "x"}, {"A=B": "x"}, {"A": 1}, {2: "x"},
            {"A": None}, {"A": "\ud800"}, {"\udcff": "x"}, ["A=x"]]


@pytest.mark.parametrize("env", BAD_ENVS, ids=repr)
def test_bad_environment_is_refused(env):
    """Catches an environment that would kill the agent (NUL) or fail in execve: BAD_REQUEST
    with one line naming the entry (escaped)."""
    with pytest.raises(HQError) as caught:
        checked_env(env)
    assert caught.value.code == "BAD_REQUEST"
    assert "\n" not in caught.value.message and "\0" not in caught.value.message


def test_good_environment_is_kept():
    """Catches over-eager checks: any UTF-8 text without NUL is a fine value."""
    env = {"A": "", "PATH": "/bin", "WEIRD": "\x1b[2J\n\t é 🙂", "_x1": "=="}
    assert checked_env(env) == env


def test_umask_is_captured_not_changed():
    """Catches a umask that is not sent (jobs then got the user-server's) or that capturing
    changes: the body carries this process's umask, which stays as it was."""
    old = os.umask(0o027)
    try:
        body = submission_body({}, False, "/", {}, None)
        assert body["umask"] == 0o027 == current_umask()
        assert submission_body({}, False, "/", {}, 0o077)["umask"] == 0o077
        with pytest.raises(HQError):
            submission_body({}, False, "/", {}, 0o1000)
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


def test_client_refuses_before_sending(sqlite_cluster):
    """Catches a NUL in the environment that reaches hq-server (where it was accepted and
    killed the agent): refused by the client, nothing submitted, the next submit works."""
    client = sqlite_cluster.client()
    try:
        with pytest.raises(HQError) as caught:
            client.submit_many(["true"], env={"X": "a\0b"})
        assert caught.value.code == "BAD_REQUEST"
        assert client.list() == []
        job = client.submit("true", env={"X": "fine"})
        assert client.wait([job], timeout=30)[0]["state"] == "done"
    finally:
        client.close()


def test_client_refuses_what_no_server_would_take(sqlite_cluster):
    """Catches a NaN or a lone surrogate sent to the user-server, which could not answer it
    (no req id) so the client waited for nothing: BAD_REQUEST at once, nothing sent."""
    client = sqlite_cluster.client()
    try:
        for body in ({"ids": [float("nan")]}, {"ids": [], "x": "\ud800"}, {"x": {1, 2}}):
            with pytest.raises(HQError) as caught:
                client.request(b"LIST", **body)
            assert caught.value.code == "BAD_REQUEST"
        assert client.list() == []
    finally:
        client.close()


def test_user_server_answers_undecodable_requests_by_req_id(sqlite_cluster):
    """Catches requests the user-server cannot decode (NaN, too large, bad JSON) answered
    without their req id: the client then waited out its whole timeout."""
    import zmq
    from hq import protocol as p
    from hq.paths import socket_path
    client = sqlite_cluster.client()
    client.status()                      # the user-server runs
    client.close()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{socket_path(sqlite_cluster.home)}")
    try:
        for req, raw in ((7, b'{"req":7,"ids":[NaN]}'), (8, b'{"req":8,"ids":[1e999]}'),
                         (9, b'{"req": 9, "x": "\\ud800"}'), (10, b'{"req":10,' + b"x" * 99)):
            sock.send_multipart([p.TAG, p.LIST, raw])
            assert sock.poll(5000), f"no answer to {raw[:30]!r}"
            kind, body = p.decode(sock.recv_multipart())
            assert kind == p.ERROR and body["req"] == req and body["code"] == "BAD_FRAME"
    finally:
        sock.close()
