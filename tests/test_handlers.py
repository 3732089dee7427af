"""The server's handlers against a Core on a real SQLite database, without sockets: what each
request changes, records and sends (tests/core_harness.py drives the core as the loop does).

Each test names in its docstring the bug it catches."""

import time

import pytest

from hq import protocol as p
from hq.config import HostEntry
from hq.errors import BAD_REQUEST, PERMISSION_DENIED, UNKNOWN_JOB, HQError
from hq.server import fleet, handlers
from hq.server.core import UNKNOWN_OUTCOME
from tests.core_harness import CoreHarness


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path, outside_load=False)
    yield harness
    harness.close()


def running_job(h, user="alice", **defaults):
    """A job of `user` running on h1 (its agent registered, RUN sent, started reported)."""
    h.register(user)
    (job,) = h.submit(user, "sleep 100", **defaults)
    assert (job, 1) in h.runs_to(user)
    h.report(user, "started", job, 1, pid=4242)
    assert h.state(job) == "running"
    return job


def test_submit_is_answered_after_its_commit_and_dispatched_to_the_users_agent(h):
    """Catches a reply or RUN sent before the rows are committed, or a RUN to another agent."""
    h.register("alice")
    h.register("bob")
    ids = h.submit("alice", "echo a", "echo b")
    assert [h.state(i) for i in ids] == ["dispatched", "dispatched"]
    assert sorted(h.runs_to("alice")) == [(ids[0], 1), (ids[1], 1)]
    assert h.runs_to("bob") == []
    run = h.messages(p.RUN)[0]
    assert run["database_id"] == h.store.database_id() and run["slots"] == 4


def test_cancel_kills_the_running_attempt_and_keeps_its_slots_until_it_ends(h):
    """Catches a cancel that sends no KILL, or frees the slots before the process ended."""
    job = running_job(h)
    reply = h.request("alice", p.CANCEL, ids=[job])
    assert reply["changed"] == [job] and h.state(job) == "cancelled"
    assert h.messages(p.KILL, b"agent:alice@h1")[-1] == {"jobs": [[job, 1]]}
    assert h.core.hosts["h1"].slots_used == 1
    h.report("alice", "finished", job, 1, signal=15, exit_code=None)
    assert h.core.hosts["h1"].slots_used == 0 and h.state(job) == "cancelled"


def test_a_user_cannot_cancel_another_users_job_or_batch(h):
    """Catches a missing owner check in CANCEL (by ids or by batch)."""
    job = running_job(h)
    batch = h.store.get_jobs([job])[0]["batch"]
    with pytest.raises(HQError) as refused:
        h.request("bob", p.CANCEL, ids=[job])
    assert refused.value.code == UNKNOWN_JOB
    with pytest.raises(HQError) as refused:
        h.request("bob", p.CANCEL, batch=batch)
    assert refused.value.code == UNKNOWN_JOB and h.state(job) == "running"


def test_batch_cancel_cancels_every_live_job_of_the_batch_and_nothing_else(h):
    """Catches a batch cancel that misses waiting jobs or touches another batch."""
    assert h.request("root", p.ADMIN, command="deactivate")["cluster"] == "inactive"
    first = h.submit("alice", "true", "true", "true")
    other = h.submit("alice", "true")
    batch = h.store.get_jobs(first)[0]["batch"]
    reply = h.request("alice", p.CANCEL, batch=batch)
    assert sorted(reply["changed"]) == first
    assert [h.state(i) for i in first] == ["cancelled"] * 3 and h.state(other[0]) == "pending"
    with pytest.raises(HQError) as refused:      # later chunks of a cancelled batch
        h.request("alice", p.SUBMIT, jobs=["true"], batch=batch, env={}, cwd="/")
    assert refused.value.code == BAD_REQUEST


def test_host_facts_come_from_the_first_agent_and_another_users_report_is_not_believed(h):
    """Issue 11 point 3: catches bob's forged REGISTER (1000 cores) changing alice's slots."""
    h.register("alice", cores=4)
    h.register("bob", cores=1000, memory=1 << 40)
    host = h.core.hosts["h1"]
    assert host.cores == 4 and host.memory_total == 8 << 30
    assert "agent of bob reports 1000 cores" in host.facts_note
    h.register("root", cores=8)                 # an admin's agent is believed
    assert host.cores == 8 and host.facts_note == ""


def test_metrics_come_from_one_agent_per_host(h):
    """Catches a second user's agent overwriting the host's load (outside load, memory), and
    agents not told whether to gather the host's metrics: only the reporter does, and its
    successor is told with its next heartbeat's reply."""
    h.register("alice")
    h.register("bob")
    assert h.heartbeat("alice", load1=0.5, foreign_load=0.0)["metrics"] is True
    assert h.heartbeat("bob", load1=99.0, foreign_load=4.0)["metrics"] is False
    assert h.core.hosts["h1"].load1 == 0.5 and h.core.hosts["h1"].foreign_load == 0.0
    h.request("alice", p.BYE, b"agent:alice@h1")
    assert h.heartbeat("bob", load1=3.0)["metrics"] is True
    assert h.core.hosts["h1"].load1 == 3.0


def test_bye_is_refused_while_the_agent_holds_work_and_forgets_it_when_idle(h):
    """Catches an agent let go with jobs assigned (they would be lost) or never forgotten."""
    job = running_job(h)
    assert h.request("alice", p.BYE, b"agent:alice@h1")["bye"] is False
    h.report("alice", "finished", job, 1, exit_code=0)
    assert h.request("alice", p.BYE, b"agent:alice@h1")["bye"] is True
    assert "alice" not in h.core.hosts["h1"].agents and h.core.hosts["h1"].status == "unknown"
    with pytest.raises(HQError) as refused:
        h.heartbeat("alice")
    assert refused.value.code == "UNKNOWN_AGENT"


def test_a_dead_agent_is_gone_on_its_own_while_another_users_agent_keeps_the_host_up(h):
    """Issue 11 point 1: catches liveness per host (alice's dead agent hidden behind bob's
    live one: her job stayed `running` and no new agent was asked for)."""
    h.hello("alice")
    job = running_job(h)
    h.register("bob")
    grace = h.core.settings.requeue_grace_s
    h.at(h.now + 7)
    h.heartbeat("bob")                               # bob's agent lives; alice's is silent
    h.turn(tick=True)
    host = h.core.hosts["h1"]
    assert host.status == "up" and "alice" not in host.agents and "bob" in host.agents
    assert h.messages(p.SPAWN, b"us:alice")[-1]["hosts"][0]["name"] == "h1"
    assert h.state(job) == "running"                 # her successor may adopt it ...
    h.at(h.now + grace)
    h.heartbeat("bob")
    h.turn(tick=True)
    assert h.state(job) == "pending"                 # ... for the grace, then it is requeued


def test_an_agent_back_within_the_grace_keeps_its_jobs(h):
    """Catches a requeue of jobs whose (new) agent reports them running."""
    job = running_job(h)
    h.at(h.now + 7).turn(tick=True)
    assert h.core.hosts["h1"].status == "down"
    h.register("alice", running=[(job, 1)])
    h.at(h.now + 60)
    h.heartbeat("alice", running=[(job, 1)])
    h.turn(tick=True)
    assert h.state(job) == "running" and h.core.hosts["h1"].status == "up"


def test_a_lost_host_requeues_while_retries_last_else_the_job_is_lost(h):
    """Catches requeue without retries left, or before the grace."""
    again = running_job(h, retries=1)
    (once,) = h.submit("alice", "sleep 9", retries=0)
    h.at(h.now + 7).turn(tick=True)
    assert h.core.hosts["h1"].status == "down"
    assert h.state(again) == "running" and h.state(once) == "dispatched"
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert h.state(again) == "pending" and h.state(once) == "lost"
    assert h.core.user_slots["alice"] == 0


def test_a_late_report_of_an_earlier_attempt_never_ends_the_current_one(h):
    """Issue 14: a job's end counts once. Catches job_finished ignoring the attempt number
    (attempt 1's late `done` ended attempt 2's run). Checked by dropping `job.attempt !=
    attempt` from Core.job_finished's stale test: the job ends `done` at the late report."""
    job = running_job(h, retries=2)
    h.at(h.now + 7).turn(tick=True)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert h.state(job) == "pending"
    h.register("alice")
    assert (job, 2) in h.runs_to("alice")
    h.report("alice", "finished", job, 1, exit_code=0)           # attempt 1, late
    assert h.state(job) == "dispatched"
    h.report("alice", "finished", job, 2, exit_code=3)
    row = h.store.get_jobs([job])[0]
    assert row["state"] == "failed" and row["exit_code"] == 3 and row["attempt"] == 2


def test_an_agent_cannot_report_another_users_job(h):
    """Issue 14: an agent reports only its own user's jobs. Catches an ownership check that
    always answers yes. Checked with `return True` at the top of handlers/agent._ours: bob's
    agent ends alice's job."""
    job = running_job(h)
    h.register("bob")
    h.report("bob", "finished", job, 1, exit_code=0)
    assert h.state(job) == "running"


def test_no_requeue_decision_rests_on_a_run_that_was_never_sent(h):
    """Issue 12 point 1: catches the heartbeat's reconciliation requeueing an attempt whose
    RUN still waited for its commit (during a database outage the job was then lost)."""
    h.register("alice")
    core = h.core
    (job,) = h.submit("alice", "true")
    held = core.attempts[(job, 1)]
    held.sent = None                    # as if the commit that recorded it had failed
    core.db_ok = False
    h.at(h.now + 30)
    core.reconcile("h1", "alice", set(), h.now, grace=5)
    assert core.jobs[job].state == "dispatched"
    core.db_ok, held.sent = True, h.now
    core.reconcile("h1", "alice", set(), h.now + 6, grace=5)
    assert job not in core.jobs or core.jobs[job].state == "pending"


def test_an_environment_with_nul_is_refused_at_submit(h):
    """Issue 11 point 2: catches a NUL byte reaching the agent (it died on it)."""
    for env in ({"X": "a\0b"}, {"A\0B": "x"}, {"A=B": "x"}, {"": "x"}):
        with pytest.raises(HQError) as refused:
            h.request("alice", p.SUBMIT, jobs=["true"], env=env, cwd="/")
        assert refused.value.code == BAD_REQUEST


def test_reservations_belong_to_their_requester_and_serve_only_their_users(h):
    """Issue 10/11: catches the owner taken from the body, or a code usable by anyone."""
    h.register("alice")
    made = h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 2]], users=["alice"],
                     user="mallory")
    code = made["code"]
    assert h.core.reservations[code]["user"] == "root" and made["users"] == ["alice"]
    assert h.submit("alice", "true", reservation=code)
    with pytest.raises(HQError) as refused:
        h.submit("bob", "true", reservation=code)
    assert refused.value.code == PERMISSION_DENIED
    assert h.request("bob", p.ADMIN, command="reservations")["reservations"] == []
    with pytest.raises(HQError) as refused:
        h.request("bob", p.ADMIN, command="reserve", hosts=[["h1", 1]])
    assert refused.value.code == PERMISSION_DENIED


