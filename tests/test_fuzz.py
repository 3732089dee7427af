"""Hostile input to a running hq-server from an authenticated client: random frames, bad JSON,
wrong field types, oversize bodies. Each gets ERROR (or is ignored), the server keeps serving."""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hq import protocol as p
from tests.helpers import Cluster, user_socket, wait_until

FUZZ_EXAMPLES = int(os.environ.get("HQ_FUZZ_EXAMPLES", "300"))
MAX_BODY = 65536

FIELDS = {   # field names each kind reads, so that random values reach the type checks
    p.SUBMIT: ["jobs", "env", "cwd", "hold"], p.LIST: ["states", "limit", "batch"],
    p.DETAILS: ["ids", "events"], p.CANCEL: ["ids"], p.HOLD: ["ids"], p.RELEASE: ["ids"],
    p.ADMIN: ["command", "arg", "key"], p.PING: [], p.HELLO: [],
    p.REGISTER: ["host", "cores", "memory_total", "os", "running", "load1", "nprocs"],
    p.HEARTBEAT: ["running", "load1", "mem_available", "nprocs"], p.EVENTS: ["events", "seq"],
    p.OK: ["req"], p.ERROR: ["code"], p.UNREACHABLE: ["host", "reason"], p.BYE: [],
}
JOB_FIELDS = ["command", "name", "cores", "memory", "priority", "host_req", "time_limit",
              "retries", "stdout", "cwd", "shell"]
EVENT_FIELDS = ["job", "attempt", "type", "time", "pid", "exit_code", "signal", "error"]
NASTY_BODIES = [b"", b"null", b"[]", b"{", b'{"req": NaN}', b'{"req": 1e999}',
                b'{"name": "\\ud800"}', b"[" * 50000, b'{"ids": [' + b"9" * 30 + b"]}",
                b"\xff\xfe", b'"' + b"x" * (MAX_BODY + 10) + b'"']

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
           allow_infinity=False) | st.text(max_size=20)
           | st.sampled_from(["localhost", "started", "finished", "info", "lscluster",
                              "adduser", "/tmp", "true", "x" * 300]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def shaped(names):
    """Dicts over `names` (some present, random values) plus a random extra key."""
    return st.fixed_dictionaries({}, optional={n: values for n in names + ["req"]})


@st.composite
def messages(draw):
    shape = draw(st.integers(0, 4))
    if shape == 0:      # random frames
        return draw(st.lists(st.binary(max_size=40), min_size=1, max_size=5))
    if shape == 1:      # a valid envelope around a nasty body
        kind = draw(st.sampled_from(sorted(FIELDS)))
        return [p.TAG, kind, draw(st.sampled_from(NASTY_BODIES))]
    kind = draw(st.sampled_from(sorted(FIELDS)) | st.binary(max_size=10))
    body = draw(shaped(FIELDS.get(kind, [])))
    if kind == p.SUBMIT and draw(st.booleans()):
        body["jobs"] = draw(st.lists(shaped(JOB_FIELDS), max_size=3))
    if kind == p.EVENTS and draw(st.booleans()):
        body["events"] = draw(st.lists(shaped(EVENT_FIELDS), max_size=3))
    frames = [p.TAG, kind, json.dumps(body).encode()]
    if shape == 4:
        frames = frames[:draw(st.integers(1, 2))] + draw(st.lists(st.binary(max_size=8),
                                                                  max_size=2))
    return frames


@pytest.fixture
def fuzz_cluster(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite", users="fuzz USER\n")
    import configparser
    path = os.path.join(c.etc, "hq.cfg")
    cfg = configparser.ConfigParser()
    cfg.read(path)
    cfg["server"]["max_message_bytes"] = str(MAX_BODY)
    with open(path, "w") as handle:
        cfg.write(handle)
    with c.running():
        yield c


def fuzz_socket(cluster):
    """A CURVE client registered as user 'fuzz' (no ADMIN role, no agents that run jobs)."""
    return user_socket(cluster, "fuzz")


def drain(sock, replies):
    while sock.poll(0):
        frames = sock.recv_multipart()
        try:
            replies.append(p.decode(frames, kinds={p.OK, p.ERROR, p.RUN, p.KILL, p.SPAWN}))
        except Exception as exc:   # the server must only send well-formed messages
            raise AssertionError(f"server sent a malformed message {frames!r}: {exc}")


def ask(sock, replies, kind, body, timeout=10.0):
    """Send one request and wait for its reply (other replies are collected on the way)."""
    sock.send_multipart(p.encode(kind, body))

    def answered():
        sock.poll(50)
        drain(sock, replies)
        return next((r for r in replies if r[1].get("req") == body["req"]), None)
    return wait_until(answered, timeout, 0, f"the reply to {kind.decode()}")


def test_random_frames_get_errors_and_the_server_keeps_serving(fuzz_cluster):
    c = fuzz_cluster
    sock = fuzz_socket(c)
    replies = []
    try:
        assert ask(sock, replies, p.PING, {"req": "first"})[0] == p.OK

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(messages())
        def throw(frames):
            sock.send_multipart(frames)
            drain(sock, replies)
        throw()
        kind, body = ask(sock, replies, p.PING, {"req": "after"}, timeout=30)
        assert kind == p.OK
        errors = [b for k, b in replies if k == p.ERROR]
        assert errors, "random input produced no ERROR reply at all"
        codes = {b["code"] for b in errors}
        assert {"BAD_FRAME", "BAD_REQUEST"} <= codes and "INTERNAL" not in codes, codes
        # an oversize body is refused with TOO_LARGE, not dropped
        replies.clear()    # (its reply cannot echo the req: the body is not parsed)
        sock.send_multipart(p.encode(p.LIST, {"req": "big", "pad": "x" * MAX_BODY}))
        wait_until(lambda: sock.poll(50) and drain(sock, replies) or replies, 10, 0,
                   "the reply to an oversize body")
        assert replies[0][0] == p.ERROR and replies[0][1]["code"] == "TOO_LARGE"
    finally:
        sock.close()
    log = c.server_log()
    assert "Traceback" not in log and "internal error" not in log and "commit failed" not in log
    assert "refused" in log                      # rejections are logged
    assert c.server.poll() is None
    result = c.run("hq-submit", "--wait", "echo still serving")
    assert result.returncode == 0, result.stderr


def test_protocol_decoder_rejects_what_the_database_cannot_store():
    for raw in (b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}', b'{"a": "\\udc00"}',
                b"[" * 100000):
        with pytest.raises(p.HQError) as caught:
            p.decode([p.TAG, p.PING, raw])
        assert caught.value.code == "BAD_FRAME"
    assert p.decode([p.TAG, p.PING, b'{"a": "\\ud83d\\ude00"}'])[1] == {"a": "\U0001F600"}
    with pytest.raises(p.HQError) as caught:
        p.field({"n": 1 << 70}, "n", int)
    assert caught.value.code == "BAD_REQUEST"
