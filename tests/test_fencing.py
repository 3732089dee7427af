"""Fencing without processes: the agent's lease (agents/lease.py) and the server's side of it
(lease granted, heartbeats answered before the commit, fenced and late reports) on a core."""

import pytest

from agents.lease import Lease
from hq import protocol as p
from hq.config import Settings, load_settings
from hq.errors import HQError
from hq.server import handlers
from tests.core_harness import CoreHarness


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_lease_runs_from_when_the_answered_request_left():
    """Catches a lease renewed from when the reply came (a slow reply would stretch it past
    the server's requeue) and an ERROR or another kind's reply renewing it."""
    clock = Clock()
    lease = Lease(clock)
    lease.request_sent("register")
    clock.t = 103
    lease.answered("register", True, {"lease_s": 11})
    assert lease.until == 111 and not lease.expired()
    lease.request_sent("heartbeat")          # t=103
    clock.t = 105
    lease.request_sent("heartbeat")          # t=105, its reply lost
    lease.answered("heartbeat", False)       # UNKNOWN_AGENT: no renewal
    assert lease.until == 111
    clock.t = 106
    lease.request_sent("heartbeat")
    lease.answered("heartbeat", True)        # answers the one of t=105 (in order)
    assert lease.until == 116
    clock.t = 116
    assert lease.expired()


def test_a_heartbeats_answer_grants_the_lease_of_its_interval_and_register_starts_anew():
    """Catches a lease granted in a HEARTBEAT reply ignored (an agent told to heartbeat less
    often would be fenced between two heartbeats), a shorter one cutting a lease granted
    before, and a REGISTER's lease added to one granted to the server's previous record."""
    clock = Clock()
    lease = Lease(clock)
    lease.request_sent("register")
    lease.answered("register", True, {"lease_s": 11})
    assert lease.until == 111
    clock.t = 102
    lease.request_sent("heartbeat")
    lease.answered("heartbeat", True, {"lease_s": 23})     # declared a 6 s interval
    assert lease.until == 125
    clock.t = 108
    lease.request_sent("heartbeat")
    lease.answered("heartbeat", True, {"lease_s": 11})
    assert lease.until == 125
    clock.t = 110
    lease.request_sent("register")
    lease.answered("register", True, {"lease_s": 11})
    assert lease.until == 121


def test_no_lease_granted_means_no_fencing_and_a_new_connection_forgets_requests():
    """Catches an agent that fences under a server that grants no lease (older servers, the
    tests' play servers), and replies counted for requests lost with an old socket."""
    clock = Clock()
    lease = Lease(clock)
    lease.request_sent("register")
    lease.answered("register", True, {"heartbeat_s": 2})
    clock.t = 10 ** 6
    assert not lease.expired() and lease.remaining() is None
    lease.request_sent("heartbeat")
    lease.new_connection()
    lease.answered("heartbeat", True)        # nothing in flight: ignored
    assert lease.until is None


def test_a_lease_with_time_to_spare_gives_way_to_the_leases_that_end_sooner():
    """Catches agents that all reconnect at once to a restarted server: 10,000 took 10 s to
    be back on 2 cores, and the host reporters' 11 s leases (they heartbeat most often) ended
    on the way. An agent with more time left than a REGISTER grants waits in the later half of
    that surplus and still has a whole fresh lease after; the others do not wait."""
    clock = Clock()
    lease = Lease(clock)
    assert lease.relink_delay() == 0.0                      # no lease: nothing to spare
    lease.answered("register", True, {"lease_s": 11, "n": lease.request_sent("register")})
    assert lease.relink_delay() == 0.0                      # a reporter's lease
    clock.t = 102
    lease.answered("heartbeat", True, {"lease_s": 23, "n": lease.request_sent("heartbeat")})
    clock.t = 105                                           # 20 s left: 9 s to spare
    delays = [lease.relink_delay() for _ in range(200)]
    assert all(4.5 <= d <= 9 for d in delays) and max(delays) - min(delays) > 2
    assert all(lease.remaining() - d >= 11 for d in delays)
    clock.t = 113.5                                         # 11.5 s left: less than 1 to spare
    assert lease.relink_delay() == 0.0