def test_dropping_a_reservation_fails_its_waiting_jobs(h):
    """Catches jobs left waiting forever for slots that no longer exist."""
    code = h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 2]],
                     users=["alice"])["code"]
    (job,) = h.submit("alice", "true", reservation=code)
    assert h.request("root", p.ADMIN, command="unreserve", arg=code)["failed_jobs"] == [job]
    assert h.state(job) == "failed"


def test_what_concerns_other_users_needs_the_admin_role(h):
    """Issue 11 point 6: catches `hq-admin jobs --user`, lsusers, lsuser and hostinfo showing
    another user's jobs to a user who is not an admin."""
    alice_job = running_job(h)
    for command, extra in (("jobs", {"for_user": "alice"}), ("lsusers", {}),
                           ("lsuser", {"arg": "alice"})):
        with pytest.raises(HQError) as refused:
            h.request("bob", p.ADMIN, command=command, **extra)
        assert refused.value.code == PERMISSION_DENIED
    shown = h.request("bob", p.ADMIN, command="hostinfo", arg="h1")
    assert shown["jobs"] == [] and shown["host"]["agents"] == []
    shown = h.request("root", p.ADMIN, command="hostinfo", arg="h1")
    assert [j["id"] for j in shown["jobs"]] == [alice_job]
    assert h.request("bob", p.ADMIN, command="lsuser")["user"]["name"] == "bob"


def test_the_last_admin_cannot_be_disabled_and_a_disabled_users_agent_still_reports(h):
    """Issue 14: catches a cluster left without an admin, and a disabled user's running job
    whose end can no longer be reported."""
    with pytest.raises(HQError) as refused:
        h.request("root", p.ADMIN, command="disableuser", arg="root")
    assert refused.value.code == PERMISSION_DENIED
    job = running_job(h)
    h.request("root", p.ADMIN, command="disableuser", arg="alice")
    with pytest.raises(HQError) as refused:
        h.submit("alice", "true")
    assert refused.value.code == PERMISSION_DENIED
    h.register("alice", running=[(job, 1)])
    h.report("alice", "finished", job, 1, exit_code=0)
    assert h.state(job) == "done"


def test_listings_are_paged(h):
    """Issue 11 point 5: catches an unbounded LIST (one request could freeze the server)."""
    h.request("root", p.ADMIN, command="deactivate")
    h.request("alice", p.SUBMIT, jobs=["true"] * 2500, env={}, cwd="/")
    first = h.request("alice", p.LIST)
    assert len(first["jobs"]) == 1000 and first["more"] is True
    second = h.request("alice", p.LIST, **first["next"])
    assert second["jobs"][0]["id"] == first["jobs"][-1]["id"] + 1
    newest = h.request("alice", p.LIST, limit=50000)        # clamped to the maximum page
    assert len(newest["jobs"]) == 2000 and newest["more"] is True
    assert newest["jobs"][-1]["id"] == first["jobs"][0]["id"] + 2499
    assert h.request("bob", p.LIST)["jobs"] == []


def test_after_a_cancelled_or_lost_parent_fails_the_child(h):
    """Issue 14: catches dependents released unless the parent failed (a cancelled or lost
    parent let its child run). The parents are live when the children are submitted (the
    release path) and one is already cancelled (the settle path); checked by putting back
    `ended_state != FAILED` in Core._release_dependents and `state == FAILED` in
    settle_dependencies: each fails this test."""
    lost_parent = running_job(h, retries=0)
    (cancelled_parent,) = h.submit("alice", "sleep 100", host_req="h1", hold=True)
    (done_parent,) = h.submit("alice", "sleep 1")
    children = [h.submit("alice", "true", depends_on=str(parent))[0]
                for parent in (lost_parent, cancelled_parent, done_parent)]
    (grandchild,) = h.submit("alice", "true", depends_on=str(children[1]))
    assert [h.state(c) for c in children + [grandchild]] == ["pending"] * 4
    h.request("alice", p.CANCEL, ids=[cancelled_parent])
    h.at(h.now + 7).turn(tick=True)                         # the agent went silent ...
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert h.state(lost_parent) == "lost"                   # ... its jobs are lost
    h.register("alice")
    h.report("alice", "finished", done_parent, h.store.get_jobs([done_parent])[0]["attempt"],
             exit_code=0)
    rows = h.store.get_jobs(children + [grandchild])
    assert [(r["state"], r["reason"]) for r in rows] == [
        ("failed", "dependency"), ("failed", "dependency"), ("dispatched", ""),
        ("failed", "dependency")]
    (late,) = h.submit("alice", "true", depends_on=str(cancelled_parent))
    assert h.store.get_jobs([late])[0]["reason"] == "dependency"     # already ended
    assert story(h, late)[-1] == ("failed", 0, f"dependency: job {cancelled_parent} ended "
                                               "cancelled")
    (after_done,) = h.submit("alice", "true", depends_on=str(done_parent))
    assert h.state(after_done) == "dispatched"


def test_another_users_jobs_and_batches_are_unknown_to_a_user(h):
    """Issue 14: a user must not learn about another's jobs. Catches a missing owner check in
    STATUS/LIST of a batch (`wait --batch`, `list --batch`), HOLD, RELEASE, DETAILS and
    `--after` (which told bob whether alice's job exists and how it ended, through his job's
    reason): each answers as for a job that does not exist, and alice's jobs do not change.
    Checked by removing each owner check: the matching assertion fails."""
    h.request("root", p.ADMIN, command="deactivate")
    (waiting, held) = h.submit("alice", "true", "true")
    h.request("alice", p.HOLD, ids=[held])
    (ended,) = h.submit("alice", "true")
    h.request("alice", p.CANCEL, ids=[ended])
    batch = h.store.get_jobs([waiting])[0]["batch"]
    nowhere = 10 ** 6
    for kind, body in ((p.STATUS, {"batch": batch}), (p.LIST, {"batch": batch}),
                       (p.CANCEL, {"batch": batch}), (p.HOLD, {"ids": [waiting]}),
                       (p.RELEASE, {"ids": [held]}), (p.CANCEL, {"ids": [waiting]}),
                       (p.DETAILS, {"ids": [waiting]}),
                       (p.DETAILS, {"ids": [ended], "finished_only": True})):
        with pytest.raises(HQError) as refused:
            h.request("bob", kind, **body)
        assert refused.value.code == UNKNOWN_JOB, (kind, body)
    answers = []
    for parent in (waiting, ended, nowhere):
        with pytest.raises(HQError) as refused:
            h.submit("bob", "true", depends_on=str(parent))
        assert refused.value.code == UNKNOWN_JOB
        answers.append(str(refused.value).replace(str(parent), "N"))
    assert answers[0] == answers[1] == answers[2], "bob can tell alice's jobs from none"
    assert [h.state(i) for i in (waiting, held, ended)] == ["pending", "held", "cancelled"]
    assert h.request("alice", p.STATUS, batch=batch)["counts"]["held"] == 1


def test_an_agent_is_gone_after_three_silent_heartbeats_not_before(h):
    """Issue 14: catches SILENT_HEARTBEATS changed (3 -> 30 left a dead agent's jobs running
    for a minute; 3 -> 2 forgets agents that are only late). heartbeat_s is 2 s here: still
    there after 5.9 s of silence, gone after 6.1 s. Checked with 30 and with 2."""
    job = running_job(h)
    start = h.now
    h.at(start + 5.9).turn(tick=True)
    assert "alice" in h.core.hosts["h1"].agents and h.core.hosts["h1"].status == "up"
    h.at(start + 6.1).turn(tick=True)
    assert "alice" not in h.core.hosts["h1"].agents and h.core.hosts["h1"].status == "down"
    assert h.state(job) == "running"


def test_other_users_agents_heartbeat_less_often_and_are_gone_after_their_own_silence(h):
    """Catches every agent of a host told to heartbeat every heartbeat_s (5,000 heartbeats a
    second for 10 users on 1,000 hosts), an agent gone after 3 heartbeat_s when it keeps a
    longer interval, a deadline cut short when the agent is told to heartbeat faster (it may
    not have heard yet: its lease holds), and a lease that outlasts the server's patience:
    the lease granted for each declared interval ends before the server may requeue."""
    grace = h.core.settings.requeue_grace_s
    job = running_job(h)                                     # the host is busy
    mine = [(job, 1)]
    h.register("bob")
    assert h.heartbeat("alice", running=mine)["every"] == 2
    told = h.heartbeat("bob")
    assert (told["every"], told["lease_s"]) == (6, 11)     # declared nothing: 2 s
    start = h.now
    told = h.heartbeat("bob", every=6)
    assert told["lease_s"] == 23 and told["lease_s"] < 18 + grace
    bob = h.core.agents[b"agent:bob@h1"]
    for t in (2, 4, 6, 8, 10, 12, 14, 16):
        h.at(start + t).heartbeat("alice", running=mine)
        h.turn(tick=True)
    assert "bob" in h.core.hosts["h1"].agents
    h.at(start + 18.1).heartbeat("alice", running=mine)
    h.turn(tick=True)
    assert "bob" not in h.core.hosts["h1"].agents
    h.register("bob")
    h.report("alice", "finished", job, 1, exit_code=0)
    h.request("alice", p.BYE, b"agent:alice@h1")
    told = h.heartbeat("bob", every=6)                       # now the host's (idle) reporter
    assert (told["every"], told["lease_s"]) == (4, 23)
    bob = h.core.agents[b"agent:bob@h1"]
    assert bob.deadline == h.now + 18                         # it keeps 6 s until it hears
    h.at(h.now + 2).heartbeat("bob", every=2)
    assert bob.deadline == h.now - 2 + 18                     # never moved back
    h.at(h.now + 2).heartbeat("bob", every=1e9)               # clamped to what may be asked
    assert bob.deadline == h.now + 18


