"""Tests written against the mutants that survived issue 14's runs (docs/mutation.md, "The
survivors left"): each names in its docstring the bug it catches and the mutants it kills
(mutmut's names: `mutmut show hq.server.core.xǁCoreǁ_accept__mutmut_24`). Like
tests/test_handlers.py they drive a real Core on a real SQLite database (tests/core_harness.py)."""

import pytest

from hq import protocol as p
from hq.errors import PERMISSION_DENIED, UNKNOWN_USER, HQError
from hq.config import Settings
from hq.server import fleet, handlers
from hq.server.core import Core, user_from_row
from tests.core_harness import CoreHarness


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path, outside_load=False)
    yield harness
    harness.close()


def rows(h, ids):
    return {r["id"]: (r["state"], r["finished"]) for r in h.store.get_jobs(ids)}


def running_job_of(h, user, **defaults):
    """A job of `user` running on h1 (its agent registered, RUN sent, started reported)."""
    h.register(user)
    (job,) = h.submit(user, "sleep 100", **defaults)
    h.report(user, "started", job, 1, pid=4242)
    assert h.state(job) == "running"
    return job


def stage(h, user, **body):
    """Handle a message without ending the turn (its commit comes with a later `turn`)."""
    body.setdefault("req", 900 + len(h.sent))
    handlers.handle(h.core, handlers.Peer(f"us:{user}".encode(), user), body.pop("kind"), body)


def test_a_batch_cancelled_while_its_chunk_awaits_its_commit_cancels_admitted_and_parked(h):
    """Catches a chunk of a streamed `hq-submit -` committed in the turn its batch is cancelled
    (`hq-client cancel --batch`) left waiting: its jobs in memory not cancelled (or without
    their end time), its jobs parked in the database not cancelled, or cancelled without time
    (Core._accept mutants 24-27, 29-35)."""
    h.core.parking.limit = 4
    keep = h.submit("alice", "true", "true")         # another batch: 2 of alice's 4 live jobs
    first = h.request("alice", p.SUBMIT, jobs=["true"], env={}, cwd="/tmp")
    h.at(1010.0)
    stage(h, "alice", kind=p.SUBMIT, jobs=["true"] * 3, env={}, cwd="/tmp",
          batch=first["batch"])
    stage(h, "alice", kind=p.CANCEL, batch=first["batch"])
    h.turn()
    h.turn()                         # the cancels of the accepted chunk are committed
    assert set(h.core.jobs) == set(keep)            # 2 jobs of the chunk admitted, 1 parked
    ids = list(range(first["ids"][0], first["ids"][0] + 4))
    assert rows(h, ids) == {i: ("cancelled", 1010.0) for i in ids}
    # a second batch while alice has parked jobs: its chunks are parked whole
    other = h.request("alice", p.SUBMIT, jobs=["true"], env={}, cwd="/tmp")["ids"][0]
    h.at(1020.0)
    stage(h, "alice", kind=p.SUBMIT, jobs=["true"], env={}, cwd="/tmp",
          batch=h.store.get_jobs([other])[0]["batch"])
    stage(h, "alice", kind=p.CANCEL, batch=h.store.get_jobs([other])[0]["batch"])
    h.turn()
    h.turn()
    assert rows(h, [other, other + 1]) == {other: ("cancelled", 1020.0),
                                           other + 1: ("cancelled", 1020.0)}
    assert rows(h, keep) == {i: ("pending", None) for i in keep}


def test_jobs_with_scripts_loaded_after_a_restart_keep_their_own_scripts(tmp_path):
    """Catches scripts of waiting jobs lost, or mixed between jobs, when a restarted server
    loads them (Core.make_live mutants 14-20)."""
    h = CoreHarness(tmp_path, outside_load=False)
    ids = h.submit("alice", {"command": "a.sh 1", "script": "echo A"},
                   {"command": "b.sh 2", "script": "echo B"},
                   {"command": "a.sh 3", "script": "echo A"})
    h.close()
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        h.register("alice")
        (run,) = h.messages(p.RUN)
        got = {j["id"]: (run["scripts"][j["script"]], j["args"]) for j in run["jobs"]}
        assert got == {ids[0]: ("echo A", ["1"]), ids[1]: ("echo B", ["2"]),
                       ids[2]: ("echo A", ["3"])}
        assert len(run["scripts"]) == 2
    finally:
        h.close()