def test_reports_go_again_only_once_the_server_answered_something_sent_after_them():
    """Catches reports resent every 5 s to a server that is only behind (10,000 agents' copies
    multiplied its backlog), and reports whose answer was lost never sent again: 5 s once a
    request sent after them is answered, 60 s at most; 5 s from a server numbering nothing."""
    lease = Lease(Clock())
    assert lease.resend_at(100.0, lease.next_n) == 105.0           # numbers nothing (yet)
    lease.answered("register", True, {"lease_s": 11, "n": lease.request_sent("register")})
    mark = lease.next_n                                             # reports sent now
    beat = lease.request_sent("heartbeat")
    assert lease.resend_at(100.0, mark) == 160.0                   # nothing answered since
    lease.answered("heartbeat", True, {"lease_s": 11, "n": beat})
    assert lease.resend_at(100.0, mark) == 105.0
    assert lease.resend_at(100.0, lease.next_n) == 160.0           # sent after that answer
    ahead = lease.next_n                    # answered ahead of its turn (held behind reports)
    lease.answered("heartbeat", True, {"lease_s": 11, "n": lease.request_sent("heartbeat"),
                                       "behind": True})
    assert lease.resend_at(100.0, ahead) == 160.0


def test_a_numbered_answer_renews_from_its_own_request_after_replies_were_lost():
    """Catches a lease renewed from the wrong request once replies were lost on a connection
    that stayed (the agent keeps its socket across a server restart): in order, the answer to
    the heartbeat of t=112 would be taken for the one of t=104 and the lease end too early;
    and an answer older than one already matched (or an ERROR) must not renew it."""
    clock = Clock()
    lease = Lease(clock)
    first = lease.request_sent("register")
    lease.answered("register", True, {"lease_s": 11, "n": first})
    assert lease.until == 111
    clock.t = 104
    lost = lease.request_sent("heartbeat")       # the server restarts: no answer
    clock.t = 112
    again = lease.request_sent("register")
    lease.answered("register", True, {"lease_s": 11, "n": again})
    assert lease.until == 123
    clock.t = 114
    beat = lease.request_sent("heartbeat")
    lease.answered("heartbeat", True, {"lease_s": 11, "n": beat})
    assert lease.until == 125
    lease.answered("heartbeat", True, {"lease_s": 11, "n": lost})    # already passed over
    lease.answered("heartbeat", False)
    assert lease.until == 125 and not lease.sent["heartbeat"]
    unsent = lease.request_sent("heartbeat")
    lease.withdraw("heartbeat", unsent)
    lease.answered("heartbeat", True, {"lease_s": 11, "n": unsent})
    assert lease.until == 125


def test_the_server_repeats_the_request_number_of_register_and_heartbeat(h):
    """Catches a server that answers REGISTER or HEARTBEAT without the request's `n` (agents
    would fall back to order and renew from the wrong request), or echoes a bad one."""
    agent = b"agent:alice@h1"
    h.request("alice", p.REGISTER, agent, host="h1", cores=4, os="Linux", n=41)
    assert h.messages(p.OK, agent)[-1]["n"] == 41
    for n, echoed in ((42, 42), ("42", None), (-1, None), (True, None)):
        handlers.handle(h.core, handlers.Peer(agent, "alice"), p.HEARTBEAT,
                        {"req": "heartbeat", "running": [], "n": n})
        (identity, frames), = h.core.outbox.take_now()
        assert p.decode(frames, p.ALL_KINDS)[1].get("n") == echoed


def test_default_lease_ends_before_the_requeue_and_bad_ones_are_refused(tmp_path):
    """Catches a lease that outlives the server's patience (two attempts at once) or that
    ends before the server even misses the agent."""
    s = Settings()
    assert 3 * s.heartbeat_s < s.agent_lease_s == 11 < s.requeue_after_s == 16
    (tmp_path / "hq.cfg").write_text("[server]\nlease_s = 17\n")
    with pytest.raises(HQError, match="lease_s must be"):
        load_settings(str(tmp_path))
    (tmp_path / "hq.cfg").write_text("[server]\nlease_s = 9\n")
    assert load_settings(str(tmp_path)).agent_lease_s == 9


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path, outside_load=False)
    yield harness
    harness.close()


def running_job(h, **defaults):
    h.register("alice")
    (job,) = h.submit("alice", "sleep 100", **defaults)
    h.report("alice", "started", job, 1, pid=4242)
    assert h.state(job) == "running"
    return job