def test_an_idle_hosts_reporter_heartbeats_half_as_often_until_a_job_is_held_there(h):
    """Catches an idle agent told to heartbeat every heartbeat_s (it then costs its host twice
    what it needs: issue 15's 0.05 % of a core), or a busy host's reporter left at the idle
    interval (its metrics, which placement reads, would be 4 s old), or a deadline that does
    not follow: 3 of the idle intervals, with the lease granted for the interval declared."""
    h.register("alice")
    told = h.heartbeat("alice")
    assert (told["every"], told["metrics"]) == (4, True)
    told = h.heartbeat("alice", every=4)
    agent = h.core.agents[b"agent:alice@h1"]
    assert told["lease_s"] == h.core.settings.agent_lease_s + 3 * 2
    assert agent.deadline == h.now + 12
    h.register("bob")
    (job,) = h.submit("bob", "sleep 100")
    assert (job, 1) in h.runs_to("bob")                      # another user's job: busy host
    assert h.heartbeat("alice", every=4)["every"] == 2
    assert agent.deadline == h.now + 12                      # it keeps 4 s until it hears
    h.report("bob", "started", job, 1, pid=4242)
    h.report("bob", "finished", job, 1, exit_code=0)
    assert h.heartbeat("alice", every=2)["every"] == 4       # idle again


def test_max_rss_and_the_signal_of_an_attempt_are_recorded(h):
    """Issue 14: catches the finished report's max_rss (and signal) not written to the job's
    row, also for a cancelled job whose process ends after the cancel. Checked by dropping
    max_rss from job_finished's columns and from _late_result."""
    job = running_job(h)
    h.report("alice", "finished", job, 1, exit_code=0, max_rss=12345)
    assert h.store.get_jobs([job])[0]["max_rss"] == 12345
    other = running_job(h)
    h.request("alice", p.CANCEL, ids=[other])
    h.report("alice", "finished", other, 1, exit_code=None, signal=15, max_rss=777)
    row = h.store.get_jobs([other])[0]
    assert (row["state"], row["max_rss"], row["term_signal"]) == ("cancelled", 777, 15)


def test_only_an_admin_registers_keys(h):
    """Issue 14: catches `adduser` without the role check (a user registering a key for
    another name, or for themselves as someone else). Checked by adding adduser to
    FOR_EVERYONE in handlers/admin.py."""
    key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    with pytest.raises(HQError) as refused:
        h.request("bob", p.ADMIN, command="adduser", arg="mallory", key=key)
    assert refused.value.code == PERMISSION_DENIED and "mallory" not in h.core.users
    assert h.request("root", p.ADMIN, command="adduser", arg="mallory", key=key)["roles"] == \
        ["USER"]
    assert h.core.users["mallory"]["key"] == key and h.core.keys_changed
    assert h.core.users["mallory"]["enabled"] is True      # a new user may submit


def test_retries_requeue_a_job_lost_with_its_host_up_to_n_times(h):
    """Issue 14: `-r N` with N > 1. Catches retries counted as one whatever N, or requeued
    without end: with retries=2, attempts 1 and 2 lost with their agent are requeued (each
    runs again as a new attempt), attempt 3 ends the job `lost`. Checked with
    `job.attempt <= 1` in Core.attempt_gone: the job is lost at attempt 2."""
    job = running_job(h, retries=2)
    grace = h.core.settings.requeue_grace_s
    for attempt, after in ((1, "pending"), (2, "pending"), (3, "lost")):
        if attempt > 1:
            h.register("alice")
            assert (job, attempt) in h.runs_to("alice")
        h.at(h.now + 7).turn(tick=True)
        h.at(h.now + grace).turn(tick=True)
        row = h.store.get_jobs([job])[0]
        assert (row["state"], row["attempt"]) == (after, attempt)
    assert h.core.user_slots["alice"] == 0


def test_after_a_restart_an_agent_that_never_comes_back_gives_up_its_jobs(h, tmp_path):
    """Issue 14: a server restart where an agent never comes back. Catches attempts held
    forever (the host `up` and its slots taken for good) and a restarted server giving up
    before 3 heartbeats of the longest interval (another user's agent heartbeats every 6 s:
    its lease holds 23 s) and the grace: reloaded attempts hold their slots, the host counts as
    up; after 3 heartbeats (6 s) it is down, 18 s and the grace later the job with a retry
    left is requeued and the other lost. Checked with fleet.expect_agents emptied: nothing
    ends."""
    again = running_job(h, retries=1)
    (once,) = h.submit("alice", "sleep 9", retries=0)
    assert h.state(once) == "dispatched"
    h.close()
    server = CoreHarness(tmp_path, outside_load=False)      # kill -9, start: same database
    try:
        start = h.now + 100
        server.at(start)
        fleet.expect_agents(server.core, start)
        host = server.core.hosts["h1"]
        assert host.status == "up" and host.slots_used == 2
        grace = server.core.settings.requeue_grace_s
        server.at(start + 5.9).turn(tick=True)
        assert host.status == "up"
        server.at(start + 6.1).turn(tick=True)
        assert host.status == "down" and host.slots_used == 2
        server.at(start + 18 + grace - 0.1).turn(tick=True)
        assert (server.state(again), server.state(once)) == ("running", "dispatched")
        server.at(start + 18 + grace + 0.1).turn(tick=True)
        assert (server.state(again), server.state(once)) == ("pending", "lost")
        assert host.slots_used == 0 and server.core.user_slots["alice"] == 0
    finally:
        server.close()


def test_reload_adds_hosts_drains_removed_ones_and_follows_the_users_file(tmp_path):
    """Catches `hq-admin reload` not adding a new host (with its slots and groups), not
    draining a removed one, or not following roles changed in etc/users (mutmut: reload's
    fleet.configure_hosts and Core.users_configured were run by no fast test). Checked with the
    groups dropped in configure_hosts: fails."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "cluster.tab").write_text("h1\t4\t-\t127.0.0.1\nh2\t8\tbig,gpu\t127.0.0.1\n")
    (etc / "users").write_text("alice USER,ADMIN\nbob USER\ncarol USER\n")
    h = CoreHarness(tmp_path, hosts=(("h1", 4), ("h0", 2)), outside_load=False, etc=str(etc))
    try:
        reply = h.request("root", p.ADMIN, command="reload")
        assert reply["removed"] == ["h0"] and reply["hosts"] == 2
        new = h.core.hosts["h2"]
        assert (new.max_slots, new.groups, new.in_config) == (8, ("big", "gpu"), True)
        assert h.core.hosts["h0"].in_config is False and h.core.hosts["h1"].in_config
        assert h.core.users["alice"]["roles"] == {"USER", "ADMIN"}
        assert h.core.users["carol"]["enabled"] is True
        assert h.core.users["root"]["roles"] == {"USER", "ADMIN"}
        assert {r["name"] for r in h.store.load_hosts()} >= {"h0", "h1", "h2"}
        assert h.store.load_users()["alice"]["roles"] == "USER,ADMIN"
        assert h.request("root", p.ADMIN, command="reload")["removed"] == []
    finally:
        h.close()


def test_a_restarted_server_knows_its_reservations(h, tmp_path):
    """Catches reservations lost or changed by a restart: code, owner, users, slots per host
    held back (Core._reservation_loaded was run by no fast test). Checked by skipping the
    reservations in Core.load: the coded job is refused after the restart."""
    code = h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 3]],
                     users=["alice", "bob"])["code"]
    h.close()
    again = CoreHarness(tmp_path, outside_load=False)
    try:
        held = again.core.reservations[code]
        assert (held["user"], held["users"], held["hosts"]) == ("root", {"alice", "bob"},
                                                                 {"h1": 3})
        assert again.core.hosts["h1"].reserved == {code: 3}
        again.register("bob")
        (job,) = again.submit("bob", "true", reservation=code)
        assert again.state(job) == "dispatched"
        with pytest.raises(HQError) as refused:
            again.submit("root", "true", reservation=code)
        assert refused.value.code == PERMISSION_DENIED
    finally:
        again.close()


def test_deactivated_host_gets_no_new_work_until_activated(h):
    """Catches `deactivatehost` not stopping new work or not recorded, and `activatehost`
    not bringing it back (fleet.set_host_state ran in no fast test)."""
    h.register("alice")
    h.request("root", p.ADMIN, command="deactivatehost", arg="h1")
    assert h.store.load_hosts()[0]["state"] == "inactive"
    (job,) = h.submit("alice", "true")
    assert h.state(job) == "pending"
    h.request("root", p.ADMIN, command="activatehost", arg="h1")
    assert h.state(job) == "dispatched" and h.core.hosts["h1"].state == "active"


def test_cleanup_stops_idle_agents_only_and_a_lost_route_forgets_the_agent(h):
    """Catches `hq-client cleanup` stopping an agent with work (its jobs would be lost) or
    not stopping an idle one, and an agent that cannot be reached kept (fleet.stop_agent,
    fleet.undeliverable ran in no fast test)."""
    job = running_job(h)
    reply = h.request("alice", p.AGENTS, action="stop")
    assert reply == {"req": reply["req"], "stopped": [], "busy": ["h1"]}
    h.report("alice", "finished", job, 1, exit_code=0)
    reply = h.request("alice", p.AGENTS, action="stop")
    assert reply["stopped"] == ["h1"] and "alice" not in h.core.hosts["h1"].agents
    assert h.messages(p.STOP, b"agent:alice@h1") == [{}]
    bob = h.register("bob")
    h.hello("bob")
    fleet.undeliverable(h.core, bob, h.now)
    assert "bob" not in h.core.hosts["h1"].agents and bob not in h.core.agents
    fleet.undeliverable(h.core, b"us:bob", h.now)
    assert "bob" not in h.core.user_servers


def test_an_unreachable_host_says_why_until_an_agent_registers(h):
    """Catches the user-server's UNREACHABLE report lost (lscluster shows no reason) or kept
    once an agent runs there (fleet.host_unreachable ran in no fast test)."""
    h.request("alice", p.UNREACHABLE, host="h1", reason="ssh: connection refused")
    assert h.core.hosts["h1"].status_reason == "alice: ssh: connection refused"
    with pytest.raises(HQError):
        h.request("alice", p.UNREACHABLE, host="nowhere", reason="x")
    h.register("alice")
    assert h.core.hosts["h1"].status_reason == ""
    h.request("alice", p.UNREACHABLE, host="h1", reason="later")
    assert h.core.hosts["h1"].status_reason == ""          # up: an agent runs there


def test_other_users_hq_jobs_are_not_counted_as_outside_load(h):
    """Catches the reporting agent's outside load counting other users' hq jobs (it cannot
    see their processes), which took their slots twice (fleet._others_slots)."""
    h.register("alice")
    h.register("bob")
    (bob_job,) = h.submit("bob", "sleep 9", cores=2)
    assert h.state(bob_job) == "dispatched"
    h.heartbeat("alice", foreign_load=2.5)
    assert h.core.hosts["h1"].foreign_load == 0.5
    h.heartbeat("alice", foreign_load=1.0)
    assert h.core.hosts["h1"].foreign_load == 0.0


def test_environments_of_ended_batches_are_dropped(h):
    """Catches the environments of finished batches kept in memory forever
    (Core.prune_envs ran in no fast test)."""
    job = running_job(h)
    (other,) = h.submit("alice", "sleep 9", hold=True)
    batches = {h.store.get_jobs([i])[0]["batch"] for i in (job, other)}
    h.core.env_json(min(batches))
    h.report("alice", "finished", job, 1, exit_code=0)
    h.core.prune_envs()
    assert set(h.core.envs) == {max(batches)} and set(h.core.env_texts) <= {max(batches)}


def story(h, job):
    """[(state, attempt, detail)] of a job's events, as `details` shows them."""
    return [(e["state"], e["attempt"], e["detail"]) for e in h.store.job_events([job])]