def test_parked_jobs_loaded_as_the_users_jobs_run_down_are_scheduled_at_once(h):
    """Catches parked jobs made live without a scheduling pass: they would wait for the next
    change (Core.make_live mutants 42, 43)."""
    h.core.parking.limit = 2
    h.register("alice")
    ids = h.submit("alice", "true", "true", "true", "true")
    assert sorted(h.runs_to("alice")) == [(ids[0], 1), (ids[1], 1)]
    for job in ids[:2]:
        h.report("alice", "finished", job, 1, exit_code=0)
    h.core.parking.refill(h.now)           # as the loop's tick does
    h.turn()
    assert sorted(h.runs_to("alice")) == [(i, 1) for i in ids]


def answered_at_once(h, user, kind, identity=None, **body):
    """Handle one message and return what left at once, before any commit: [(to, body)]."""
    h.core.outbox.take_now()
    body["req"] = 77
    handlers.handle(h.core, handlers.Peer(identity or f"us:{user}".encode(), user), kind, body)
    sent = [(to, p.decode(frames, p.ALL_KINDS)) for to, frames in h.core.outbox.take_now()]
    h.turn()
    return [(to, reply) for to, (k, reply) in sent if k == p.OK]


def test_heartbeats_and_reads_are_answered_before_the_commit_and_the_rest_after_it(h):
    """Catches a heartbeat's reply waiting for the commit (an agent's lease is renewed only by
    it, also while the database is out) or sent to no one or without its `req`; a read or a
    read-only admin command waiting for a commit; a request that changes something answered
    before its commit (handlers.handle mutants 13, 14, 18, 58-61)."""
    agent = h.register("alice")
    assert answered_at_once(h, "alice", p.HEARTBEAT, agent, running=[]) == [
        (agent, {"req": 77, "metrics": True, "every": 4.0, "lease_s": 11.0})]   # idle host
    assert answered_at_once(h, "alice", p.EVENTS, agent, seq=5, events=[]) == []   # at commit
    assert answered_at_once(h, "alice", p.STATUS)[0][0] == b"us:alice"
    assert answered_at_once(h, "root", p.ADMIN, command="lscluster")[0][0] == b"us:root"
    assert answered_at_once(h, "root", p.ADMIN, command="deactivate") == []
    assert answered_at_once(h, "alice", p.HOLD, ids=h.submit("alice", "true")) == []


def test_unknown_and_disabled_users_are_refused_with_their_code_and_what_to_do(h):
    """Catches the refusals of a user missing from etc/users or disabled without their code or
    text (handlers.handle mutants 34-37, 44, 47-49)."""
    with pytest.raises(HQError) as refused:
        h.request("mallory", p.STATUS)
    assert (refused.value.code, refused.value.message) == (
        UNKNOWN_USER, "user 'mallory' is not registered in etc/users")
    h.request("root", p.ADMIN, command="disableuser", arg="bob")
    with pytest.raises(HQError) as refused:
        h.submit("bob", "true")
    assert (refused.value.code, refused.value.message) == (
        PERMISSION_DENIED, "user 'bob' is disabled: no new jobs "
        "(an admin can 'hq-admin enableuser:NAME')")


def test_a_restarted_server_numbers_on_from_the_last_job_and_batch_and_loads_its_limit(tmp_path):
    """Catches ids after a restart that skip or reuse a number (job ids and batch ids go on
    from the last in the database), and a restart loading every waiting job instead of the
    first `limit_per_user` of each user (Core.load mutants 19, 20, 21, 23)."""
    h = CoreHarness(tmp_path, outside_load=False)
    first = h.request("alice", p.SUBMIT, jobs=["true"] * 3, env={}, cwd="/tmp")
    h.close()
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        again = h.request("alice", p.SUBMIT, jobs=["true"], env={}, cwd="/tmp")
        assert (again["ids"], again["batch"]) == ([first["ids"][-1] + 1], first["batch"] + 1)
        core = Core(Settings(outside_load=False), h.store, h.now)
        core.load(h.store, h.now, limit_per_user=2)
        assert sorted(core.jobs) == first["ids"][:2]
    finally:
        h.close()


