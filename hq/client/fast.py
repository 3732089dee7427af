"""The fast path to the user-server: a plain AF_UNIX stream socket beside its ZeroMQ one,
carrying the same messages one a line (`HQ1 KIND JSON\\n`); no pyzmq to import.

JSON as hq encodes it never holds a raw newline, so a line is a message. The user-server binds
$HQ_HOME/run/user-stream.sock (directory 0700, socket 0600) next to user.sock.
"""

import _socket
import os
import time

from hq.paths import stream_path

TAG = b"HQ1"
CHUNK = 1 << 20


def home_dir():
    """$HQ_HOME (default ~/.hq), as hq.config has it, without importing hq.config."""
    return os.path.abspath(os.path.expanduser(os.environ.get("HQ_HOME") or "~/.hq"))


def encode_line(frames):
    """The line of a message [TAG, KIND, BODY]."""
    return b" ".join(frames) + b"\n"


def decode_line(line):
    """The frames of a line (the BODY may hold spaces; TAG and KIND do not)."""
    return line.split(b" ", 2)


class StreamConnection:
    """A connection to the user-server's stream socket; raises OSError when it cannot connect."""

    def __init__(self, home):
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.sock.connect(stream_path(home))
        except OSError:
            self.sock.close()
            raise
        self.buffer = bytearray()
        self.lines = []         # complete lines received, not yet taken

    def send(self, frames):
        self.sock.settimeout(None)
        self.sock.sendall(encode_line(frames))

    def recv(self, timeout):
        """The next message's frames; None if none came within `timeout` seconds (None:
        wait for ever). ConnectionError when the user-server has gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.lines:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(CHUNK)
            except (TimeoutError, BlockingIOError):
                return None
            if not data:
                raise ConnectionError("hq-user-server closed the connection")
            self.buffer += data
            if b"\n" in data:
                *complete, rest = self.buffer.split(b"\n")
                self.lines += complete
                self.buffer = bytearray(rest)
        return decode_line(bytes(self.lines.pop(0)))

    def close(self):
        self.sock.close()


class ZmqConnection:
    """The ZeroMQ path (HQ_TRANSPORT=zmq): a DEALER on ipc://$HQ_HOME/run/user.sock."""

    def __init__(self, home):
        import zmq
        from hq.paths import socket_path
        self.zmq = zmq
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"ipc://{socket_path(home)}")

    def send(self, frames):
        self.sock.send_multipart(frames)

    def recv(self, timeout):
        if not self.sock.poll(None if timeout is None else timeout * 1000):
            return None
        return self.sock.recv_multipart()

    def close(self):
        self.sock.close(linger=0)
