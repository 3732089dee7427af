"""The store on SQLite and on MySQL: schema, standard entries, group commit, queries."""

import pytest

from hq.config import HostEntry
from hq.errors import HQError
from hq.model import Job
from hq.server.core import job_row
from hq.store.schema import SCHEMA_VERSION
from hq.store.writes import Writes


def new_job(job_id, state="pending", user="alice", batch=1):
    return job_row(Job(id=job_id, user=user, command=f"echo {job_id}", batch=batch,
                       state=state, submitted=1000.0 + job_id, cwd="/tmp"))


def test_create_tables_twice_is_harmless(store):
    store.create_tables()
    assert store.schema_version() == SCHEMA_VERSION
    store.check_schema()


def test_drop_tables_then_check_schema_says_what_to_run(store):
    store.drop_tables()
    with pytest.raises(HQError, match="hq-dbadmin --create-tables"):
        store.check_schema()


def test_standard_entries_keep_database_state(store):
    store.add_users([("alice", ["USER"]), ("bob", ["USER", "ADMIN"])])
    store.add_users([("alice", ["USER"])])
    assert set(store.load_users()) == {"alice", "bob"}
    store.add_hosts([HostEntry("n1", 4, ("g",), "n1"), HostEntry("n2", 0, (), "n2", "inactive")])
    w = Writes()
    w.update_host("n1", state="inactive")
    store.apply(w)
    store.add_hosts([HostEntry("n1", 8, ("g", "h"), "n1:22")])     # n2 removed from the table
    hosts = {h["name"]: h for h in store.load_hosts()}
    assert hosts["n1"]["state"] == "inactive"          # admin state survives a re-read
    assert (hosts["n1"]["max_slots"], hosts["n1"]["host_groups"]) == (8, "g,h")
    assert hosts["n2"]["state"] == "inactive" and hosts["n2"]["in_config"] == 0


def test_group_commit_writes_jobs_events_and_updates_together(store):
    w = Writes()
    w.batches.append({"id": 1, "user": "alice", "submitted": 1.0, "size": 3, "env": "{}"})
    w.jobs.extend(new_job(i) for i in (1, 2, 3))
    for i in (1, 2, 3):
        w.event(i, 1.0, "pending", 0, None, "submitted")
    store.apply(w)
    w = Writes()
    w.update_job(1, state="dispatched", host="n1", attempt=1)
    w.update_job(1, state="running", started=5.0)
    w.update_job(2, state="cancelled")
    w.event(1, 5.0, "running", 1, "n1", "")
    w.settings["cluster_state"] = "inactive"
    store.apply(w)
    jobs = {j["id"]: j for j in store.get_jobs([1, 2, 3])}
    assert (jobs[1]["state"], jobs[1]["host"], jobs[1]["started"]) == ("running", "n1", 5.0)
    assert jobs[2]["state"] == "cancelled" and jobs[3]["state"] == "pending"
    assert [j["id"] for j in store.load_live_jobs()] == [1, 3]
    assert store.count_states("alice") == {"running": 1, "cancelled": 1, "pending": 1}
    assert [e["state"] for e in store.job_events([1])] == ["pending", "running"]
    assert store.get_setting("cluster_state") == "inactive"
    assert store.max_ids() == (3, 1)
    assert store.batch_envs({1}) == {1: {}}


def test_failed_transaction_leaves_nothing(store):
    w = Writes()
    w.jobs.extend([new_job(1), new_job(1)])        # duplicate primary key
    with pytest.raises(HQError) as info:
        store.apply(w)
    assert info.value.code == "DATABASE_ERROR"
    assert store.get_jobs([1]) == []


def test_failure_late_in_a_large_commit_leaves_nothing(store):
    """MySQL sends a commit's statements together, in several round trips when large: a
    statement that fails after others succeeded still rolls the whole commit back."""
    w = Writes()
    w.batches.append({"id": 1, "user": "alice", "submitted": 1.0, "size": 2000, "env": "{}"})
    for i in range(1, 2001):
        w.jobs.append(new_job(i))
        w.jobs[-1]["command"] = f"echo {i} " + "x" * 1000
    w.event(1, 1.0, None, 0, None, "a state is required")
    with pytest.raises(HQError) as info:
        store.apply(w)
    assert info.value.code == "DATABASE_ERROR"
    assert store.get_jobs([1, 2000]) == [] and store.batch_owner(1) is None
    w.events.clear()
    store.apply(w)
    assert len(store.get_jobs(list(range(1, 2001)))) == 2000


