"""A standby hq-server: until it takes the lease (hq/server/lease.py) it answers every request
NOT_ACTIVE on its address, so clients and agents move on to the other address at once.

The socket is CURVE (the server's key) with no ZAP handler: it tells anyone only "not active".
"""

import logging
import time

import zmq

from hq import protocol as p, security
from hq.errors import CONFIG_ERROR, NOT_ACTIVE, HQError

log = logging.getLogger("hq.server.standby")

POLL_S = 0.5        # the lease row is looked at this often


def wait_for_lease(lease, address, keypair, max_body):
    """Return once `lease` is ours; meanwhile refuse every request with NOT_ACTIVE."""
    if lease.try_acquire():
        return
    context = zmq.Context.instance()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    security.make_server_socket(sock, *keypair)
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        sock.close()
        raise HQError(CONFIG_ERROR, f"cannot listen on {address}: {exc}") from None
    term, holder, left = lease.seen
    log.info("standby on %s: term %s is held by %s for %.1fs more", address, term, holder, left)
    print(f"hq-server standby on {address}: term {term} held by {holder}", flush=True)
    try:
        next_look = time.monotonic() + POLL_S
        while True:
            if sock.poll(max(0, next_look - time.monotonic()) * 1000, zmq.POLLIN):
                refuse(sock, address, max_body)
                continue
            next_look = time.monotonic() + POLL_S
            if lease.try_acquire():
                return
    finally:
        sock.close(linger=0)


def refuse(sock, address, max_body):
    while True:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            _, body = p.decode(frames[1:], max_body=max_body)
        except HQError:
            continue
        try:
            sock.send_multipart([frames[0], *p.error(
                body.get("req"), NOT_ACTIVE, f"hq-server at {address} is a standby: "
                "another server holds the lease")], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