def test_a_child_whose_parent_ended_badly_or_vanished_fails_with_its_end_time_and_why(tmp_path):
    """Catches a child submitted after its parent was cancelled failed without its end time,
    and a waiting child whose parent's row is gone from the database (when a restarted server
    loads it) failed without saying the parent ended `unknown` (Core.settle_dependencies
    mutants 13, 14, 23, 29)."""
    h = CoreHarness(tmp_path, outside_load=False)
    (parent,) = h.submit("alice", "true", hold=True)
    (gone,) = h.submit("alice", "true", hold=True)
    (waiting,) = h.submit("alice", "true", depends_on=str(gone))
    h.request("alice", p.CANCEL, ids=[parent])
    h.at(1050.0)
    (child,) = h.submit("alice", "true", depends_on=str(parent))
    assert rows(h, [child]) == {child: ("failed", 1050.0)}
    h.store.execute("DELETE FROM jobs WHERE id = ?", (gone,))
    h.close()
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        h.turn()                            # the first turn commits what the load changed
        assert rows(h, [waiting]) == {waiting: ("failed", 1000.0)}
        (detail,) = [r["detail"] for r in h.store.query(
            "SELECT detail FROM job_events WHERE job_id = ? AND state = 'failed'", (waiting,))]
        assert detail == f"dependency: job {gone} ended unknown"
    finally:
        h.close()


def test_a_listings_reasons_leave_out_outside_load_when_it_is_not_counted(h):
    """Catches the reasons of a listing computed as if outside load were counted when the
    setting says it is not (Core.waiting_reason mutant 55: the memo's first look at a shape)."""
    h.register("alice")
    h.heartbeat("alice", foreign_load=2.0)
    h.submit("alice", *["sleep 9"] * 3)                 # 1 of h1's 4 slots left
    wide = h.submit("alice", "sleep 9", "sleep 9", cores=2)
    reasons = {j["id"]: j.get("reason") for j in h.request("alice", p.LIST)["jobs"]}
    assert [reasons[i] for i in wide] == [
        "resources: needs 2 slots; hosts that fit have at most 1 free"] * 2


def test_memory_held_on_a_host_adds_up_over_passes_and_jobs_without_mem(h):
    """Catches the memory held on a host set to the last placed job's instead of added up:
    a job without --mem placed after a --mem job would free the latter's memory, and a third
    --mem job would start beyond the host's memory (Core._hold_slots mutant 24)."""
    h.register("alice")                                  # h1: 4 slots, 8 GiB
    (big,) = h.submit("alice", "sleep 9", memory=5 << 30)
    (small,) = h.submit("alice", "sleep 9")
    (more,) = h.submit("alice", "sleep 9", memory=5 << 30)
    assert [h.state(j) for j in (big, small, more)] == ["dispatched", "dispatched", "pending"]
    assert h.core.hosts["h1"].mem_reserved == 5 << 30


def test_a_fenced_report_about_a_job_that_already_ended_is_recorded_as_stale(h):
    """Catches an agent's report that it killed an attempt at the end of its lease, arriving
    after the job ended (its report crossed the end's), failing the EVENTS or not recorded as
    a stale result at the time it came (Core.attempt_fenced mutants 3, 4, 16-19)."""
    h.register("alice")
    (job,) = h.submit("alice", "sleep 9")
    h.report("alice", "finished", job, 1, exit_code=0)
    h.at(1030.0)
    fenced = "fenced: no answer from hq-server within the lease (11s)"
    assert h.report("alice", "finished", job, 1, exit_code=None, signal=9,
                    reason=fenced)["seq"] == 1
    last = h.store.job_events([job])[-1]
    assert (last["state"], last["attempt"], last["detail"], last["time"]) == (
        "stale", 1, "result of attempt 1 ignored (exit None)", 1030.0)
    assert h.state(job) == "done"