def test_the_event_log_and_rows_tell_what_happened(h):
    """Catches hold, release, a late result of a cancelled attempt and a stale report not
    recorded as they happened (state, attempt, detail, reason, finished, exit code): each
    is what `details` shows a user (mutmut: Core.hold, unhold, _late_result survived)."""
    h.request("root", p.ADMIN, command="deactivate")
    (job,) = h.submit("alice", "true")
    h.request("alice", p.HOLD, ids=[job])
    assert h.store.get_jobs([job])[0]["reason"] == "held"
    h.request("alice", p.RELEASE, ids=[job])
    assert h.store.get_jobs([job])[0]["reason"] == ""
    assert story(h, job) == [("pending", 0, "submitted"), ("held", 0, "held by user"),
                             ("pending", 0, "released by user")]
    h.request("root", p.ADMIN, command="activate")
    killed = running_job(h)
    h.request("alice", p.CANCEL, ids=[killed])
    assert h.store.get_jobs([killed])[0]["finished"] is None     # the process still runs
    h.at(h.now + 3)
    h.report("alice", "finished", killed, 1, exit_code=None, signal=15, max_rss=5)
    row = h.store.get_jobs([killed])[0]
    assert (row["finished"], row["exit_code"], row["term_signal"]) == (h.now, None, 15)
    assert story(h, killed)[-1] == ("stale", 1, "result of attempt 1 ignored (exit None)")
    assert (killed, 1) not in h.core.cancelled_attempts
    h.report("alice", "finished", killed, 1, exit_code=0)            # resent: nothing changes
    assert h.store.get_jobs([killed])[0]["exit_code"] is None
    assert story(h, killed)[-1] == ("stale", 1, "result of attempt 1 ignored (exit 0)")


def test_dropping_a_reservation_fails_only_its_waiting_jobs_and_frees_its_slots(h):
    """Catches other waiting jobs failed with a reservation, the failure not recorded
    (reason, detail, finished), the slots still held back, or no scheduling pass after the
    drop (mutmut: Core.drop_reservation survived)."""
    h.register("alice")
    code = h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 4]],
                     users=["alice"])["code"]
    (coded,) = h.submit("alice", "sleep 9", reservation=code, cores=4)
    (waiting,) = h.submit("alice", "true", reservation=code)
    (normal,) = h.submit("alice", "true")
    assert h.state(coded) == "dispatched"
    assert (h.state(waiting), h.state(normal)) == ("pending", "pending")
    h.at(h.now + 1)
    h.request("root", p.ADMIN, command="unreserve", arg=code)
    row = h.store.get_jobs([waiting])[0]
    assert (row["state"], row["reason"], row["finished"]) == ("failed", "reservation deleted",
                                                              h.now)
    assert story(h, waiting)[-1] == ("failed", 0, f"reservation {code} deleted")
    assert h.core.hosts["h1"].reserved == {} and h.store.load_reservations() == []
    assert h.state(coded) == "dispatched" and h.state(normal) == "pending"
    h.report("alice", "finished", coded, 1, exit_code=0)
    assert h.state(normal) == "dispatched"


def test_a_reservation_is_stored_whole(h):
    """Catches a reservation's rows written with a field missing or mangled (mutmut:
    Core.add_reservation survived: only memory was checked)."""
    h.at(1234.5)
    code = h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 2]],
                     users=["bob", "alice"])["code"]
    (row,) = h.store.load_reservations()
    assert {k: row[k] for k in ("code", "host", "slots", "user", "users", "created")} == {
        "code": code, "host": "h1", "slots": 2, "user": "root", "users": "alice,bob",
        "created": 1234.5}
    assert h.core.reservations[code]["created"] == 1234.5


def test_enabling_a_user_schedules_their_jobs_at_once_and_is_stored(h):
    """Catches `enableuser` leaving the jobs waiting for the next tick, and the enabled flag
    not stored (mutmut: Core.set_user_enabled survived)."""
    h.register("alice")
    (job,) = h.request("alice", p.SUBMIT, jobs=["sleep 1"], env={}, cwd="/", hold=True)["ids"]
    h.request("root", p.ADMIN, command="disableuser", arg="alice")
    assert h.store.load_users()["alice"]["enabled"] == 0
    h.request("alice", p.RELEASE, ids=[job])
    assert h.state(job) == "pending" and h.core.users["alice"]["enabled"] is False
    h.request("root", p.ADMIN, command="enableuser", arg="alice")
    assert h.state(job) == "dispatched" and h.store.load_users()["alice"]["enabled"] == 1


def test_reconciliation_waits_exactly_its_grace(h):
    """Catches an attempt its agent does not know declared gone at the grace instead of
    after it, or the time compared wrongly, or recorded without its reason (mutmut:
    Core.reconcile survived)."""
    h.register("alice")
    (job,) = h.submit("alice", "sleep 9", retries=1)
    sent = h.core.attempts[(job, 1)].sent
    h.core.reconcile("h1", "alice", set(), sent + 5, grace=5)
    assert h.core.jobs[job].state == "dispatched"
    h.core.reconcile("h1", "alice", {(job, 1)}, sent + 9, grace=5)
    assert h.core.jobs[job].state == "dispatched"
    h.at(sent + 5.01)
    h.core.reconcile("h1", "alice", set(), sent + 5.01, grace=5)
    h.turn()
    assert ("pending", 1, "requeued: agent on h1 does not know attempt 1") in story(h, job)


def test_waiting_reasons_name_every_dependency_and_the_inactive_cluster(h):
    """Catches waiting reasons misprinted (mutmut: Core.waiting_reason survived)."""
    h.request("root", p.ADMIN, command="deactivate")
    first, second = h.submit("alice", "true", "true")
    (child,) = h.submit("alice", "true", depends_on=f"{second},{first}")
    core = h.core
    assert core.waiting_reason(core.jobs[child]) == (
        f"dependency: waiting for job {first}, {second}")
    assert core.waiting_reason(core.jobs[first]) == "cluster inactive"
    h.request("root", p.ADMIN, command="activate")
    h.register("bob")
    (busy,) = h.submit("bob", "sleep 9", cores=3)
    (bobs,) = h.submit("bob", "true", cores=2)
    host = h.core.hosts["h1"]
    host.cores, host.foreign_load = 4, 4.0
    assert core.waiting_reason(core.jobs[bobs], outside_load=False) == (
        "resources: needs 2 slots; hosts that fit have at most 1 free")
    assert core.waiting_reason(core.jobs[bobs]) == (
        "resources: needs 2 slots; hosts that fit have at most 0 free "
        "(1 taken by outside load on h1)")


def row_of(h, job, *names):
    row = h.store.get_jobs([job])[0]
    return tuple(row[n] for n in names)


def test_each_end_of_a_job_is_recorded_with_its_reason_and_times(h):
    """Catches the rows and events of a job's ends written wrong: started (pid, start time),
    done, an exit code, a signal, an error, a finish that implies the start, a requeue and a
    loss (state, reason, detail, times, host) (mutmut: Core.job_started, job_finished,
    outcome, attempt_gone, cancel survived, also handlers.agent.events)."""
    h.register("alice")
    done, code, killed, broken, quick = h.submit("alice", *["sleep 1"] * 4, "true")
    h.at(1001.0)
    for job in (done, code, killed, broken):
        h.report("alice", "started", job, 1, pid=100 + job)
    assert row_of(h, done, "state", "started") == ("running", 1001.0)
    assert story(h, done)[-1] == ("running", 1, f"pid {100 + done}")
    h.at(1002.0)
    h.report("alice", "finished", done, 1, exit_code=0, started=1001.0)
    h.report("alice", "finished", code, 1, exit_code=3, started=1001.0)
    h.report("alice", "finished", killed, 1, exit_code=None, signal=9, started=1001.0)
    h.report("alice", "finished", broken, 1, exit_code=None, error="cannot start: no shell")
    h.report("alice", "finished", quick, 1, exit_code=0, started=1000.5)
    names = ("state", "reason", "finished", "exit_code", "term_signal")
    assert row_of(h, done, *names) == ("done", "", 1002.0, 0, None)
    assert row_of(h, code, *names) == ("failed", "exit code 3", 1002.0, 3, None)
    assert row_of(h, killed, *names) == ("failed", "killed by signal 9", 1002.0, None, 9)
    assert row_of(h, broken, "state", "reason") == ("failed", "cannot start: no shell")
    assert row_of(h, quick, "state", "started") == ("done", 1000.5)
    assert story(h, quick)[-2:] == [("running", 1, "start implied by finish"), ("done", 1, "")]
    assert story(h, code)[-1] == ("failed", 1, "exit code 3")
    assert h.core.ahead.runtime["h1"] > 0                         # short jobs' runtime kept
    time_limit = running_job(h)
    h.report("alice", "finished", time_limit, 1, exit_code=None, signal=15,
             reason="time limit")
    assert row_of(h, time_limit, "state", "reason") == ("failed", "time limit")


def test_requeue_loss_and_cancel_are_recorded_with_their_reasons(h):
    """Catches a requeued job keeping its host or losing its reason, a lost job without its
    reason or end time, and cancel's reason, detail and end time (mutmut: attempt_gone,
    cancel survived)."""
    again = running_job(h, retries=1)
    (once,) = h.submit("alice", "sleep 9", retries=0)
    h.at(h.now + 7).turn(tick=True)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    why = h.store.get_jobs([again])[0]["reason"]
    assert why.startswith("requeued: host h1 ") and row_of(h, again, "state", "host") == (
        "pending", "")
    assert story(h, again)[-1] == ("pending", 1, why)
    lost = row_of(h, once, "state", "reason", "finished")
    assert lost[0] == "lost" and lost[1] == "lost: " + why[len("requeued: "):]
    assert lost[2] == h.now
    (waiting,) = h.submit("alice", "true")
    h.at(h.now + 1)
    h.request("alice", p.CANCEL, ids=[waiting])
    assert row_of(h, waiting, "state", "reason", "finished") == ("cancelled", "cancelled",
                                                                 h.now)
    assert story(h, waiting)[-1] == ("cancelled", 0, "cancelled by user")


