"""hq-server's ZAP handler: a plain thread that answers libzmq's authentication requests for
CURVE connections from a dict of registered public keys (z85 -> user), one reply per request.

It replaces pyzmq's ThreadAuthenticator (asyncio in a thread: about 0.4 ms of Python per
handshake, which 10,000 agents connecting at once turned into seconds of the server's GIL).
"""

import logging
import threading

import zmq
from zmq.utils import z85

log = logging.getLogger("hq.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
POLL_MS = 200


class ZapHandler(threading.Thread):
    """Accepts the CURVE keys of `keys` and names the connection's User-Id after the key's
    user; refuses every other key (and every other mechanism)."""

    def __init__(self, context, keys):
        super().__init__(name="hq-zap", daemon=True)
        self.keys = dict(keys)
        self.running = True
        self.socket = context.socket(zmq.REP)      # bound now: before the first connection
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)

    def set_keys(self, keys):
        self.keys = dict(keys)

    def run(self):
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while self.running:
            if poller.poll(POLL_MS):
                self.socket.send_multipart(self.answer(self.socket.recv_multipart()))
        self.socket.close(linger=0)

    def answer(self, frames):
        """The ZAP reply (RFC 27) to one request."""
        if len(frames) < 6 or frames[0] != b"1.0":
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"500", b"bad request",
                    b"", b""]
        request_id, mechanism, credentials = frames[1], frames[5], frames[6:]
        user = None
        if mechanism == b"CURVE" and credentials and len(credentials[0]) == 32:
            key = z85.encode(credentials[0])
            user = self.keys.get(key)
            if user is None:
                log.warning("refused connection with unregistered key %s", key.decode()[:12])
        if user is None:
            return [b"1.0", request_id, b"400", b"key not registered", b"", b""]
        return [b"1.0", request_id, b"200", b"OK", user.encode(), b""]

    def stop(self):
        self.running = False
        self.join(timeout=2 * POLL_MS / 1000 + 1)


def start(context, keys):
    handler = ZapHandler(context, keys)
    handler.start()
    return handler
