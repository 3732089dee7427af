"""The user-server's plain stream socket ($HQ_HOME/run/user-stream.sock, 0600 in the 0700 run
directory): clients that need no pyzmq send the same messages one a line (hq.client.fast).

`Streams` accepts connections, cuts their input into messages and buffers what it sends, all
without blocking; the user-server polls `fds()` beside its ZeroMQ sockets.

`max_line` bounds what a client may send (a request); replies are never cut, whatever their
size: a connection is dropped only when it has read nothing for STALL_S while output waits.
"""

import logging
import os
import socket
import time

from hq.client.fast import decode_line, encode_line
from hq.paths import stream_path

log = logging.getLogger("hq.user-server")

READ_CHUNK = 1 << 20
STALL_S = 60.0           # a client that reads nothing of its pending output this long is dropped


class Stream:
    """One client connection: its identity in the user-server is ("stream", number)."""

    def __init__(self, sock, number):
        self.sock = sock
        self.identity = ("stream", number)
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.stalled_since = None   # monotonic time since when output waits and none was taken


class Streams:
    def __init__(self, home, max_line):
        path = stream_path(home)
        if os.path.exists(path):
            os.unlink(path)      # stale: the caller holds the pidfile lock
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.path = path
        self.max_line = max_line
        self.by_fd = {}          # fileno -> Stream
        self.by_identity = {}    # identity -> Stream
        self.count = 0

    def fds(self):
        """[(fileno, wants to write)] of the listener and every connection."""
        return [(self.listener.fileno(), False)] + [
            (fd, bool(stream.outbox)) for fd, stream in self.by_fd.items()]

    def ready(self, fd, readable, writable):
        """Handle readiness of one fd; returns [(identity, frames)] of the messages read and
        the identities of connections that closed."""
        if fd == self.listener.fileno():
            self.accept()
            return [], []
        stream = self.by_fd.get(fd)
        if stream is None:
            return [], []
        if writable:
            self.flush(stream)
        if not readable:
            return [], []
        try:
            data = stream.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return [], []
        except OSError:
            data = b""
        if not data:
            self.drop(stream)
            return [], [stream.identity]
        return self.messages(stream, data), []

    def accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:      # out of files: the client sees it and retries
                log.warning("cannot accept a client: %s", exc)
                return
            sock.setblocking(False)
            self.count += 1
            stream = Stream(sock, self.count)
            self.by_fd[sock.fileno()] = stream
            self.by_identity[stream.identity] = stream

    def messages(self, stream, data):
        stream.inbox += data
        if b"\n" not in data:
            if len(stream.inbox) > self.max_line:
                return [(stream.identity, None)]       # too large: the caller answers
            return []
        *lines, rest = bytes(stream.inbox).split(b"\n")
        stream.inbox = bytearray(rest)
        return [(stream.identity, decode_line(line) if len(line) <= self.max_line else None)
                for line in lines]

    def send(self, identity, frames):
        """Queue a whole message for a connection (dropped if it has closed) and write what the
        socket takes now; the rest goes out as the client reads."""
        stream = self.by_identity.get(identity)
        if stream is None:
            return
        stream.outbox += encode_line(frames)
        self.flush(stream)

    def flush(self, stream, now=None):
        progress = False
        while stream.outbox:
            try:
                sent = stream.sock.send(stream.outbox)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                stream.outbox.clear()
                break
            del stream.outbox[:sent]
            progress = True
        if progress or not stream.outbox:
            stream.stalled_since = None
        if stream.outbox and stream.stalled_since is None:
            stream.stalled_since = time.monotonic() if now is None else now

    def stalled(self, now=None):
        """Drop the connections whose client has read nothing for STALL_S while output waited;
        their identities."""
        now = time.monotonic() if now is None else now
        gone = [s for s in self.by_fd.values()
                if s.stalled_since is not None and now - s.stalled_since > STALL_S]
        for stream in gone:
            log.warning("a client read nothing of %d bytes for it in %.0fs: dropped",
                        len(stream.outbox), STALL_S)
            self.drop(stream)
        return [stream.identity for stream in gone]

    def drop(self, stream):
        self.by_fd.pop(stream.sock.fileno(), None)
        self.by_identity.pop(stream.identity, None)
        stream.sock.close()

    def close(self):
        for stream in list(self.by_fd.values()):
            self.drop(stream)
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