def test_a_stale_started_report_is_recorded_and_its_process_killed(h):
    """Catches a `started` report of an attempt that is not current applied, or not
    answered with a KILL of exactly that attempt, or not recorded (mutmut: Core.job_started,
    handlers.agent.events survived)."""
    job = running_job(h, retries=2)
    h.at(h.now + 7).turn(tick=True)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    h.register("alice")
    assert h.state(job) == "dispatched"
    h.report("alice", "started", job, 1, pid=5)               # the old attempt, late
    assert h.state(job) == "dispatched"
    assert h.messages(p.KILL, b"agent:alice@h1")[-1] == {"jobs": [[job, 1]]}
    assert story(h, job)[-1] == ("stale", 1, "started report ignored")
    h.report("alice", "started", job, 2, pid=6)
    assert h.state(job) == "running"
    h.report("alice", "started", job, 2, pid=6)      # sent again (its ack was lost): kept
    assert h.state(job) == "running"
    assert h.messages(p.KILL, b"agent:alice@h1") == [{"jobs": [[job, 1]]}]
    h.report("alice", "started", job, 1, pid=5)      # the old one again, while 2 runs
    assert h.messages(p.KILL, b"agent:alice@h1") == [{"jobs": [[job, 1]]}] * 2


def test_a_failed_dependency_is_recorded_on_each_dependent(h):
    """Catches the failure of a dependent recorded without its detail or end time, and a
    chain whose second link is not failed (mutmut: Core._release_dependents survived)."""
    parent = running_job(h)
    (child,) = h.submit("alice", "true", depends_on=str(parent))
    (grandchild,) = h.submit("alice", "true", depends_on=str(child))
    (other,) = h.submit("alice", "true", depends_on=f"{parent},{child}")
    h.at(h.now + 2)
    h.report("alice", "finished", parent, 1, exit_code=1)
    for job, on in ((child, parent), (grandchild, child)):
        assert row_of(h, job, "state", "reason", "finished") == ("failed", "dependency", h.now)
        assert story(h, job)[-1][2] == f"dependency: job {on} ended failed"
    assert h.state(other) == "failed"
    assert not h.core.deps_left and not h.core.waiters


def test_reserved_slots_are_given_back_when_a_coded_job_ends(h):
    """Catches a reservation's used slots not given back (its next coded job waits for
    ever) or given back twice (mutmut: Core.free_slots survived)."""
    h.register("alice")
    code = h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 2]],
                     users=["alice"])["code"]
    first, second, third = h.submit("alice", "sleep 1", "sleep 1", "sleep 1",
                                    reservation=code)
    host = h.core.hosts["h1"]
    assert host.reserved_used == {code: 2} and h.state(third) == "pending"
    h.report("alice", "finished", first, 1, exit_code=0)
    assert host.reserved_used == {code: 2} and h.state(third) == "dispatched"
    h.report("alice", "finished", second, 1, exit_code=0)
    h.report("alice", "finished", second, 1, exit_code=0)          # resent
    assert host.reserved_used == {code: 1} and host.slots_used == 1


def test_a_run_that_never_reached_its_agent_uses_up_no_retry(h):
    """Catches a job lost for good because its RUN was lost (an hq-server that crashed or was
    replaced right after dispatching it; chaos --net lost a job so): an attempt its agent
    does not know never started (the agent journals a RUN before it starts it), so it is
    requeued even with no retry left, at most UNSTARTED_TRIES times; one that had started
    (a `started` report came) counts as a try."""
    from hq.server.core import UNSTARTED_TRIES
    h.register("alice")
    (job,) = h.submit("alice", "sleep 9", retries=0)
    for attempt in range(1, UNSTARTED_TRIES + 2):
        assert h.core.jobs[job].state == "dispatched" and h.core.jobs[job].attempt == attempt
        sent = h.core.attempts[(job, attempt)].sent
        h.at(sent + 10)
        h.core.reconcile("h1", "alice", set(), sent + 10, grace=5)
        h.turn()
    assert h.state(job) == "lost"
    assert [s for s in story(h, job) if s[0] == "pending" and "requeued" in s[2]] == [
        ("pending", n, f"requeued: agent on h1 does not know attempt {n}")
        for n in range(1, UNSTARTED_TRIES + 1)]
    (ran,) = h.submit("alice", "sleep 9", retries=0)
    h.report("alice", "started", ran, 1)
    sent = h.core.attempts[(ran, 1)].sent
    h.at(sent + 10)
    h.core.reconcile("h1", "alice", set(), sent + 10, grace=5)
    h.turn()
    assert h.state(ran) == "lost"


# -- hosts and agents (hq/server/fleet.py), written against mutants that survived make mutate --
def host_row(h, name="h1"):
    return next(r for r in h.store.load_hosts() if r["name"] == name)


def metrics_reporter(h, users):
    """Whose heartbeats give h1's metrics: each of `users` reports its own load1, in this order
    (a host without a reporter would take the last one)."""
    for number, user in enumerate(users, 1):
        h.heartbeat(user, load1=float(number))
    return users[int(h.core.hosts["h1"].load1) - 1]


def test_when_the_reporting_agent_leaves_an_admins_agent_then_the_oldest_reports(tmp_path):
    """Catches the next reporter of a host's metrics chosen by name, by registration order of
    the user instead of the agent (alice's agent restarted: it is now the youngest), with
    admins last or not first, none at all (every agent's load taken, the last wins) or the
    leaver kept (nobody's); and the host's row not saying why it has no agent left
    (fleet._next_reporter, _registered, agent_forgotten, agent_left)."""
    h = CoreHarness(tmp_path, users=("alice", "bob", "carol"), outside_load=False)
    try:
        h.core.users_configured([("ops", ["USER", "ADMIN"])])
        for step, user in enumerate(("root", "alice", "carol", "bob", "ops", "alice")):
            h.at(1000.0 + step).register(user)
        order = ["ops", "carol", "bob", "alice"]
        for leaver, expected in (("root", "ops"), ("ops", "carol"), ("carol", "bob")):
            assert h.request(leaver, p.BYE, f"agent:{leaver}@h1".encode())["bye"] is True
            order.remove(leaver) if leaver in order else None
            assert metrics_reporter(h, order) == expected, leaver
        for leaver in ("bob", "alice"):
            h.request(leaver, p.BYE, f"agent:{leaver}@h1".encode())
        assert (host_row(h)["status"], host_row(h)["status_reason"]) == ("unknown",
                                                                         "no agent: idle")
    finally:
        h.close()



def test_a_silent_agent_is_asked_for_again_at_once_and_only_its_users_jobs_requeued(h):
    """Catches an agent gone at exactly 3 heartbeats of silence, its user's agent not asked
    for again at once (SPAWN held back by the retry delay, or asked of the users with pending
    jobs instead), and another user's jobs on the host requeued with the silent agent's
    (fleet.agent_gone, check_liveness)."""
    h.hello("alice")
    h.hello("bob")
    (first,) = h.submit("alice", "true")
    h.turn(tick=True)                       # no agent yet: alice's user-server is asked
    assert len(h.messages(p.SPAWN, b"us:alice")) == 1
    alice = running_job(h)
    bob = running_job(h, user="bob")
    start = h.now
    h.at(start + 3).heartbeat("bob", running=[(bob, 1)])
    h.at(start + 6).turn(tick=True)         # exactly 3 heartbeats: not yet gone
    assert "alice" in h.core.hosts["h1"].agents
    h.at(start + 6).heartbeat("bob", running=[(bob, 1)])
    h.at(start + 6.5).turn(tick=True)
    assert "alice" not in h.core.hosts["h1"].agents
    spawns = h.messages(p.SPAWN, b"us:alice")
    assert len(spawns) == 2 and [s["name"] for s in spawns[-1]["hosts"]] == ["h1"]
    for t in (10, 14, 16.5):
        h.at(start + t).heartbeat("bob", running=[(bob, 1)])
    h.turn(tick=True)                       # the grace is over
    assert [h.state(j) for j in (first, alice, bob)] == ["pending", "pending", "running"]
    assert h.messages(p.SPAWN, b"us:bob") == []


def test_a_down_host_and_its_requeued_jobs_say_why_in_their_rows(h):
    """Catches the down host's row not written or without its reason, the time in the reason
    wrong, and a requeued job's reason not naming its host's (fleet.host_down, agent_gone,
    check_liveness)."""
    job = running_job(h)
    silent = f"silent since {time.ctime(h.now)}"
    h.at(h.now + 7).turn(tick=True)
    assert (host_row(h)["status"], host_row(h)["status_reason"]) == ("down", silent)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert h.store.get_jobs([job])[0]["reason"] == f"requeued: host h1 {silent}"


def test_agents_are_asked_for_on_active_hosts_and_again_after_the_retry_delay(tmp_path):
    """Catches SPAWN asking for agents on an inactive host or for users without pending jobs,
    a host's address missing from it, and the retry delay (spawn_retry_s) not kept or kept
    one turn too long; and, after an agent left (BYE), new work waiting for that delay before
    its agent is asked for again (fleet.request_agents, agent_left)."""
    h = CoreHarness(tmp_path, hosts=(("h1", 4), ("h2", 4)), outside_load=False)
    try:
        h.request("root", p.ADMIN, command="deactivatehost", arg="h2")
        h.hello("alice")
        h.hello("bob")
        h.submit("alice", "true")
        h.turn(tick=True)
        assert h.messages(p.SPAWN, b"us:alice") == [{"hosts": [{"name": "h1", "address": ""}]}]
        retry = h.core.settings.spawn_retry_s
        h.at(h.now + retry - 0.1).turn(tick=True)
        assert len(h.messages(p.SPAWN, b"us:alice")) == 1
        h.at(h.now + 0.1).turn(tick=True)
        assert len(h.messages(p.SPAWN, b"us:alice")) == 2
        assert h.messages(p.SPAWN, b"us:bob") == []
        h.register("alice")
        h.report("alice", "finished", h.runs_to("alice")[0][0], 1, exit_code=0)
        assert h.request("alice", p.BYE, b"agent:alice@h1")["bye"] is True
        h.submit("alice", "true")
        h.turn(tick=True)                   # at once, within the retry delay
        assert len(h.messages(p.SPAWN, b"us:alice")) == 3
    finally:
        h.close()


def test_after_a_restart_agents_are_awaited_3_heartbeats_then_asked_for(h, tmp_path):
    """Catches a restarted server asking for agents before the 3 heartbeats (of the longest
    interval, 6 s) it gives them to come back, or asking nobody (or the users with pending
    jobs) then; the host not down at exactly 3 heartbeats_s, or its reason's time wrong
    (fleet.check_liveness after expect_agents)."""
    running_job(h)
    h.close()
    server = CoreHarness(tmp_path, outside_load=False)
    try:
        start = h.now + 100
        server.at(start)
        fleet.expect_agents(server.core, start)
        server.hello("alice")
        server.at(start + 6).turn(tick=True)
        assert server.core.hosts["h1"].status == "up"
        server.at(start + 6.1).turn(tick=True)
        row = host_row(server)
        assert (row["status"], row["status_reason"]) == ("down",
                                                         f"silent since {time.ctime(start)}")
        server.at(start + 17.9).turn(tick=True)
        assert server.messages(p.SPAWN) == []
        server.at(start + 18).turn(tick=True)
        assert server.messages(p.SPAWN) == [{"hosts": [{"name": "h1", "address": ""}]}]
    finally:
        server.close()


