"""ClusterState alone (no sockets, no database): a silent host's jobs wait for the grace, then
are requeued while retries last or end lost; a re-registered agent keeps them."""

from hq.model import DOWN, UP, Host
from hq.server.core import ClusterState
from hq.store.writes import Writes


def cluster_with_running_jobs(retries):
    state = ClusterState()
    state.hosts["a"] = Host("a", cores=4, status=UP, agents={"u": b"agent"})
    _, jobs = state.stage_batch(Writes(), "u", [{"command": "sleep 9", "retries": r}
                                                for r in retries], {}, "/", now=0.0)
    state.activate(1, {}, jobs, {}, 0.0)
    for job in jobs:
        state.dispatch(job, "a", 1.0)
        state.job_started(job.id, 1, 1.0, 100 + job.id, 1.0)
    return state, jobs


def test_lost_host_jobs_wait_for_the_grace_then_requeue_or_end_lost():
    state, (again, once) = cluster_with_running_jobs([1, 0])
    state.host_lost(state.hosts["a"], 10.0, "silent")
    assert state.hosts["a"].status == DOWN and not state.hosts["a"].agents
    state.requeue_lost(15.0, grace=10.0)
    assert again.state == "running" and once.state == "running"
    state.requeue_lost(20.0, grace=10.0)
    assert again.state == "pending" and "requeued" in again.reason
    assert once.state == "lost" and once.id not in state.jobs
    assert state.hosts["a"].slots_used == 0 and state.user_slots["u"] == 0


def test_jobs_of_a_host_that_comes_back_are_kept():
    state, (job,) = cluster_with_running_jobs([1])
    host = state.hosts["a"]
    state.host_lost(host, 10.0, "silent")
    host.status, host.down_since = UP, None          # the agent registered again
    state.reconcile(host, "u", {(job.id, 1)}, 12.0, grace=2.0)
    state.requeue_lost(30.0, grace=10.0)
    assert job.state == "running" and host.slots_used == 1
    state.reconcile(host, "u", set(), 31.0, grace=2.0)   # now it does not know the job
    assert job.state == "pending" and "does not know attempt 1" in job.reason
