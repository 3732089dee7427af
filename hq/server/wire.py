"""Multipart messages on hq-server's ROUTER without pyzmq's per-call conveniences (a flag enum
built per frame, a getsockopt per received frame): a heartbeat in and its answer out cost half."""

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