def test_an_agent_that_cannot_be_reached_keeps_its_lease_before_its_jobs_are_requeued(h):
    """Catches a route lost to an agent (undeliverable) not recorded as the host's reason,
    its jobs requeued before its lease (3 heartbeats after it was last heard) and the grace
    are over, and a lost route to one user-server forgetting another's (fleet.undeliverable)."""
    h.hello("alice")
    h.hello("bob")
    job = running_job(h)
    h.at(h.now + 2).heartbeat("alice", running=[(job, 1)])
    lease_end = h.now + 3 * h.core.settings.heartbeat_s
    h.at(h.now + 1)
    fleet.undeliverable(h.core, b"agent:alice@h1", h.now)
    h.turn()
    assert (host_row(h)["status"], host_row(h)["status_reason"]) == ("down",
                                                                     "cannot be reached")
    grace = h.core.settings.requeue_grace_s
    h.at(lease_end + grace - 0.1).turn(tick=True)
    assert h.state(job) == "running"
    h.at(lease_end + grace).turn(tick=True)
    assert h.state(job) == "pending"
    fleet.undeliverable(h.core, b"us:bob", h.now)
    assert h.core.user_servers == {"alice": b"us:alice"}


def test_reload_keeps_known_hosts_with_their_agents_and_adds_new_ones_in_their_state(tmp_path):
    """Catches `hq-admin reload` replacing a known host (its agents forgotten), a new host's
    state from cluster.tab ignored, and more slots not used at once (fleet.configure_hosts)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "cluster.tab").write_text("h1\t6\t-\t127.0.0.1\nh2\t4\t-\t127.0.0.1\tinactive\n")
    (etc / "users").write_text("alice USER\nbob USER\n")
    h = CoreHarness(tmp_path, outside_load=False, etc=str(etc))
    try:
        h.register("alice")
        ids = h.submit("alice", *["sleep 9"] * 6)
        assert [h.state(i) for i in ids].count("pending") == 2
        h.request("root", p.ADMIN, command="reload")
        assert [h.state(i) for i in ids] == ["dispatched"] * 6
        assert h.core.hosts["h2"].state == "inactive"
        assert h.request("root", p.ADMIN, command="hostinfo", arg="h2")["host"]["name"] == "h2"
    finally:
        h.close()


def test_an_unreachable_hosts_reason_is_stored_and_cut_to_its_column(h):
    """Catches the reason of UNREACHABLE not written to the host's row, or not cut to the
    column's 255 characters (fleet.host_unreachable)."""
    h.request("alice", p.UNREACHABLE, host="h1", reason="x" * 300)
    assert host_row(h)["status_reason"] == ("alice: " + "x" * 300)[:255]


# -- the core (hq/server/core.py), written against mutants that survived make mutate ------------
def requeued_while_cut_off(h, *jobs):
    """Jobs running on h1 whose agent went silent: requeued after the grace, no agent left."""
    h.at(h.now + 7).turn(tick=True)
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert [h.state(j) for j in jobs] == ["pending"] * len(jobs)


def test_an_attempt_that_ended_where_it_ran_while_requeued_counts_and_is_not_run_again(h):
    """Catches a retry sent while the returning agent is about to report the attempt's end
    (it would run twice), that report not counting (the job kept pending, or recorded without
    its host, with a reason, or with the event's text lost), and the wait shorter than 10 s
    (Core.await_result, job_finished, attempt_gone)."""
    job = running_job(h)
    requeued_while_cut_off(h, job)
    h.register("alice", reported=[[job, 1]])
    since = h.now
    h.at(since + 5).heartbeat("alice")
    h.at(since + 9.9).turn(tick=True)
    assert h.runs_to("alice") == [(job, 1)] and h.state(job) == "pending"
    h.report("alice", "finished", job, 1, exit_code=0, time=h.now - 20)
    row = h.store.get_jobs([job])[0]
    assert (row["state"], row["attempt"], row["host"], row["reason"], row["exit_code"]) == (
        "done", 1, "h1", "", 0)
    assert ("dispatched", 1, "attempt 1 ended on h1 before its requeue was known there: its "
            "result counts, no retry") in story(h, job)
    assert h.runs_to("alice") == [(job, 1)]


def test_a_retry_waits_for_the_returning_agents_report_until_it_comes_or_10_s_pass(h):
    """Catches a retry held for good (or not at all) when the awaited report says the outcome
    is unknown, or when no report comes within 10 s (Core._stop_awaiting, release_awaited,
    job_finished)."""
    unknown, silent = running_job(h), running_job(h)
    requeued_while_cut_off(h, unknown, silent)
    h.register("alice", reported=[[unknown, 1], [silent, 1]])
    since = h.now
    h.report("alice", "finished", unknown, 1, exit_code=None, error=UNKNOWN_OUTCOME)
    assert (unknown, 2) in h.runs_to("alice") and h.state(unknown) == "dispatched"
    h.at(since + 5).heartbeat("alice", running=[(unknown, 2)])
    h.at(since + 9.9).turn(tick=True)
    assert (silent, 2) not in h.runs_to("alice")
    h.at(since + 10).turn(tick=True)
    assert (silent, 2) in h.runs_to("alice")


def test_an_attempt_its_agent_fenced_is_requeued_while_retries_last_else_lost(h):
    """Catches the agent's report that it killed an attempt at the end of its lease ignored
    (the job kept running for good) or counted as the job's end, and the loss recorded
    without its reason (Core.attempt_fenced, attempt_gone)."""
    again, once = running_job(h, retries=1), running_job(h, retries=0)
    fenced = "fenced: no answer from hq-server within the lease (11s)"
    for job in (again, once):
        h.report("alice", "finished", job, 1, exit_code=None, signal=9, reason=fenced)
    assert ("pending", 1, f"requeued: {fenced} on h1") in story(h, again)
    assert (again, 2) in h.runs_to("alice")
    assert h.store.get_jobs([again])[0]["reason"] == ""         # the retry runs: no reason
    row = h.store.get_jobs([once])[0]
    assert (row["state"], row["reason"]) == ("lost", f"lost: {fenced} on h1")
    assert story(h, once)[-1] == ("lost", 1, f"{fenced} on h1")


def test_each_waiting_job_in_a_listing_gets_its_own_reason(tmp_path):
    """Catches the reasons of a listing shared between jobs of different shapes, computed
    without the outside load setting, or missing (Core.waiting_reason with its memo)."""
    h = CoreHarness(tmp_path)                       # outside load counted (the default)
    try:
        h.register("alice")
        h.heartbeat("alice", foreign_load=2.0)
        ids = h.submit("alice", "sleep 9", "sleep 9", "sleep 9", "sleep 9")
        (wide,) = h.submit("alice", "sleep 9", cores=2)
        reasons = {j["id"]: j.get("reason") for j in h.request("alice", p.LIST)["jobs"]}
        held = " free (2 taken by outside load on h1)"
        assert [reasons[i] for i in ids[2:] + [wide]] == [
            "resources: needs 1 slots; hosts that fit have at most 0" + held,
            "resources: needs 1 slots; hosts that fit have at most 0" + held,
            "resources: needs 2 slots; hosts that fit have at most 0" + held]
    finally:
        h.close()


def test_a_child_submitted_as_its_parent_ends_follows_how_it_ended(h):
    """Catches a child whose submission is committed in the turn its parent ends failed with
    `ended unknown` instead of running (Core._release_dependents' just_ended)."""
    parent = running_job(h)
    submit = {"req": 1, "jobs": ["true"], "defaults": {"depends_on": str(parent)}, "env": {},
              "cwd": "/tmp"}
    handlers.handle(h.core, handlers.Peer(b"us:alice", "alice"), p.SUBMIT, submit)
    events = {"seq": 1, "events": [{"type": "finished", "job": parent, "attempt": 1,
                                    "time": h.now, "exit_code": 0}]}
    handlers.handle(h.core, handlers.Peer(b"agent:alice@h1", "alice"), p.EVENTS, events)
    h.turn()
    h.turn()
    assert [h.state(j) for j in (parent, parent + 1)] == ["done", "dispatched"]


def test_a_child_of_two_parents_waits_for_both_and_a_held_child_runs_when_released(h):
    """Catches a child started when the first of its two parents is done, and a held child
    whose parent is done never started once released (Core._release_dependents)."""
    first, second = running_job(h), running_job(h)
    (child,) = h.submit("alice", "true", depends_on=f"{first},{second}")
    (held,) = h.submit("alice", "true", depends_on=str(first), hold=True)
    h.report("alice", "finished", first, 1, exit_code=0)
    assert (h.state(child), h.state(held)) == ("pending", "held")
    h.request("alice", p.RELEASE, ids=[held])
    assert h.state(held) == "dispatched"
    h.report("alice", "finished", second, 1, exit_code=0)
    assert h.state(child) == "dispatched"


def test_slots_and_memory_come_back_exactly_when_an_attempt_ends(h):
    """Catches a cancelled job's slots given back without a scheduling pass (the waiting job
    started only at the next change), and memory or reserved slots not given back exactly
    (Core.free_slots)."""
    h.register("alice")
    jobs = h.submit("alice", *["sleep 9"] * 5)
    h.request("alice", p.CANCEL, ids=[jobs[0]])
    assert h.state(jobs[4]) == "pending"
    h.report("alice", "finished", jobs[0], 1, exit_code=None, signal=15)
    assert h.state(jobs[4]) == "dispatched"
    for job in jobs[1:]:
        h.report("alice", "finished", job, 1, exit_code=0)
    (big,) = h.submit("alice", "sleep 9", memory=8 << 30)
    (second,) = h.submit("alice", "sleep 9", memory=8 << 30)
    assert h.state(second) == "pending"
    h.report("alice", "finished", big, 1, exit_code=0)
    assert h.state(second) == "dispatched"
    h.report("alice", "finished", second, 1, exit_code=0)
    code = h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 2]],
                     users=["alice"])["code"]
    (coded,) = h.submit("alice", "sleep 9", cores=2, reservation=code)
    h.report("alice", "finished", coded, 1, exit_code=0)
    (again,) = h.submit("alice", "sleep 9", cores=2, reservation=code)
    assert h.state(again) == "dispatched"