def test_an_agent_registering_with_the_end_of_a_job_that_already_ended_is_accepted(h):
    """Catches a REGISTER refused (the agent could never come back) when the ends it is about
    to report include a job that has already ended (Core.await_result mutant 4)."""
    h.register("alice")
    (job,) = h.submit("alice", "true")
    h.report("alice", "finished", job, 1, exit_code=0)
    reply = h.request("alice", p.REGISTER, b"agent:alice@h1", host="h1", cores=4, os="Linux",
                      memory_total=8 << 30, running=[], reported=[[job, 1]])
    assert reply["heartbeat_s"] == h.core.settings.heartbeat_s
    assert h.state(job) == "done"


def test_the_exporter_measures_queue_wait_up_to_the_dispatch(h):
    """Catches the transition's time not given to listeners: the Prometheus exporter's queue
    wait (submission to dispatch) could not be measured (Core._transition mutant 60)."""
    from hq.server.exporter import Exporter
    exporter = Exporter(0)
    try:
        h.core.listeners.append(exporter.on_transition)
        h.submit("alice", "true")
        h.at(1012.5)
        h.register("alice")
        assert exporter.registry.get_sample_value("hq_queue_wait_seconds_sum") == 12.5
        assert exporter.registry.get_sample_value("hq_dispatched_total") == 1
    finally:
        exporter.server.shutdown()
        exporter.server.server_close()


def test_a_host_that_was_down_is_down_after_a_restart(tmp_path):
    """Catches a host stored `down` read back as `unknown` by a restarted server
    (core.host_from_row mutant 64)."""
    h = CoreHarness(tmp_path, outside_load=False)
    h.register("alice")
    h.at(1007.0).turn(tick=True)                     # 3 heartbeats of silence: down
    assert h.store.query("SELECT status FROM hosts WHERE name = 'h1'")[0]["status"] == "down"
    h.close()
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        assert h.core.hosts["h1"].status == "down"
        (shown,) = h.request("root", p.ADMIN, command="lscluster")["hosts"]
        assert shown["status"] == "down"
    finally:
        h.close()


@pytest.mark.parametrize("first", ["alice", "bob"])
def test_each_gone_agents_grace_is_judged_on_its_own_also_while_the_database_is_out(tmp_path,
                                                                                   first):
    """Catches the look at gone agents stopping at the first one still in its grace (the jobs
    of a later one whose grace is over kept), or at the first one whose requeue waits for the
    database (later ones in their grace not asked for again) (fleet.check_liveness mutants 44,
    46). Alice's lease outlasts bob's, so her grace ends later whichever is found gone first."""
    h = CoreHarness(tmp_path, outside_load=False, spawn_retry_s=1.0)
    try:
        h.hello("alice")
        bobs = running_job_of(h, "bob", retries=1)
        alices = running_job_of(h.at(1004.0), "alice")
        h.at(1005.0)
        for user in (first, {"alice": "bob", "bob": "alice"}[first]):
            fleet.undeliverable(h.core, f"agent:{user}@h1".encode(), h.now)
        assert h.core.gone == {("alice", "h1"): 1010.0, ("bob", "h1"): 1006.0}  # lease ends
        h.turn()
        asked = len(h.messages(p.SPAWN, b"us:alice"))
        h.core.db_ok = False
        h.at(1016.5).turn(tick=True)           # bob's grace is over, alice's is not
        assert len(h.messages(p.SPAWN, b"us:alice")) == asked + 1
        assert (h.state(bobs), h.state(alices)) == ("running", "running")
        h.core.db_ok = True
        h.at(1016.6).turn(tick=True)
        assert (h.state(bobs), h.state(alices)) == ("pending", "running")
    finally:
        h.close()