def test_queries_filter_by_user_state_and_batch(store):
    w = Writes()
    w.jobs.extend([new_job(1), new_job(2, "done"), new_job(3, user="bob", batch=2)])
    store.apply(w)
    assert [j["id"] for j in store.list_jobs("alice")] == [1, 2]
    assert [j["id"] for j in store.list_jobs("alice", ["done"])] == [2]
    assert [j["id"] for j in store.list_jobs(None, batch=2)] == [3]
    assert [j["id"] for j in store.list_jobs("alice", limit=1, newest_first=True)] == [2]
    assert store.get_jobs([3], user="alice") == []


def test_many_updates_with_the_same_columns_in_one_commit(store):
    """Both backends, many rows per column set (MySQL sends them as UPDATE ... CASE slices)."""
    w = Writes()
    w.batches.append({"id": 1, "user": "alice", "submitted": 1.0, "size": 1203, "env": "{}"})
    w.jobs.extend(new_job(i) for i in range(1, 1204))
    store.apply(w)
    w = Writes()
    for i in range(1, 1204):
        w.update_job(i, state="done", exit_code=i % 7, finished=float(i),
                     reason=None if i % 2 else f"r{i}")
    w.batch_growth.append((5, 1))
    store.apply(w)
    jobs = store.get_jobs(list(range(1, 1204)))
    assert [(j["state"], j["exit_code"], j["finished"], j["reason"]) for j in jobs] == [
        ("done", i % 7, float(i), None if i % 2 else f"r{i}") for i in range(1, 1204)]
    assert store.query("SELECT size FROM batches WHERE id = 1")[0]["size"] == 1208
    assert store.batch_owner(1) == "alice" and store.batch_owner(2) is None
    assert store.count_states("alice", batch=1) == {"done": 1203}


def test_metrics_pruning_reservations_and_text_search(store):
    w = Writes()
    w.metrics += [("n1", 100.0, 1, 1, 1, 5.0, 1 << 30, 10, 0.5),
                  ("n1", 200.0, 1, 1, 1, 5.0, 1 << 30, 10, 0.0)]
    w.reservations.append({"code": "abc", "host": "n1", "slots": 2, "user": "alice", "users": "alice",
                           "created": 1.0})
    job = new_job(1)
    job.update(info_text="50% done_x", name="named")
    w.jobs.append(job)
    store.apply(w)
    store.apply(Writes(prune_metrics_before=150.0))
    assert [r["time"] for r in store.recent_metrics("n1")] == [200.0]
    assert [(r["code"], r["slots"]) for r in store.load_reservations()] == [("abc", 2)]
    assert [r["id"] for r in store.find_jobs("alice", "0% done_")] == [1]
    assert store.find_jobs("alice", "0%_done") == []          # % and _ match literally
    assert store.find_jobs("bob", "named") == []
    store.apply(Writes(reservations_deleted=["abc"]))
    assert store.load_reservations() == []


def test_a_batchs_status_is_counted_from_an_index_alone(store):
    """Catches a batch's status read from the jobs' rows (140-220 ms for a batch of 100,000
    on MySQL, holding the server's loop while 10 users polled their batches): the plan reads
    the covering index jobs_batch_state only."""
    sql = "SELECT state, COUNT(*) AS n FROM jobs WHERE batch = ? GROUP BY state"
    if store.dialect == "sqlite":
        rows = store.query("EXPLAIN QUERY PLAN " + sql, (1,))
        plan = " ".join(str(row["detail"]) for row in rows)
        assert "COVERING INDEX jobs_batch_state" in plan, plan
    else:
        (row,) = store.query("EXPLAIN " + sql, (1,))
        assert row["key"] == "jobs_batch_state" and "Using index" in row["Extra"], row