def test_the_end_of_a_cancelled_job_and_the_time_an_agent_reports_are_recorded(h):
    """Catches a cancelled job's exit code (reported when its process ended) not recorded, and
    a job's end time taken from the server's clock instead of the agent's report
    (Core._late_result, job_finished)."""
    cancelled = running_job(h)
    h.request("alice", p.CANCEL, ids=[cancelled])
    h.report("alice", "finished", cancelled, 1, exit_code=143)
    assert h.store.get_jobs([cancelled])[0]["exit_code"] == 143
    job = running_job(h)
    h.report("alice", "finished", job, 1, exit_code=0, time=h.now - 5)
    assert h.store.get_jobs([job])[0]["finished"] == h.now - 5


def test_the_cluster_state_and_a_reservations_time_survive_a_restart(h, tmp_path):
    """Catches `hq-admin deactivate` not stored (a restarted server runs jobs), `activate`
    not scheduling at once, and a reloaded reservation without its creation time
    (Core.set_cluster_state, _reservation_loaded), and a waiting job's environment not stored
    (Core.stage_batch)."""
    h.request("root", p.ADMIN, command="deactivate")
    h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 1]], users=["alice"])
    before = h.request("root", p.ADMIN, command="reservations")["reservations"]
    waiting = h.request("alice", p.SUBMIT, jobs=["true"], env={"A": "1"}, cwd="/tmp")
    h.close()
    again = CoreHarness(tmp_path, outside_load=False)
    try:
        again.register("alice")
        (job,) = again.submit("alice", "true")
        assert again.state(job) == "pending"
        again.request("root", p.ADMIN, command="activate")
        assert again.state(job) == "dispatched"
        assert again.request("root", p.ADMIN, command="reservations")["reservations"] == before
        (run,) = again.messages(p.RUN)
        assert run["envs"][str(waiting["batch"])] == {"A": "1"}
    finally:
        again.close()


def test_dropping_a_reservation_gives_its_slots_to_waiting_jobs_at_once(tmp_path):
    """Catches unreserve not scheduling at once, and failing on a host the reservation did
    not hold (Core.drop_reservation)."""
    h = CoreHarness(tmp_path, hosts=(("h1", 4), ("h2", 4)), outside_load=False)
    try:
        h.register("alice")
        code = h.request("root", p.ADMIN, command="reserve", hosts=[["h1", 3]],
                         users=["bob"])["code"]
        jobs = h.submit("alice", "sleep 9", "sleep 9", "sleep 9")
        assert [h.state(j) for j in jobs].count("pending") == 2
        h.request("root", p.ADMIN, command="unreserve", arg=code)
        assert [h.state(j) for j in jobs] == ["dispatched"] * 3
    finally:
        h.close()


def test_a_server_behind_its_messages_does_not_count_their_delay_as_silence(h):
    """Catches silence counted up to now instead of up to when the loop last found its socket
    empty (a busy server forgot agents whose heartbeats it had not read yet) (Core.heard_since)."""
    running_job(h)
    h.core.drained_at = h.now + 1
    h.at(h.now + 10).turn(tick=True)
    assert "alice" in h.core.hosts["h1"].agents
    h.core.drained_at = None
    h.turn(tick=True)
    assert "alice" not in h.core.hosts["h1"].agents


def test_a_run_carries_its_batchs_environment_and_umask_also_after_pruning(h):
    """Catches a RUN without the submission's environment, and the umask of a live batch
    dropped with the environments of ended batches (Core.env_json, prune_envs)."""
    job = running_job(h)
    reply = h.request("alice", p.SUBMIT, jobs=["true"], env={"A": "1"}, cwd="/tmp",
                      umask=0o27, hold=True)
    (later,) = reply["ids"]
    h.report("alice", "finished", job, 1, exit_code=0)
    h.core.prune_envs()
    h.request("alice", p.RELEASE, ids=[later])
    run = h.messages(p.RUN)[-1]
    assert run["jobs"][0]["umask"] == 0o27
    assert run["envs"] == {str(reply["batch"]): {"A": "1"}}


# -- agents' messages (hq/server/handlers/agent.py), against survivors of make mutate ------------
def refused(h, user, kind, identity, **body):
    with pytest.raises(HQError) as info:
        h.request(user, kind, identity, **body)
    return info.value.code, info.value.message


def test_register_answers_with_the_settings_and_refuses_strangers(h):
    """Catches REGISTER's reply without the heartbeat period, database id or lease, and an
    unknown host or user refused without its code or text (x_register)."""
    reply = h.request("alice", p.REGISTER, b"agent:alice@h1", host="h1", cores=4)
    assert (reply["heartbeat_s"], reply["database_id"], reply["lease_s"]) == (
        2.0, h.store.database_id(), h.core.settings.agent_lease_s)
    assert refused(h, "alice", p.REGISTER, b"agent:alice@x", host="n" * 80) == (
        "UNKNOWN_HOST", f"host {'n' * 64!r} is not in cluster.tab")
    assert refused(h, "mallory", p.REGISTER, b"agent:mallory@h1", host="h1") == (
        "UNKNOWN_USER", "user 'mallory' is unknown")


def test_register_takes_the_hosts_facts_within_their_bounds(h):
    """Catches cores, memory or the OS not read from REGISTER (or their defaults wrong), and
    the bounds of cores (1 to 2**31 - 1) and memory (0 and more) moved (x_register facts)."""
    h.request("alice", p.REGISTER, b"agent:alice@h1", host="h1", cores=1, memory_total=0,
              os="L" * 300)
    host = h.core.hosts["h1"]
    assert (host.cores, host.memory_total, host.os) == (1, 0, "L" * 255)
    h.request("alice", p.REGISTER, b"agent:alice@h1", host="h1")     # kept when not sent
    assert (host.cores, host.memory_total, host.os) == (1, 0, "L" * 255)
    h.request("alice", p.REGISTER, b"agent:alice@h1", host="h1", cores=64, memory_total=9)
    assert (host.cores, host.memory_total) == (1, 0)     # the first report's user cannot grow it
    assert "agent of alice reports 64 cores" in host.facts_note
    h.request("root", p.REGISTER, b"agent:root@h1", host="h1", cores=(1 << 31) - 1,
              memory_total=5)                               # an admin's agent can
    assert (host.cores, host.memory_total) == ((1 << 31) - 1, 5)
    for bad in ({"cores": 0}, {"cores": 1 << 31}, {"memory_total": -1}):
        assert refused(h, "alice", p.REGISTER, b"agent:alice@h1", host="h1", **bad)[0] == \
            BAD_REQUEST, bad


def test_register_kills_what_the_agent_runs_that_is_no_longer_its_work(tmp_path):
    """Catches a registering agent's running list not checked: an earlier attempt, a job
    that ended, another user's job, a job sent to another host or one the server does not
    know go on running (x__kill_unwanted); entries that are not [job, attempt] accepted, or
    read in the wrong order (x__pair); and the list of an agent of another database (its
    own records) killed (x_register same_database)."""
    h = CoreHarness(tmp_path, hosts=(("h1", 4), ("h2", 4)), outside_load=False)
    try:
        mine = running_job(h)
        (ended,) = h.submit("alice", "true")
        h.report("alice", "finished", ended, 1, exit_code=0)
        bobs = running_job(h, user="bob")
        h.register("alice", host="h2")
        (elsewhere,) = h.submit("alice", "sleep 9", host_req="h2")
        running = [(mine, 1), (mine, 0), (ended, 1), (bobs, 1), (elsewhere, 1), (999, 3)]
        h.register("alice", running=running)
        assert h.messages(p.KILL, b"agent:alice@h1") == [
            {"jobs": [[mine, 0], [ended, 1], [bobs, 1], [elsewhere, 1], [999, 3]]}]
        h.register("alice", running=running, database_id="another")
        assert len(h.messages(p.KILL, b"agent:alice@h1")) == 1
        for entry in ([1], [1, "2"], "12", [1, 2, 3]):
            assert refused(h, "alice", p.REGISTER, b"agent:alice@h1", host="h1",
                           running=[entry]) == (BAD_REQUEST,
                                                "running entries must be [job id, attempt]")
    finally:
        h.close()


def test_a_heartbeat_requeues_what_its_agent_does_not_know_after_2_heartbeats_and_1_s(h):
    """Catches the heartbeat's reconciliation grace (2 heartbeats + 1 s after the RUN left)
    changed, and jobs the agent reports as ended but not yet acknowledged counted as unknown
    to it (x_heartbeat)."""
    h.register("alice")
    unknown, reported = h.submit("alice", "sleep 9", "sleep 9")
    sent = h.now
    h.at(sent + 5).heartbeat("alice", reported=[[reported, 1]])
    assert h.runs_to("alice") == [(unknown, 1), (reported, 1)]          # nothing sent again
    h.at(sent + 5.5).heartbeat("alice", reported=[[reported, 1]])
    assert (h.state(unknown), h.state(reported)) == ("dispatched", "dispatched")
    assert (unknown, 2) in h.runs_to("alice")            # requeued and sent again
    assert (reported, 2) not in h.runs_to("alice")


def test_events_are_acknowledged_by_sequence_and_only_from_the_registered_agent(h):
    """Catches EVENTS answered without its sequence number (the agent would resend for
    ever), a started report's time replaced by the server's clock, and a connection whose
    user changed not told to register again, with its text (x_events, x__agent)."""
    job = running_job(h)
    reply = h.request("alice", p.EVENTS, b"agent:alice@h1", seq=7, events=[])
    assert reply["seq"] == 7
    (other,) = h.submit("alice", "sleep 9")
    h.report("alice", "started", other, 1, time=h.now - 3)
    assert h.store.get_jobs([other])[0]["started"] == h.now - 3
    assert refused(h, "bob", p.EVENTS, b"agent:alice@h1", seq=1, events=[]) == (
        "UNKNOWN_AGENT", "agent connection changed user: register again")
    assert refused(h, "bob", p.EVENTS, b"agent:bob@h9", seq=1, events=[]) == (
        "UNKNOWN_AGENT", "agent not registered (server restarted?): register again")
    assert h.state(job) == "running"


def test_reports_about_attempts_that_are_not_the_agents_own(tmp_path):
    """Catches a report accepted from the user's agent on another host than the attempt's,
    a late report of an earlier attempt not recorded as stale, and another user's agent
    ending a cancelled job whose process still holds its slots (x__ours)."""
    h = CoreHarness(tmp_path, hosts=(("h1", 4), ("h2", 4)), outside_load=False)
    try:
        job = running_job(h)
        h.register("alice", host="h2")
        h.report("alice", "finished", job, 1, host="h2", exit_code=0)
        assert h.state(job) == "running"
        h.request("alice", p.CANCEL, ids=[job])
        h.register("bob")
        h.report("bob", "finished", job, 1, exit_code=0)
        assert h.core.hosts["h1"].slots_used == 1
        assert h.store.get_jobs([job])[0]["exit_code"] is None
        again = running_job(h, retries=1)
        h.request("root", p.ADMIN, command="deactivatehost", arg="h1")
        h.report("alice", "finished", again, 1, exit_code=None, signal=9,
                 reason="fenced: lease over")
        assert (again, 2) in h.runs_to("alice", host="h2")
        h.report("alice", "finished", again, 1, exit_code=0)
        assert ("stale", 1, "result of attempt 1 ignored (exit 0)") in story(h, again)
    finally:
        h.close()


