"""ENDED pushes and STATUS {ids} in the server's core (no sockets: tests/core_harness.py).

Each test names in its docstring the bug it catches."""

import pytest

from hq import protocol as p
from tests.core_harness import CoreHarness


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path, outside_load=False)
    yield harness
    harness.close()


def test_the_ends_of_a_turn_go_to_their_users_user_server_in_one_message(h):
    """Catches an ENDED per job (not per turn), one sent to another user's user-server, or
    one without the exit code and batch a waiting client needs."""
    h.hello("alice")
    h.register("alice")
    ids = h.submit("alice", "true", "false", "sleep 9")
    for job in ids:
        h.report("alice", "started", job, 1, pid=1)
    h.sent.clear()
    events = [{"type": "finished", "job": job, "attempt": 1, "time": h.now, "exit_code": code}
              for job, code in zip(ids[:2], (0, 1))]
    h.request("alice", p.EVENTS, b"agent:alice@h1", seq=2, events=events)
    pushed = h.messages(p.ENDED)
    assert pushed == [{"jobs": [[ids[0], "done", 0, 1], [ids[1], "failed", 1, 1]]}]
    assert [to for to, kind, _ in h.sent if kind == p.ENDED] == [b"us:alice"]
    h.sent.clear()
    h.request("alice", p.CANCEL, ids=[ids[2]])
    assert h.messages(p.ENDED) == [{"jobs": [[ids[2], "cancelled", None, 1]]}]


def test_no_push_without_a_user_server_and_none_for_a_turn_without_ends(h):
    """Catches an ENDED sent to nobody (the loop would log each) or an empty one every turn."""
    (job,) = h.submit("bob", "true")
    h.request("bob", p.CANCEL, ids=[job])
    h.hello("alice")
    h.submit("alice", "true")
    assert h.messages(p.ENDED) == []


def test_states_of_many_jobs_name_the_unknown_ones(h):
    """Catches a bulk status that fails as a whole on one unknown id (DETAILS does), or that
    shows another user's job."""
    mine = h.submit("alice", "true", "true")
    (theirs,) = h.submit("bob", "true")
    h.request("alice", p.CANCEL, ids=[mine[1]])
    reply = h.request("alice", p.STATUS, ids=[*mine, theirs, 999])
    assert reply["states"] == {str(mine[0]): "pending", str(mine[1]): "cancelled"}
    assert reply["unknown"] == [theirs, 999]