def test_outside_load_leaves_out_only_other_users_jobs_and_is_corrected_once(h):
    """Catches the reporting agent's own jobs taken off the outside load it reports (it can
    tell them apart), and a heartbeat without `foreign_load` taking other users' jobs off the
    last value again (fleet.host_seen mutants 26, 41)."""
    h.register("alice")                                 # alice's agent reports the metrics
    running_job_of(h, "alice")
    running_job_of(h, "bob")
    h.heartbeat("alice", foreign_load=3.0)              # bob's job (1 slot) counted in it
    assert h.core.hosts["h1"].foreign_load == 2.0
    h.heartbeat("alice", load1=0.5)
    assert h.core.hosts["h1"].foreign_load == 2.0


def test_an_agent_back_after_a_restart_writes_its_hosts_row_at_once(tmp_path):
    """Catches the first heartbeat row of a host a restarted server counted as up (it has
    attempts) failing or waiting: no row written yet this run (fleet.host_seen mutants 48,
    50)."""
    h = CoreHarness(tmp_path, outside_load=False)
    running_job_of(h, "alice")
    h.close()
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        fleet.expect_agents(h.core, h.now)
        h.at(1003.0).register("alice", load1=1.5)
        (row,) = h.store.query("SELECT last_seen, load1 FROM hosts WHERE name = 'h1'")
        assert (row["last_seen"], row["load1"]) == (1003.0, 1.5)
    finally:
        h.close()


def test_a_second_admins_agent_leaves_the_metrics_to_the_first_admins(h):
    """Catches an admin's agent taking the host's metrics from another admin's agent (only a
    user's agent gives them up to an admin's) (fleet.agent_registered mutant 45)."""
    h.store.add_users([("ops", ["USER", "ADMIN"])])
    h.core.users["ops"] = user_from_row(h.store.load_users()["ops"])    # as a reload does
    h.register("root")
    h.register("ops")
    h.heartbeat("root", load1=1.0)
    h.heartbeat("ops", load1=9.0)
    assert (h.core.hosts["h1"].reporter, h.core.hosts["h1"].load1) == ("root", 1.0)


def test_a_registration_clears_an_unreachable_hosts_reason_in_its_row(tmp_path):
    """Catches the host's row keeping the reason it was unreachable once an agent registers
    there (a restarted server would show it again) (fleet.agent_registered mutant 62)."""
    h = CoreHarness(tmp_path, outside_load=False)
    h.request("alice", p.UNREACHABLE, host="h1", reason="ssh: connection refused")
    h.register("alice")
    assert h.store.query("SELECT status_reason FROM hosts")[0]["status_reason"] == ""
    h.close()
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        assert h.core.hosts["h1"].status_reason == ""
    finally:
        h.close()


def test_after_a_restart_the_first_agent_reports_the_hosts_facts_again(tmp_path):
    """Catches a restarted server keeping the cores and memory it stored for a host instead of
    taking the first agent's report of this run (fleet._take_facts mutant 3)."""
    h = CoreHarness(tmp_path, outside_load=False)
    h.register("alice", cores=4)
    h.close()
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        h.register("alice", cores=6, memory=16 << 30)
        host = h.core.hosts["h1"]
        assert (host.cores, host.memory_total, host.facts_note) == (6, 16 << 30, "")
    finally:
        h.close()


def test_a_register_without_cores_or_os_counts_one_core_and_no_os(tmp_path):
    """Catches the defaults of a REGISTER that leaves out cores and OS (an old agent): for a
    host never reported one core and an empty OS, for a known host what it has (an admin's
    agent's report is believed) (handlers.agent.register mutants 36, 37, 67, 68)."""
    h = CoreHarness(tmp_path, hosts=(("h1", 4), ("h2", 4)), outside_load=False)
    try:
        h.request("alice", p.REGISTER, b"agent:alice@h1", host="h1", memory_total=1 << 30,
                  running=[])
        assert (h.core.hosts["h1"].cores, h.core.hosts["h1"].os) == (1, "")
        h.register("alice", host="h2", cores=6)                     # reports Linux
        h.request("root", p.REGISTER, b"agent:root@h2", host="h2", memory_total=8 << 30,
                  running=[])
        assert (h.core.hosts["h2"].cores, h.core.hosts["h2"].os) == (6, "Linux")
    finally:
        h.close()


