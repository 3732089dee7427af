"""Three agents on this machine play hosts of 1, 2 and 4 slots: placement, dependencies, time
limits, draining and administration, checked through the real command lines and the database."""

import json
import os

import pytest

from tests.helpers import Cluster, read_pid, wait_until

pytestmark = pytest.mark.slow

HOSTS = (("h1", "1", "small", "127.0.0.1"), ("h2", "2", "small", "localhost"),
         ("h4", "4", "big", "127.0.0.1"))
SLOTS = {"h1": 1, "h2": 2, "h4": 4}
TERMINAL = {"done", "failed", "cancelled", "lost"}


@pytest.fixture(scope="module", params=["sqlite", "mysql"])
def three(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('three')}/hq.sqlite"
    else:
        url = request.getfixturevalue("mysql_database").url
    cluster = Cluster(url, hosts=HOSTS)
    try:
        cluster.setup_database()
        cluster.start_server()
        yield cluster
    finally:
        cluster.close()


def run_json(cluster, *args):
    return json.loads(cluster.run(*args, check=True).stdout)


def submit(cluster, *args, **kw):
    result = cluster.run("hq-submit", *args, **kw)
    assert result.returncode == 0, result.stderr
    return [int(line) for line in result.stdout.split()]


def jobs(cluster, ids):
    return run_json(cluster, "hq-client", "details", "--json", *map(str, ids))


def wait_ended(cluster, ids, timeout=45):
    return wait_until(lambda: (lambda js: js if all(j["state"] in TERMINAL for j in js)
                               else None)(jobs(cluster, ids)), timeout, 0.2,
                      f"jobs {ids[:5]}... to end")


