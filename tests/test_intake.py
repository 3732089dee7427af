"""What a loop turn reads after its budget is spent (hq/server/intake.py), on real ZeroMQ
sockets: cheap messages (heartbeats, reads, read-only ADMIN) are handed over, the others held in
order, and a peer with a held message has all its later ones held behind it."""

import json

import pytest
import zmq

from hq import protocol as p
from hq.server.intake import Intake
from tests.helpers import wait_until


@pytest.fixture
def sockets():
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.bind("inproc://intake-test")
    peers = {}
    for name in ("agent", "busy", "admin"):
        peer = peers[name] = context.socket(zmq.DEALER)
        peer.setsockopt(zmq.ROUTING_ID, name.encode())
        peer.connect("inproc://intake-test")
    yield router, peers
    for sock in (router, *peers.values()):
        sock.close(linger=0)


def send(peer, kind, **body):
    peer.send_multipart([p.TAG, kind, json.dumps(body).encode()])


def test_cheap_messages_pass_and_the_rest_is_held_in_each_peers_order(sockets):
    """Catches a turn that stops reading at a big submission (a backlog of heartbeats builds
    up and an admin's status waits behind one message of every agent), reads that change
    something handled out of turn, and a peer's cheap message overtaking its own held one."""
    router, peers = sockets
    send(peers["busy"], p.SUBMIT, req=1, jobs=["true"] * 3)
    send(peers["agent"], p.HEARTBEAT, req="heartbeat")
    send(peers["admin"], p.ADMIN, req=2, command="status")
    send(peers["busy"], p.STATUS, req=3)                   # behind its own SUBMIT
    send(peers["admin"], p.ADMIN, req=4, command="deactivate")
    send(peers["agent"], p.EVENTS, req="events", seq=1, events=[])
    send(peers["agent"], p.PING, req=5)                    # behind its own EVENTS
    wait_until(lambda: router.poll(0), 5, message="the messages to arrive")
    intake = Intake(router)
    passed = []
    while (frames := intake.next_cheap()) is not None:
        passed.append((frames[0].bytes, json.loads(frames[3].bytes)["req"]))
    assert sorted(passed) == [(b"admin", 2), (b"agent", "heartbeat")]
    held = []
    while intake.held:
        frames = intake.take_held()
        held.append((frames[0].bytes, json.loads(frames[3].bytes)["req"]))
    for peer, order in ((b"busy", [1, 3]), (b"admin", [4]), (b"agent", ["events", 5])):
        assert [req for who, req in held if who == peer] == order
    assert intake.held_peers == set() and intake.receive() is None


def test_held_messages_are_bounded_in_bytes(sockets, monkeypatch):
    """Catches held messages bounded only in number: a peer whose big submissions are held
    has its later ones taken out of libzmq's bounded queue too."""
    import hq.server.intake as intake_module
    monkeypatch.setattr(intake_module, "HELD_BYTES_MAX", 10000)
    router, peers = sockets
    for n in range(5):
        send(peers["busy"], p.SUBMIT, req=n, jobs=["x" * 3000])
    send(peers["agent"], p.HEARTBEAT, req="heartbeat")
    wait_until(lambda: router.poll(0), 5, message="the messages to arrive")
    intake = Intake(router)
    while intake.next_cheap() is not None:
        pass
    assert 3 <= len(intake.held) <= 4 and intake.full()
    while intake.held:
        intake.take_held()
    assert intake.held_bytes == 0 and not intake.full()
