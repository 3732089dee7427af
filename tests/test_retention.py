"""Retention on both backends: exactly the finished jobs that ended before a time go, with
their events and emptied batches; live jobs, newer jobs and other tables stay."""

import pytest

from hq.store.writes import Writes
from tests.helpers import Cluster, wait_until
from tests.test_store import new_job

BEFORE = 1000.0                                  # 1970-01-01T00:16:40Z
# id: (batch, state, finished, time of the last event, depends_on)
JOBS = {1: (1, "done", 500.0, 500.0, ""),
        2: (1, "failed", 900.0, 900.0, ""),
        3: (1, "cancelled", None, 800.0, ""),        # cancelled while running, no result
        4: (1, "cancelled", None, 1500.0, ""),       # the same, cancelled after BEFORE
        5: (1, "done", 1500.0, 1500.0, ""),          # newer
        6: (1, "running", None, 600.0, ""),          # live
        7: (1, "lost", 999.9, 999.9, ""),
        8: (1, "done", 200.0, 200.0, ""),            # a live job still depends on it
        9: (1, "pending", None, 50.0, "8"),
        10: (2, "done", 100.0, 100.0, ""),           # batch 2 ends up empty: it goes
        11: (2, "failed", 100.0, 100.0, ""),
        12: (3, "done", 100.0, 100.0, ""),           # batch 3 keeps job 13
        13: (3, "held", None, 40.0, "")}
PRUNED = {1, 2, 3, 7, 10, 11, 12}


def fill(store):
    w = Writes()
    for batch in (1, 2, 3):
        w.batches.append({"id": batch, "user": "alice", "submitted": 10.0 * batch, "size": 1,
                          "env": "{}", "umask": None})
    for job_id, (batch, state, finished, last, depends_on) in JOBS.items():
        row = new_job(job_id, state, batch=batch)
        row.update(submitted=5.0, finished=finished, depends_on=depends_on)
        w.jobs.append(row)
        w.event(job_id, 5.0, "pending", 0, None, "submitted")
        w.event(job_id, last, state, 1, "n1", "")
    w.metrics += [("n1", 100.0, 1, 1, 1, 5.0, 1, 10, 0.5), ("n1", 2000.0, 1, 1, 1, 5.0, 1, 10, 0.)]
    w.reservations.append({"code": "c", "host": "n1", "slots": 1, "user": "alice",
                           "created": 1.0})
    w.settings["cluster_state"] = "active"
    store.apply(w)
    store.add_users([("alice", ["USER"])])


def dump(store):
    return {t: store.query(f"SELECT * FROM {t} ORDER BY 1, 2") for t in
            ("settings", "users", "hosts", "batches", "jobs", "job_events", "host_metrics",
             "reservations")}


def expected_after(before):
    gone = {"jobs": lambda r: r["id"] in PRUNED, "job_events": lambda r: r["job_id"] in PRUNED,
            "batches": lambda r: r["id"] == 2}
    return {t: [r for r in rows if not gone.get(t, lambda r: False)(r)]
            for t, rows in before.items()}


@pytest.mark.parametrize("limit", [10000, 2])
def test_prune_finished_removes_exactly_the_old_finished_jobs(store, limit):
    """Catches: live, newer or still-needed jobs deleted; events or other tables touched; a
    batch deleted while it has jobs, or left behind empty; a batch size over `limit`; a
    cancelled job without an end time pruned by its start instead of its last event."""
    fill(store)
    before = dump(store)
    total, after_id, calls = {"jobs": 0, "job_events": 0, "batches": 0, "kept": 0}, 0, 0
    while True:
        counts = store.prune_finished(BEFORE, limit, after_id=after_id)
        calls += 1
        assert counts["jobs"] <= limit and counts["scanned"] <= limit
        for key in total:
            total[key] += counts[key]
        after_id = counts["last_id"]
        if counts["scanned"] < limit:
            break
    assert dump(store) == expected_after(before)
    assert total == {"jobs": len(PRUNED), "job_events": 2 * len(PRUNED), "batches": 1,
                     "kept": 1}
    assert calls == (1 if limit > len(JOBS) else 5)
    assert store.prune_finished(BEFORE, limit)["jobs"] == 0


def test_prune_metrics_removes_only_older_rows(store):
    """Catches metrics pruning that ignores its time or its limit."""
    w = Writes()
    w.metrics += [("n1", float(t), 1, 1, 1, 5.0, 1, 10, 0.0) for t in (10, 20, 30, 2000)]
    store.apply(w)
    assert store.prune_metrics(1000.0, limit=2) == 2
    assert store.prune_metrics(1000.0, limit=2) == 1
    assert store.prune_metrics(1000.0) == 0
    assert [r["time"] for r in store.recent_metrics("n1")] == [2000.0]


def test_dbadmin_prune_before(store, db_url):
    """The admin command: a date, --yes, counts printed; a bad date or no --yes off a
    terminal is one line. Catches a date read in local time instead of UTC."""
    fill(store)
    before = dump(store)
    cluster = Cluster(db_url)
    try:
        refused = cluster.run("hq-dbadmin", "--prune-before=1970-01-01T00:16:40Z")
        assert refused.returncode != 0 and "--yes" in refused.stderr
        bad = cluster.run("hq-dbadmin", "--prune-before=last tuesday", "--yes")
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1
        assert "not a date" in bad.stderr and "Traceback" not in bad.stderr
        assert dump(store) == before
        local = dict(cluster.env, TZ="XYZ+5")      # a naive time read locally: 5 h later
        done = cluster.run("hq-dbadmin", "--prune-before=1970-01-01T00:16:40", "--yes",
                           check=True, env=local)
        assert (f"deleted {len(PRUNED)} jobs, {2 * len(PRUNED)} job events and 1 batches"
                in done.stdout), done.stdout
        assert "kept 1 that live jobs depend on" in done.stdout
        assert dump(store) == expected_after(before)
        day = cluster.run("hq-dbadmin", "--prune-before=1970-01-02", "--yes", check=True)
        assert "deleted 2 jobs" in day.stdout        # 4 and 5 (8 is still needed by 9)
    finally:
        cluster.close()


def test_server_deletes_finished_jobs_past_job_retention_days(db_url):
    """[server] job_retention_days: hq-server deletes finished jobs older than the retention
    on its own, and keeps live ones. Catches a setting that is read but never enforced."""
    c = Cluster(db_url)
    c.set_config("server", "job_retention_days", "0.00002")       # 1.7 s
    with c.running():
        done = c.run("hq-submit", "--wait", "true", check=True).stdout.split()[0]
        held = c.run("hq-submit", "--hold", "true", check=True).stdout.strip()

        def shown(job):
            return c.run("hq-client", "details", "--json", job).returncode == 0
        wait_until(lambda: not shown(done), 30, 0.2, "the finished job to be deleted")
        assert shown(held)
        assert "retention: 1 finished jobs" in c.server_log()