def test_bye_is_not_refused_for_another_users_work_on_the_host(h):
    """Catches an idle agent kept because another user's job runs on its host (x_bye)."""
    running_job(h)
    h.register("bob")
    assert h.request("bob", p.BYE, b"agent:bob@h1")["bye"] is True


def test_stopped_agents_leave_their_host_unknown_with_the_reason(h):
    """Catches `hq-client cleanup` leaving the host's row without the reason it has no agent
    (fleet.stop_agent)."""
    h.register("alice")
    assert h.request("alice", p.AGENTS, action="stop")["stopped"] == ["h1"]
    assert (host_row(h)["status"], host_row(h)["status_reason"]) == ("unknown",
                                                                     "agents stopped")


def test_every_user_with_pending_jobs_is_asked_for_agents_in_one_tick(tmp_path):
    """Catches the users after one without a user-server, or after one whose agents already
    run everywhere, left unasked until a later tick (fleet.request_agents goes through the
    users in name order)."""
    h = CoreHarness(tmp_path, users=("aaron", "ann", "bob"), outside_load=False)
    try:
        for user in ("aaron", "bob"):
            h.hello(user)
        h.register("aaron")
        h.submit("aaron", *["sleep 9"] * 5)            # one waits: his agent runs everywhere
        h.submit("ann", "true")                         # no user-server to ask
        h.submit("bob", "true")
        h.turn(tick=True)
        assert h.messages(p.SPAWN, b"us:bob") == [{"hosts": [{"name": "h1", "address": ""}]}]
        assert h.messages(p.SPAWN, b"us:aaron") == []
    finally:
        h.close()


def test_a_users_slots_and_a_hosts_memory_add_up_over_jobs(h):
    """Catches the slots of a user or the memory held on a host set to the last job's instead
    of added up, or taken off (lsuser's slots, --mem jobs placed beyond the memory)
    (Core._hold_slots)."""
    h.register("alice")
    jobs = h.submit("alice", *["sleep 9"] * 3, memory=3 << 30)
    assert [h.state(j) for j in jobs] == ["dispatched", "dispatched", "pending"]
    assert h.request("alice", p.ADMIN, command="lsuser")["user"]["slots_used"] == 2


def test_each_transition_is_logged_with_its_host_and_each_end_pushed_to_the_user_server(h):
    """Catches events recorded without the attempt's host or with a made-up detail, and the
    ENDED push (which wakes waiting clients) not sent (Core._transition's event and
    listeners)."""
    h.hello("alice")
    job = running_job(h)
    h.report("alice", "finished", job, 1, exit_code=0)
    events = [(e["state"], e["host"], e["detail"]) for e in h.store.job_events([job])]
    assert events[:2] == [("pending", None, "submitted"), ("dispatched", "h1", "")]
    batch = h.store.get_jobs([job])[0]["batch"]
    assert h.messages(p.ENDED, b"us:alice") == [{"jobs": [[job, "done", 0, batch]]}]


def test_a_later_chunk_of_a_streamed_submission_grows_its_batch(h):
    """Catches the size of a batch not grown by its later chunks (`hq-submit -` streams long
    inputs in chunks) (Core.stage_batch)."""
    first = h.request("alice", p.SUBMIT, jobs=["true", "true"], env={}, cwd="/tmp")
    h.request("alice", p.SUBMIT, jobs=["true"] * 3, env={}, cwd="/tmp", batch=first["batch"])
    (row,) = h.store.query("SELECT size FROM batches WHERE id = ?", (first["batch"],))
    assert row["size"] == 5


def test_a_restarted_server_knows_its_hosts_as_they_were(tmp_path):
    """Catches a host's row read back wrong after a restart: address, slots, groups, state,
    facts, the last metrics and when they came, an unreachable host's reason, or a host that
    was up counted as up before its agents come back (core.host_from_row)."""
    h = CoreHarness(tmp_path, outside_load=False)
    h.store.add_hosts([HostEntry("h2", 3, ("big", "gpu"), "10.0.0.2"), HostEntry("h3", 2),
                       HostEntry("h4", 0)])
    h.close()
    h = CoreHarness(tmp_path, outside_load=False)
    metrics = {"load1": 1.5, "load5": 2.5, "load15": 3.5, "cpu_percent": 40.0,
               "mem_available": 5 << 30, "foreign_load": 0.5}
    h.register("alice", host="h2", cores=6, memory=16 << 30, **metrics)
    h.register("alice", host="h4", cores=6)
    h.request("root", p.ADMIN, command="deactivatehost", arg="h2")
    h.request("alice", p.UNREACHABLE, host="h3", reason="ssh: refused")
    shown = {n: h.request("root", p.ADMIN, command="hostinfo", arg=n)["host"] for n in ("h2", "h3")}
    h.close()
    again = CoreHarness(tmp_path, outside_load=False)
    try:
        for name, before in shown.items():
            after = again.request("root", p.ADMIN, command="hostinfo", arg=name)["host"]
            kept = {k: v for k, v in before.items()
                    if k not in ("status", "agents", "heartbeat_age", "slots_used")}
            assert {k: after[k] for k in kept} == kept, name
        h2 = again.request("root", p.ADMIN, command="hostinfo", arg="h2")["host"]
        assert (h2["address"], h2["max_slots"], h2["groups"], h2["in_config"], h2["state"],
                h2["cores"], h2["memory_total"], h2["os"], h2["load15"]) == (
            "10.0.0.2", 3, ["big", "gpu"], False, "inactive", 6, 16 << 30, "Linux", 3.5)
        assert again.core.hosts["h2"].status == "down"
        assert again.core.hosts["h3"].status == "unknown"
        assert again.core.hosts["h4"].slots == 6              # '-' in cluster.tab: its cores
        h3 = again.request("root", p.ADMIN, command="hostinfo", arg="h3")["host"]
        assert [h3[k] for k in ("cores", "memory_total", "os", "load1", "load5", "load15",
                                "cpu_percent", "mem_available", "foreign_load",
                                "status_reason")] == [0, 0, "", 0, 0, 0, 0, 0, 0,
                                                      "alice: ssh: refused"]
    finally:
        again.close()


def test_output_paths_get_the_job_the_array_index_and_the_batch(h):
    """Catches %j, %a or %A of --output paths not replaced, replaced by the wrong value, or
    %a replaced in a job that is not part of an array (core.job_path)."""
    h.register("alice")
    pattern = {"stdout": "o.%A.%a.%j", "stderr": "e.%j.%a"}
    array = h.request("alice", p.SUBMIT, jobs=[{"command": "true", "array_index": 3}],
                      defaults=pattern, env={}, cwd="/tmp")
    plain = h.request("alice", p.SUBMIT, jobs=["true"], defaults=pattern, env={}, cwd="/tmp")
    (a,), (b,) = array["ids"], plain["ids"]
    runs = {j["id"]: j for run in h.messages(p.RUN) for j in run["jobs"]}
    assert (runs[a]["stdout"], runs[a]["stderr"]) == (f"o.{array['batch']}.3.{a}", f"e.{a}.3")
    assert (runs[b]["stdout"], runs[b]["stderr"]) == ("o.%A.%a." + str(b), f"e.{b}.%a")
    assert h.store.get_jobs([a])[0]["stdout"] == f"o.{array['batch']}.3.{a}"


def test_a_new_agent_replaces_its_predecessor_and_an_admins_takes_over_the_metrics(h):
    """Catches a registering agent's predecessor kept (its messages still accepted), a new
    agent on a host already up not scheduling its user's waiting jobs at once, an admin's
    agent not taking over the host's metrics from a user's, and the note on a conflicting
    report of facts in bytes instead of MB (fleet.agent_registered, _take_facts)."""
    h.register("bob", memory=8 << 30)
    (job,) = h.submit("alice", "sleep 9")
    assert h.state(job) == "pending"
    h.request("alice", p.REGISTER, b"agent:alice@h1#1", host="h1", cores=4,
              memory_total=2 << 30)
    assert h.state(job) == "dispatched"
    assert h.core.hosts["h1"].facts_note == ("agent of alice reports 4 cores, 2048 MB; kept 4 "
                                             "cores, 8192 MB from bob")
    h.request("alice", p.REGISTER, b"agent:alice@h1#2", host="h1", cores=4)
    with pytest.raises(HQError) as gone:
        h.request("alice", p.HEARTBEAT, b"agent:alice@h1#1")
    assert gone.value.code == "UNKNOWN_AGENT"
    h.register("root")
    h.heartbeat("bob", load1=7.0)
    h.heartbeat("root", load1=1.0)
    h.heartbeat("bob", load1=7.0)
    assert h.core.hosts["h1"].load1 == 1.0


def test_metrics_are_sampled_once_a_minute_with_the_process_count(h):
    """Catches the host_metrics samples (lscluster's history) taken at every heartbeat or
    never, at exactly the interval refused, or without the number of processes (or with a
    count that is no count) (fleet._sample_metrics)."""
    h.register("alice", nprocs=0)
    start = h.now
    for after, nprocs in ((30, 5), (60, 7), (61, -1), (120, "x"), (180, 1 << 31)):
        h.at(start + after).heartbeat("alice", nprocs=nprocs)
    rows = h.store.query("SELECT time, nprocs FROM host_metrics ORDER BY time")
    assert [(r["time"] - start, r["nprocs"]) for r in rows] == [(0, 0), (60, 7), (120, None),
                                                                  (180, None)]


def test_a_hosts_row_gets_heartbeat_metrics_at_most_every_30_s_and_only_sane_ones(h):
    """Catches a host's row written at every heartbeat (an fsync per turn with thousands of
    agents) or a turn late, and metrics refused or let through at the wrong bounds (a load of
    0, memory beyond 4 GiB, numbers of 2**62 and more) (fleet.host_seen)."""
    h.register("alice", load1=1.0)
    start = h.now
    h.at(start + 29.9).heartbeat("alice", load1=2.0)
    assert host_row(h)["load1"] == 1.0
    h.at(start + 30).heartbeat("alice", load1=0.0, mem_available=8 << 30)
    assert (host_row(h)["load1"], host_row(h)["last_seen"]) == (0.0, start + 30)
    h.heartbeat("alice", mem_available=1 << 62)
    assert h.core.hosts["h1"].mem_available == 8 << 30
