"""The user-server's stream socket (hq.user.streams) on real AF_UNIX sockets: requests are
bounded, replies are never cut, and only a client that reads nothing for long is dropped."""

import json
import os
import socket

from hq.client.fast import StreamConnection
from hq.user import streams as streams_module
from hq.user.streams import Streams
from tests.helpers import wait_until



def home(tmp_path):
    os.makedirs(tmp_path / "run", mode=0o700, exist_ok=True)
    return str(tmp_path)


def pump(streams, until, deadline_s=10.0):
    """Run the accept/read/write side of Streams until `until()` holds (deadline)."""
    import select

    def step():
        fds = streams.fds()
        readable, writable, _ = select.select(
            [fd for fd, _ in fds], [fd for fd, w in fds if w], [], 0.05)
        got = []
        for fd in set(readable) | set(writable):
            messages, _ = streams.ready(fd, fd in readable, fd in writable)
            got += messages
        return got

    received = []
    wait_until(lambda: (received.extend(step()) or until(received)), timeout=deadline_s)
    return received


def test_a_reply_many_times_the_request_bound_arrives_whole(tmp_path):
    """Catches replies cut at twice the request bound (a LIST or STATUS answer of thousands of
    jobs under a small max_message_bytes): put back `if len(outbox) > 2 * max_line: drop`."""
    streams = Streams(home(tmp_path), max_line=1000)
    try:
        client = StreamConnection(str(tmp_path))
        client.send([b"HQ1", b"STATUS", b'{"req": 1}'])
        (identity, frames), = pump(streams, lambda got: len(got) == 1)
        assert frames == [b"HQ1", b"STATUS", b'{"req": 1}']
        # 10 MB: more than the socket takes at once
        body = json.dumps({"req": 1, "jobs": ["x" * 50] * 200000}).encode()
        streams.send(identity, [b"HQ1", b"OK", body])
        reply = []

        def read_some():
            client.sock.setblocking(False)
            try:
                reply.append(client.recv(0.01))
            except (BlockingIOError, TimeoutError):
                pass
            return reply and reply[-1] is not None
        pump(streams, lambda got: read_some())
        assert reply[-1] == [b"HQ1", b"OK", body]
        client.close()
    finally:
        streams.close()


def test_a_request_over_the_bound_is_refused(tmp_path):
    streams = Streams(home(tmp_path), max_line=1000)
    try:
        client = StreamConnection(str(tmp_path))
        client.send([b"HQ1", b"SUBMIT", b"{" + b"x" * 5000])
        got = pump(streams, lambda got: len(got) >= 1)
        assert got[0][1] is None        # the user-server answers TOO_LARGE and drops it
        client.close()
    finally:
        streams.close()


def test_only_a_client_that_reads_nothing_for_long_is_dropped(tmp_path):
    streams = Streams(home(tmp_path), max_line=1000)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(streams.path)
        client.sendall(b"HQ1 STATUS {}\n")
        (identity, _), = pump(streams, lambda got: len(got) == 1)
        streams.send(identity, [b"HQ1", b"OK", b"y" * (8 << 20)])   # more than the socket takes
        stream = streams.by_identity[identity]
        assert stream.outbox and stream.stalled_since is not None
        start = stream.stalled_since
        assert streams.stalled(now=start + streams_module.STALL_S / 2) == []
        assert identity in streams.by_identity
        assert streams.stalled(now=start + streams_module.STALL_S + 1) == [identity]
        assert identity not in streams.by_identity
        client.close()
    finally:
        streams.close()
