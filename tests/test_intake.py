"""What a loop turn reads after its budget is spent (hq/server/intake.py), on real ZeroMQ
sockets: cheap messages (heartbeats, reads, read-only ADMIN) are handed over, the others held in
order, and a peer with a held message has all its later ones held behind it."""

import itertools
import json

import pytest
import zmq

from hq import protocol as p
from hq.server.intake import Intake
from tests.helpers import wait_until


ENDPOINTS = itertools.count()


@pytest.fixture
def sockets():
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    endpoint = f"inproc://intake-test-{next(ENDPOINTS)}"    # each test its own (an unbind
    router.bind(endpoint)                                   # may lag behind close)
    peers = {}
    for name in ("agent", "busy", "admin"):
        peer = peers[name] = context.socket(zmq.DEALER)
        peer.setsockopt(zmq.ROUTING_ID, name.encode())
        peer.connect(endpoint)
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
        frames, answered = intake.take_held()
        assert answered is False
        held.append((frames[0].bytes, json.loads(frames[3].bytes)["req"]))
    for peer, order in ((b"busy", [1, 3]), (b"admin", [4]), (b"agent", ["events", 5])):
        assert [req for who, req in held if who == peer] == order
    assert intake.held_peers == set() and intake.receive() is None


def test_a_heartbeat_held_behind_its_agents_report_is_renewed_at_once(sockets):
    """Catches a heartbeat that waits for the backlog ahead of it (the agent's own report held
    there): with 1 M jobs on MySQL agents' leases ran out behind it and their jobs ran twice.
    Its lease is renewed as it is read; it stays held, in order, marked answered (its jobs
    are reconciled in its turn, without a second reply); one renew cannot answer stays unmarked."""
    router, peers = sockets
    send(peers["agent"], p.EVENTS, req="events", seq=1, events=[])
    send(peers["agent"], p.HEARTBEAT, req="heartbeat", n=7)
    send(peers["busy"], p.SUBMIT, req=1, jobs=["true"])
    send(peers["busy"], p.HEARTBEAT, req="heartbeat", n=8)
    wait_until(lambda: router.poll(0), 5, message="the messages to arrive")
    renewed = []

    def renew(frames):
        renewed.append(json.loads(frames[3].bytes)["n"])
        return frames[0].bytes == b"agent"
    intake = Intake(router, renew)
    while intake.next_cheap() is not None:
        pass
    assert sorted(renewed) == [7, 8]
    held = [(frames[0].bytes, json.loads(frames[3].bytes)["req"], answered)
            for frames, answered in (intake.take_held() for _ in range(len(intake.held)))]
    assert [h for h in held if h[0] == b"agent"] == [(b"agent", "events", False),
                                                     (b"agent", "heartbeat", True)]
    assert [h for h in held if h[0] == b"busy"] == [(b"busy", 1, False),
                                                    (b"busy", "heartbeat", False)]


def test_an_agent_holds_one_renewed_heartbeat_and_those_do_not_fill_the_intake(sockets,
                                                                              monkeypatch):
    """Catches every renewed heartbeat of an agent kept (they fill the intake, and the next
    heartbeats wait unread: with 10,000 agents behind their reports leases ran out, 1,756 jobs
    fenced in a run on MySQL) and an agent's older heartbeat reconciled after its newer one."""
    import hq.server.intake as intake_module
    monkeypatch.setattr(intake_module, "HELD_BYTES_MAX", 2 * intake_module.MESSAGE_OVERHEAD + 300)
    router, peers = sockets
    send(peers["agent"], p.EVENTS, req="events", seq=1, events=[])
    for n in (1, 2, 3):
        send(peers["agent"], p.HEARTBEAT, req="heartbeat", n=n)
    wait_until(lambda: router.poll(0), 5, message="the messages to arrive")
    renewed = []
    intake = Intake(router, lambda frames: renewed.append(json.loads(frames[3].bytes)["n"])
                    or True)
    wait_until(lambda: intake.next_cheap() is None and len(renewed) == 3, 5, 0,
               "the heartbeats renewed")
    assert not intake.full()
    send(peers["busy"], p.SUBMIT, req=1, jobs=["true"])
    send(peers["busy"], p.SUBMIT, req=2, jobs=["true"])
    wait_until(lambda: intake.next_cheap() is None and intake.full(), 5, 0, "a full intake")
    taken = []
    while intake.held:
        held = intake.take_held()
        if held is not None:
            frames, answered = held
            body = json.loads(frames[3].bytes)
            taken.append((frames[0].bytes, body.get("n", body["req"]), answered))
    assert taken == [(b"agent", "events", False), (b"agent", 3, True), (b"busy", 1, False)]
    assert intake.held_bytes == 0 and not intake.renewed
    assert json.loads(intake.receive()[3].bytes)["req"] == 2     # waited unread


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