def peak_concurrency(intervals):
    """Most intervals open at one moment (an end at the same instant as a start comes first)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_one_agent_per_local_host_and_forty_jobs_never_oversubscribe(three):
    lines = "".join(f"sleep 0.{i % 4 + 1}\n" for i in range(40))
    ids = submit(three, "-", input=lines)
    assert len(ids) == 40
    finished = wait_ended(three, ids, timeout=60)
    assert {j["state"] for j in finished} == {"done"}
    by_host = {}
    for job in finished:
        by_host.setdefault(job["host"], []).append((job["started"], job["finished"]))
    assert set(by_host) == set(SLOTS), "every host played by an agent of its own took work"
    for host, intervals in by_host.items():
        assert peak_concurrency(intervals) <= SLOTS[host], f"{host} oversubscribed"
    cluster = run_json(three, "hq-admin", "lscluster", "--json")
    configured = [h for h in cluster["hosts"] if h["in_config"]]   # (not h8 of the reload test)
    assert {h["name"]: h["max_slots"] for h in configured} == SLOTS
    assert all(h["status"] == "up" and h["agents"] for h in configured)
    pids = [read_pid(os.path.join(three.home, "run", f"agent-{name}.pid")) for name in SLOTS]
    assert all(pids) and len(set(pids)) == 3, pids


def test_host_and_group_requests_are_obeyed(three):
    pinned = submit(three, "--host", "h1", "-", input="true\n" * 4)
    grouped = submit(three, "--group", "small", "-", input="true\n" * 6)
    done = wait_ended(three, pinned + grouped)
    assert {j["host"] for j in done[:4]} == {"h1"}
    assert {j["host"] for j in done[4:]} <= {"h1", "h2"}
    result = three.run("hq-submit", "-c", "5", "true")
    assert result.returncode != 0 and "NO_HOST_FITS" in result.stderr
    result = three.run("hq-submit", "--host", "h9", "true")
    assert result.returncode != 0 and "UNKNOWN_HOST" in result.stderr
    result = three.run("hq-submit", "--mem", "100T", "true")     # host memory is known by now
    assert result.returncode != 0 and "NO_HOST_FITS" in result.stderr


def test_priority_decides_who_gets_a_freed_slot(three, tmp_path):
    go = tmp_path / "go"
    blocker, = submit(three, "--host", "h1", f"while [ ! -e {go} ]; do sleep 0.05; done")
    wait_until(lambda: jobs(three, [blocker])[0]["state"] == "running", 20, 0.1,
               "the blocker to run on h1")
    low, = submit(three, "--host", "h1", "-p", "0", "true")
    high, = submit(three, "--host", "h1", "-p", "5", "true")
    waiting = jobs(three, [low])[0]
    assert waiting["state"] == "pending" and waiting["reason"].startswith("priority"), waiting
    go.touch()
    ended = {j["id"]: j for j in wait_ended(three, [blocker, low, high])}
    assert ended[high]["started"] < ended[low]["started"], "the higher priority ran first"


def test_after_chains_run_in_order_and_failure_propagates(three, tmp_path):
    """Catches a chain run out of order, and a dependent released when its parent failed or
    was cancelled. The parents still run when their dependents are submitted (issue 14:
    the failing parent always ended first, so a live parent's failure releasing its child
    went unnoticed). Checked with `if ended_state == DONE` made `if True` in
    Core._release_dependents: the skipped job runs."""
    go = tmp_path / "go"
    wait_go = f"while [ ! -e {go} ]; do sleep 0.05; done; "
    first, = submit(three, "sleep 0.3")
    second, = submit(three, "--after", str(first), "sleep 0.2")
    third, = submit(three, "--after", f"{first},{second}", "true")
    bad, = submit(three, wait_go + "exit 4")
    doomed, = submit(three, wait_go + "true")
    skipped, = submit(three, "--after", str(bad), "true")
    chained, = submit(three, "--after", str(skipped), "true")
    orphan, = submit(three, "--after", str(doomed), "true")
    for job in jobs(three, [bad, doomed, skipped, chained, orphan]):
        assert job["state"] not in TERMINAL, job
    three.run("hq-client", "cancel", str(doomed), check=True)
    go.touch()
    a, b, c, d, e, f, g = wait_ended(three, [first, second, third, bad, skipped, chained,
                                             orphan])
    assert [a["state"], b["state"], c["state"]] == ["done"] * 3
    assert a["finished"] <= b["started"] and b["finished"] <= c["started"]
    assert (d["state"], d["exit_code"]) == ("failed", 4)
    assert (e["state"], e["reason"], e["started"]) == ("failed", "dependency", None)
    assert (f["state"], f["reason"]) == ("failed", "dependency")
    assert (g["state"], g["reason"], g["started"]) == ("failed", "dependency", None)
    result = three.run("hq-submit", "--after", "999999", "true")
    assert result.returncode != 0 and "UNKNOWN_JOB" in result.stderr


def test_time_limit_kills_in_time(three):
    job_id, = submit(three, "-t", "1", "sleep 30")
    job, = wait_ended(three, [job_id], timeout=20)
    assert (job["state"], job["reason"], job["signal"]) == ("failed", "time limit", 15)
    from datetime import datetime
    took = (datetime.fromisoformat(job["finished"].rstrip("Z"))
            - datetime.fromisoformat(job["started"].rstrip("Z"))).total_seconds()
    assert 0.9 <= took < 4, took


def test_deactivated_host_drains_and_says_why(three):
    running, = submit(three, "--host", "h4", "sleep 1.5")
    wait_until(lambda: jobs(three, [running])[0]["state"] == "running", 15, 0.1,
               "the job on h4 to run")
    three.run("hq-admin", "deactivatehost:h4", check=True)
    waiting, = submit(three, "--group", "big", "true")
    job, = jobs(three, [waiting])
    assert job["state"] == "pending" and job["reason"].startswith("host inactive"), job
    drained, = wait_ended(three, [running])
    assert drained["state"] == "done", "the running job finished on the inactive host"
    assert jobs(three, [waiting])[0]["state"] == "pending"
    info = run_json(three, "hq-admin", "hostinfo:h4", "--json")
    assert info["host"]["state"] == "inactive" and info["jobs"] == []
    three.run("hq-admin", "activatehost:h4", check=True)
    assert wait_ended(three, [waiting])[0]["host"] == "h4"


def test_hold_release_and_disabled_user_wait(three):
    held, = submit(three, "--hold", "true")
    assert jobs(three, [held])[0]["reason"] == "held"
    user = run_json(three, "hq-admin", "lsusers", "--json")["users"][0]["name"]
    last = three.run("hq-admin", f"disableuser:{user}")
    assert last.returncode != 0 and "last enabled admin" in last.stderr
    with open(os.path.join(three.etc, "users"), "a") as users:
        users.write("deputy USER,ADMIN\n")          # another admin: now it may be disabled
    three.run("hq-admin", "reload", check=True)
    three.run("hq-admin", f"disableuser:{user}", check=True)
    try:
        refused = three.run("hq-submit", "true")
        assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr
        three.run("hq-client", "release", str(held), check=True)
        job, = jobs(three, [held])
        assert job["state"] == "pending" and job["reason"] == "user disabled"
        listed = run_json(three, "hq-admin", "lsuser:" + user, "--json")["user"]
        assert listed["enabled"] is False and listed["counts"]["pending"] >= 1
    finally:
        three.run("hq-admin", f"enableuser:{user}", check=True)
    assert wait_ended(three, [held])[0]["state"] == "done"
    result = three.run("hq-admin", "lsuser:nobody")
    assert result.returncode != 0 and "UNKNOWN_USER" in result.stderr


def test_admin_jobs_hostinfo_and_reload(three):
    submit(three, "--wait", "--host", "h2", "true")
    listed = run_json(three, "hq-admin", "jobs", "--state", "done", "--json")["jobs"]
    assert listed and {j["state"] for j in listed} == {"done"}
    info = run_json(three, "hq-admin", "hostinfo:h2", "--json")
    assert info["host"]["cores"] >= 1 and info["metrics"], "health samples recorded"
    assert {"load1", "foreign_load", "mem_available"} <= set(info["metrics"][0])
    bad = three.run("hq-admin", "hostinfo:nosuch")
    assert bad.returncode != 0 and "UNKNOWN_HOST" in bad.stderr and "Traceback" not in bad.stderr
    three.write_cluster(HOSTS[1:] + (("h8", "8", "big", "127.0.0.1"),))
    try:
        reply = run_json(three, "hq-admin", "reload", "--json")
        assert reply["removed"] == ["h1"]
        hosts = {h["name"]: h for h in run_json(three, "hq-admin", "lscluster", "--json")["hosts"]}
        assert hosts["h8"]["max_slots"] == 8 and not hosts["h1"]["in_config"]
        wide, = submit(three, "-c", "6", "--wait", "echo $HQ_HOST")
        assert jobs(three, [wide])[0]["host"] == "h8"
        pinned = three.run("hq-submit", "--host", "h1", "true")
        assert pinned.returncode != 0 and "UNKNOWN_HOST" in pinned.stderr
    finally:
        three.write_cluster(HOSTS)
        three.run("hq-admin", "reload", check=True)
    # issue 14: was `os.path.exists(three.etc)`, always true. The reload back brings h1 into
    # the configuration again (a job pinned to it runs) and drains h8
    hosts = {h["name"]: h for h in run_json(three, "hq-admin", "lscluster", "--json")["hosts"]}
    assert hosts["h1"]["in_config"] and not hosts["h8"]["in_config"]
    back, = submit(three, "--host", "h1", "--wait", "true")
    assert jobs(three, [back])[0]["host"] == "h1"
    refused = three.run("hq-submit", "--host", "h8", "true")
    assert refused.returncode != 0 and "UNKNOWN_HOST" in refused.stderr


def test_reserved_slots_go_only_to_jobs_with_the_code(three):
    code = three.run("hq-reservation", "-a", "h2:2", check=True).stdout.strip()
    try:
        shown = run_json(three, "hq-reservation", "-s", "--json")
        assert [(r["code"], r["host"], r["slots"]) for r in shown] == [(code, "h2", 2)]
        normal = submit(three, "--group", "small", "-", input="sleep 0.2\n" * 4)
        coded = submit(three, "--reservation", code, "-", input="sleep 0.1\n" * 3)
        done = wait_ended(three, normal + coded)
        assert {j["state"] for j in done} == {"done"}
        assert {j["host"] for j in done[:4]} == {"h1"}, "reserved slots stayed free"
        assert {j["host"] for j in done[4:]} == {"h2"}
        assert peak_concurrency([(j["started"], j["finished"]) for j in done[4:]]) <= 2
        bad = three.run("hq-submit", "--reservation", "nosuch", "true")
        assert bad.returncode != 0 and "no reservation 'nosuch'" in bad.stderr
        wide = three.run("hq-submit", "--reservation", code, "-c", "3", "true")
        assert wide.returncode != 0 and "NO_HOST_FITS" in wide.stderr
    finally:
        three.run("hq-reservation", "-d", code, check=True)
    assert run_json(three, "hq-reservation", "-s", "--json") == []


def test_original_words(three):
    """Catches the original hq's words answering wrong (the counts use this test's own 12
    jobs: issue 14, it relied on earlier tests' jobs)."""
    ids = submit(three, "-n", "wordy", "-i", "find-me-please", "-", input="true\n" * 12)
    wait_ended(three, ids)
    assert [j["id"] for j in run_json(three, "hq-client", "lsfjobs:2", "--json")] == ids[-2:]
    assert set(ids) <= {j["id"] for j in run_json(three, "hq-client", "lsfjobs:all", "--json")}
    assert [j["id"] for j in run_json(three, "hq-client", "lsfjobs", "--json")] == ids[-10:]
    found = run_json(three, "hq-client", "findjobs:me-please", "--json")
    assert sorted(j["id"] for j in found) == ids
    job, = run_json(three, "hq-client", "lajob:" + str(ids[0]), "--json")
    assert job["name"] == "wordy" and job["events"]
    held, = submit(three, "--hold", "true")
    assert [j["id"] for j in run_json(three, "hq-client", "lswjobs", "--json")] == [held]
    three.run("hq-client", "cancel", str(held), check=True)
    agents = run_json(three, "hq-client", "lss", "--json")
    assert {a["host"] for a in agents} >= {"h1", "h2", "h4"}   # (h8: left by the reload test)
    pids = three.agent_pids()
    stopped = run_json(three, "hq-client", "cleanup", "--json")
    assert set(stopped["stopped"]) >= {"h1", "h2", "h4"} and stopped["busy"] == []
    from tests.helpers import pid_alive
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 15, 0.1, "agents to exit")
    assert run_json(three, "hq-client", "lss", "--json") == []
    asked = run_json(three, "hq-client", "invokeservers", "--json")["asked"]
    assert sorted(asked) == ["h1", "h2", "h4"]
    wait_until(lambda: len(run_json(three, "hq-client", "lss", "--json")) == 3, 20, 0.2,
               "agents to start again")
    bad = three.run("hq-client", "lsrjobs:zero")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_wide_job_gets_a_reserved_host_instead_of_starving(tmp_path):
    """Narrow jobs keep a 4-slot host busy; the 4-slot job that waited reserve_after_s gets the
    host reserved, runs before the narrow jobs submitted after it, and `details` says why.
    (SQLite only: the scheduler does not touch the database.)"""
    cluster = Cluster(f"sqlite:///{tmp_path}/hq.sqlite", hosts=(("h4", "4", "big", "127.0.0.1"),))
    try:
        cluster.setup_database()
        cluster.set_config("scheduler", "reserve_after_s", "1")
        cluster.start_server()
        go = tmp_path / "go"                      # the first narrow jobs end when it exists
        first = submit(cluster, "-", input=f"while [ ! -e {go} ]; do sleep 0.05; done\n" * 3)
        wait_until(lambda: all(j["state"] == "running" for j in jobs(cluster, first)), 20, 0.1,
                   "three narrow jobs to run")
        wide, = submit(cluster, "-c", "4", "sleep 0.2")
        later = submit(cluster, "-", input="sleep 0.5\n" * 6)
        reserved = wait_until(lambda: (lambda j: j if j.get("reserved_host") else None)(
            jobs(cluster, [wide])[0]), 15, 0.1, "a host reserved for the wide job")
        assert reserved["reserved_host"] == "h4" and "reserved" in reserved["reason"]
        go.touch()
        ended = {j["id"]: j for j in wait_ended(cluster, first + [wide] + later, timeout=60)}
        assert ended[wide]["state"] == "done"
        reserved_at, = [e["time"] for e in ended[wide]["events"] if e["state"] == "reserved"]
        overtook = [i for i in later if ended[i]["started"] < ended[wide]["started"]]
        assert all(ended[i]["started"] <= reserved_at for i in overtook), \
            "a narrow job started on the reserved host before the wide job"
        assert len(overtook) < len(later)
    finally:
        cluster.close()