def test_register_grants_the_lease_and_heartbeats_are_answered_before_the_commit(h):
    """Catches heartbeat replies held for the group commit: during a database outage agents
    would hear nothing and fence every job."""
    h.request("alice", p.REGISTER, b"agent:alice@h1", host="h1", cores=4, os="Linux")
    assert h.messages(p.OK, b"agent:alice@h1")[-1]["lease_s"] == h.core.settings.agent_lease_s
    handlers.handle(h.core, handlers.Peer(b"agent:alice@h1", "alice"), p.HEARTBEAT,
                    {"req": "heartbeat", "running": []})
    (identity, frames), = h.core.outbox.take_now()
    assert identity == b"agent:alice@h1" and p.decode(frames, p.ALL_KINDS)[1]["req"] == \
        "heartbeat"
    assert not h.core.outbox.messages


def test_a_heartbeats_renewal_alone_keeps_its_agent_alive_and_grants_its_lease(h):
    """Catches a heartbeat renewed ahead of its turn (held behind its agent's reports) whose
    agent the server would still count gone: the lease granted must be backed by the
    server's own deadline, or it requeues jobs the agent may still run."""
    h.request("alice", p.REGISTER, b"agent:alice@h1", host="h1", cores=4, os="Linux")
    agent = h.core.agents[b"agent:alice@h1"]
    before = agent.deadline
    h.core.now += 5
    reply = handlers.agent.renew(h.core, handlers.Peer(b"agent:alice@h1", "alice"),
                                 {"req": "heartbeat", "every": 2, "n": 9})
    assert reply["n"] == 9 and reply["lease_s"] == h.core.settings.agent_lease_s
    assert agent.deadline >= before + 5 and agent.last_seen == h.core.now
    with pytest.raises(HQError):
        handlers.agent.renew(h.core, handlers.Peer(b"agent:bob@h1", "bob"), {"req": "x"})


def test_a_fenced_report_requeues_the_attempt_and_a_late_one_is_stale(h):
    """Catches a fenced attempt counted as failed (its job not retried) and a fenced report
    after the requeue taken as the job's end."""
    job = running_job(h, retries=1)
    h.report("alice", "finished", job, 1, signal=9, reason="fenced: no answer")
    assert h.state(job) in ("pending", "dispatched")
    assert h.store.get_jobs([job])[0]["attempt"] in (1, 2)
    (late,) = h.submit("alice", "sleep 100", retries=1)
    h.report("alice", "started", late, 1, pid=4243)
    h.at(h.now + 7).turn(tick=True)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert h.state(late) == "pending"
    h.register("alice")                       # back: the retry goes to it
    assert (late, 2) in h.runs_to("alice")
    h.report("alice", "finished", late, 1, signal=9, reason="fenced: no answer")
    row = h.store.get_jobs([late])[0]
    assert row["state"] == "dispatched" and row["attempt"] == 2
    assert [e["state"] for e in h.store.job_events([late])][-1] == "stale"


def test_an_end_reported_after_the_requeue_counts_while_the_retry_waits(h):
    """Catches a job run again although its cut-off attempt ended (before its agent's lease
    expired) and its result comes back before the retry was dispatched: the returning agent
    lists it in REGISTER, so the retry is held back until the report arrives."""
    job = running_job(h, retries=1)
    h.at(h.now + 7).turn(tick=True)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert h.state(job) == "pending"
    h.register("alice", reported=[[job, 1]])       # back, the end of attempt 1 unacknowledged
    assert (job, 2) not in h.runs_to("alice")
    h.report("alice", "finished", job, 1, exit_code=0)
    row = h.store.get_jobs([job])[0]
    assert row["state"] == "done" and row["attempt"] == 1 and row["host"] == "h1"


def test_an_unknown_outcome_after_the_requeue_does_not_count(h):
    """Catches a requeued job failed by its adopted attempt's `unknown outcome` (the agent was
    killed with its jobs; a successor found them gone without a status): the retry runs."""
    job = running_job(h, retries=1)
    h.at(h.now + 7).turn(tick=True)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    h.register("alice", reported=[[job, 1]])
    h.report("alice", "finished", job, 1, exit_code=None, error="unknown outcome")
    assert (job, 2) in h.runs_to("alice") and h.state(job) == "dispatched"


def test_a_retry_waits_for_an_awaited_result_only_so_long(h):
    """Catches a retry held back for ever when the promised report never comes."""
    job = running_job(h, retries=1)
    h.at(h.now + 7).turn(tick=True)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    h.register("alice", reported=[[job, 1]])
    assert (job, 2) not in h.runs_to("alice")
    h.at(h.now + 11)
    h.core.release_awaited(h.now)
    h.heartbeat("alice", reported=[[job, 1]])
    assert (job, 2) in h.runs_to("alice")