def test_a_burst_to_one_peer_waits_and_a_peer_that_reads_nothing_is_bounded(monkeypatch):
    """Catches replies lost to a burst (more than the peer's queue holds, e.g. 300 parallel
    `hq-submit` through one user-server, answered after one commit), their order changed, and
    a peer that reads nothing holding unbounded memory."""
    from hq.server import wire
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.SNDHWM, 5)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind(f"inproc://sender-test-{next(ENDPOINTS)}")
    peers = {}
    for name in ("busy", "idle"):
        peer = peers[name] = context.socket(zmq.DEALER)
        peer.setsockopt(zmq.RCVHWM, 5)
        peer.setsockopt(zmq.ROUTING_ID, name.encode())
        peer.connect(router.getsockopt_string(zmq.LAST_ENDPOINT))
    try:
        sender = wire.Sender(router)
        for n in range(300):
            assert sender.send(b"busy", p.ok(n))
        assert sender.waiting                       # the burst did not fit the queue
        got = []

        def read():
            while peers["busy"].poll(0):
                got.append(p.decode(peers["busy"].recv_multipart(), kinds={p.OK})[1]["req"])
            sender.retry()
            return len(got) == 300
        wait_until(read, 10, 0, message="the burst to arrive")
        assert got == list(range(300)) and sender.waiting == {}
        monkeypatch.setattr(wire.Sender, "OVERFLOW_BYTES", 1000)
        sent = [sender.send(b"idle", p.ok(n, text="x" * 100)) for n in range(40)]
        assert sent[:12] == [True] * 12 and sent[-1] is False   # queues, then 1,000 bytes
        with pytest.raises(zmq.ZMQError):
            sender.send(b"nobody", p.ok(1))
    finally:
        for sock in (router, *peers.values()):
            sock.close(linger=0)


def test_what_the_database_watcher_read_keeps_each_peers_order_and_the_next_reads_go_on(
        sockets):
    """Catches the watcher's messages (read during a slow store call) kept in a queue of their
    own that the next turns handled before reading anything else: 20,000 of them left 10,000
    agents' heartbeats unread for 20 s (MySQL, 1 M jobs: 1,759 jobs fenced); and an admin's
    `status` it read held behind the whole backlog (299 of 309 unanswered within 2 s). Kept
    in the intake, a held agent's next heartbeat is renewed at once and replaces the one the
    watcher answered, its later messages stay behind, and reads pass first."""
    router, peers = sockets
    send(peers["agent"], p.EVENTS, req="events", seq=1, events=[])
    send(peers["agent"], p.HEARTBEAT, req="heartbeat", n=1)
    send(peers["admin"], p.ADMIN, req=4, command="status")
    wait_until(lambda: router.poll(0), 5, message="the messages to arrive")
    renewed = []
    intake = Intake(router, lambda frames: renewed.append(json.loads(frames[3].bytes)["n"])
                    or True)
    watched = []
    wait_until(lambda: (frames := intake.receive()) is None and len(watched) == 3
               or watched.append(frames), 5, 0, "the watcher to read them")
    for frames in watched:                       # as DatabaseWait._take_messages keeps them
        intake.keep(frames, answered=frames[2].bytes == p.HEARTBEAT)
    assert intake.waiting()
    send(peers["agent"], p.HEARTBEAT, req="heartbeat", n=2)
    send(peers["agent"], p.PING, req=5)
    send(peers["admin"], p.STATUS, req=6)
    passed = []
    wait_until(lambda: (frames := intake.next_cheap()) is not None and passed.append(frames)
               or len(renewed) == 1 and len(passed) == 2 and len(intake.held) == 4, 5, 0,
               "the next reads")
    assert [json.loads(f[3].bytes)["req"] for f in passed] == [4, 6] and renewed == [2]
    taken = []
    while intake.held:
        held = intake.take_held()
        if held is not None:
            body = json.loads(held[0][3].bytes)
            taken.append((held[0][0].bytes, body.get("n", body["req"]), held[1]))
    assert taken == [(b"agent", "events", False), (b"agent", 2, True), (b"agent", 5, False)]
    assert intake.held_bytes == 0 and not intake.waiting()


def test_held_users_messages_go_first_when_asked_and_agents_otherwise(sockets):
    """Catches one queue for all held messages: a user's request (and its `details` behind
    it) waited for 10,000 agents' held reports, 15 s and more with 1 M jobs on MySQL; and
    agents' reports starved behind a stream of submissions if users always went first."""
    router, peers = sockets
    agent = router.getsockopt_string(zmq.LAST_ENDPOINT)
    reporter = zmq.Context.instance().socket(zmq.DEALER)
    reporter.setsockopt(zmq.ROUTING_ID, b"agent:alice@h1:1")
    reporter.connect(agent)
    try:
        for seq in (1, 2):
            send(reporter, p.EVENTS, req="events", seq=seq, events=[])
        send(peers["busy"], p.SUBMIT, req=1, jobs=["true"])
        send(peers["busy"], p.SUBMIT, req=2, jobs=["true"])
        intake = Intake(router)
        wait_until(lambda: intake.next_cheap() is None and len(intake.held) == 4, 5, 0,
                   "the messages held")
        order = [json.loads(intake.take_held(users_first)[0][3].bytes).get("seq", "user")
                 for users_first in (True, False, False, True)]
        assert order == ["user", 1, 2, "user"]
    finally:
        reporter.close(linger=0)