def test_short_jobs_runtimes_let_jobs_wait_at_the_agent(h):
    """Catches a job's runtime taken as its end plus its start: short jobs would count as long
    and no job would be dispatched ahead to wait at the agent (handlers.agent.events mutant
    77)."""
    h.register("alice")
    (job,) = h.submit("alice", "true")
    h.report("alice", "finished", job, 1, exit_code=0, started=h.now - 0.01)
    ids = h.submit("alice", *["true"] * 12)
    assert [h.state(i) for i in ids] == ["dispatched"] * 12       # 4 slots, 12 dispatched


def test_another_users_agent_cannot_end_a_job_requeued_from_its_host(h):
    """Catches a report of bob's agent about alice's job, requeued from their host, taken as
    the end of that job's attempt there (handlers.agent._ours mutants 1, 2)."""
    job = running_job_of(h, "alice", retries=1)
    h.at(h.now + 7).turn(tick=True)                             # alice's agent went silent
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert h.state(job) == "pending"
    h.register("bob")
    h.report("bob", "finished", job, 1, exit_code=0)
    assert h.state(job) == "pending"
    assert [e["state"] for e in h.store.job_events([job])][-1] == "pending"


def test_the_attempt_of_a_cancelled_job_lost_with_its_agent_gives_back_its_slots(h):
    """Catches the end of an attempt whose job is no longer live (cancelled while it ran, its
    agent then gone for the grace) failing the loop's tick: the host's slots would stay taken
    (Core.attempt_gone mutant 8)."""
    job = running_job_of(h, "alice")
    h.request("alice", p.CANCEL, ids=[job])
    assert h.core.hosts["h1"].slots_used == 1                   # until the process ended
    h.at(h.now + 7).turn(tick=True)                             # the agent went silent
    h.at(h.now + h.core.settings.requeue_grace_s).turn(tick=True)
    assert (h.core.hosts["h1"].slots_used, h.core.user_slots["alice"]) == (0, 0)
    assert h.state(job) == "cancelled"


def test_batches_are_numbered_one_after_another(h):
    """Catches a batch id skipped at each submission (Core.stage_batch mutant 6)."""
    first = h.request("alice", p.SUBMIT, jobs=["true"], env={}, cwd="/tmp")["batch"]
    second = h.request("bob", p.SUBMIT, jobs=["true"], env={}, cwd="/tmp")["batch"]
    assert second == first + 1



def test_while_agents_come_back_after_a_restart_only_users_running_short_are_refilled(
        h, monkeypatch):
    """Catches a restarted server refilling every user's parked jobs up to half the limit
    while its agents are coming back (170,000 rows took most of the loop for 17 s, and agents
    missed their leases): inside the window a user is refilled only at restart_load() jobs in
    memory or fewer, after it at half the limit as before."""
    parking = h.core.parking
    parking.limit = 8
    monkeypatch.setattr(parking, "restart_load", lambda: 2)
    h.register("alice")
    h.register("bob")
    ids = h.submit("alice", *["sleep 100"] * 12)          # 8 in memory, 4 parked
    bobs = h.submit("bob", *["sleep 100"] * 12)
    assert ids[8] not in h.core.jobs and bobs[8] not in h.core.jobs
    parking.live["alice"] = parking.live["bob"] = 4       # as if 4 of each had ended
    parking.lean_until = h.now + 10
    parking.refill(h.now)
    assert ids[8] not in h.core.jobs and bobs[8] not in h.core.jobs, "refilled in the window"
    parking.live["alice"] = 2
    parking.refill(h.now)                                 # inside it, running short
    assert ids[8] in h.core.jobs and bobs[8] not in h.core.jobs
    parking.refill(h.now + 10)
    assert bobs[8] in h.core.jobs, "not refilled at half the limit after the window"
