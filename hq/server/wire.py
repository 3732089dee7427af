"""Multipart messages on hq-server's ROUTER without pyzmq's per-call conveniences (a flag enum
built per frame, a getsockopt per received frame): a heartbeat in and its answer out cost half;
a Sender keeps what a peer's full queue refuses for the next try, up to a bound."""

import collections

import zmq

NOBLOCK = int(zmq.NOBLOCK)
MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


def receive(sock):
    """The frames (zmq.Frame, not copied) of the next message; zmq.Again when there is none."""
    frame = sock.recv(NOBLOCK, copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(NOBLOCK, copy=False)
        frames.append(frame)
    return frames


def send(sock, identity, frames):
    """Send `frames` to the peer `identity` without blocking: zmq.ZMQError when the peer is
    gone (ROUTER_MANDATORY) or its queue is full; nothing of the message leaves then."""
    sock.send(identity, MORE)
    for frame in frames[:-1]:
        sock.send(frame, MORE)
    sock.send(frames[-1], NOBLOCK)


class Sender:
    """Sends that never block and lose nothing to a burst: what a peer's full queue (SNDHWM)
    refuses waits here, in order, and goes first when the loop tries again; past
    OVERFLOW_BYTES a peer that does not read loses messages (memory stays bounded)."""

    OVERFLOW_BYTES = 16 << 20

    def __init__(self, sock):
        self.sock = sock
        self.waiting = {}       # identity -> [deque of frames, bytes]

    def send(self, identity, frames):
        """True when sent or kept for later; False when the peer is gone or holds too much
        unread (zmq.ZMQError raised for a peer that is gone)."""
        queued = self.waiting.get(identity)
        if queued is None:
            try:
                send(self.sock, identity, frames)
                return True
            except zmq.Again:
                queued = self.waiting[identity] = [collections.deque(), 0]
        size = sum(len(frame) for frame in frames)
        if queued[1] + size > self.OVERFLOW_BYTES:
            return False
        queued[0].append(frames)
        queued[1] += size
        return True

    def retry(self):
        """Send what waits, each peer's in order, until its queue is full again."""
        for identity in list(self.waiting):
            queued = self.waiting[identity]
            try:
                while queued[0]:
                    send(self.sock, identity, queued[0][0])
                    queued[1] -= sum(len(frame) for frame in queued[0].popleft())
            except zmq.Again:
                continue
            except zmq.ZMQError:        # the peer is gone: nothing to deliver to
                pass
            del self.waiting[identity]
