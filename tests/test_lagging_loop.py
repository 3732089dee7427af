"""A loop behind its messages (turns of seconds under load): what it reads now may have been
sent long ago, so silence and missing attempts are counted up to when it last found its socket
empty (Core.drained_at), not up to now; and a report sent again is not taken for another one
(tests/core_harness.py: a Core on real SQLite)."""

from tests.core_harness import CoreHarness


def test_a_heartbeat_read_late_does_not_requeue_an_attempt_sent_after_it(tmp_path):
    """Catches reconciliation against the time a heartbeat is read: a loop 30 s behind read a
    heartbeat the agent sent before the RUN reached it and requeued the job, which then ran
    twice (seen with 1,000 simulated hosts on MySQL)."""
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        h.register("alice")
        (job,) = h.submit("alice", "sleep 100")
        assert h.state(job) == "dispatched"
        h.core.drained_at = h.now - 0.5             # the socket was last empty before the RUN
        h.at(h.now + 30).heartbeat("alice")
        assert h.core.jobs[job].attempt == 1
        h.core.drained_at = h.now                   # caught up: this heartbeat is recent
        h.heartbeat("alice")
        assert h.core.jobs[job].attempt == 2        # requeued (and dispatched again)
    finally:
        h.close()


def test_an_agent_whose_heartbeats_wait_unread_is_not_declared_gone(tmp_path):
    """Catches liveness counted up to now while the loop has not read the queued heartbeats:
    every agent looked silent once the loop fell 3 heartbeats behind (hosts marked down while
    they were heartbeating)."""
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        h.register("alice")
        h.core.drained_at = h.now
        h.at(h.now + 60).turn(tick=True)
        assert "alice" in h.core.hosts["h1"].agents
        h.core.drained_at = h.now
        h.turn(tick=True)
        assert "alice" not in h.core.hosts["h1"].agents
        assert h.core.hosts["h1"].status == "down"
    finally:
        h.close()


def test_a_started_report_sent_again_does_not_kill_the_running_attempt(tmp_path):
    """Catches a KILL for a `started` report that an agent sends again because its
    acknowledgement was lost (a server killed after the commit, before sending it): the
    running job was killed and failed (600 of them after a restart with 1,000,000 pending)."""
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        h.register("alice")
        (job,) = h.submit("alice", "sleep 100")
        h.report("alice", "started", job, 1, pid=4242)
        h.report("alice", "started", job, 1, pid=4242)
        assert h.state(job) == "running"
        assert h.messages("KILL".encode()) == []
        h.report("alice", "started", job, 7, pid=4243)        # another attempt: killed
        assert h.messages("KILL".encode()) == [{"jobs": [[job, 7]]}]
    finally:
        h.close()
