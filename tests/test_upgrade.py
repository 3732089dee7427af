"""Upgrades from every earlier schema, on both backends: a database made by that version's own
hq-dbadmin (its commit, from git), filled with jobs in every state, upgraded by the current
`hq-dbadmin --upgrade`, then read back row by row and served by the current hq-server."""

import getpass
import itertools
import json
import os
import re
import sqlite3
import subprocess

import pytest

from hq.config import parse_db_url
from hq.jobview import event_json, job_json
from hq.store import introspect, open_store
from hq.store.schema import SCHEMA_VERSION
from tests.helpers import REPO, Cluster, unavailable

# (label, commit, schema version): each shape a released hq wrote. Version 1 shipped in two
# shapes (depends_on, reservation, foreign_load and reservations came before the bump to 2).
OLD = [
    ("v1", "0dd8e68f8db881fd542b465ca98696ec1f10f4d8", 1),
    ("v1-late", "c10f77a473676aee11d731af9ca78f4a000626c5", 1),
    ("v2", "321cbcbc9e8c4022cb9fa5e878a8dbfc70272d95", 2),
    ("v3", "47e2c16b18cf7babccebf8b7ee56d73bbb9b42b2", 3),
    ("v4", "f340c7f6cf092d0b834a61e2d44664fad81ad9cc", 4),
    ("v5", "e2aa8a406a9b97f5fa507aa029f5be615dff8205", 5),
]
ME = getpass.getuser()
STATES = ["held", "pending", "dispatched", "running", "done", "failed", "cancelled", "lost"]
# Columns a step adds, and the value every old row must have in them after the upgrade.
ADDED = {("hosts", "foreign_load"): None, ("host_metrics", "foreign_load"): None,
         ("jobs", "depends_on"): "", ("jobs", "reservation"): "", ("jobs", "entry"): "",
         ("jobs", "script"): "", ("jobs", "array_index"): None, ("batches", "umask"): None,
         ("reservations", "users"): None}
KEYS = {"schema_version": "version", "settings": "name", "users": "name", "hosts": "name",
        "batches": "id", "jobs": "id", "job_events": "id", "host_metrics": "id",
        "reservations": "code, host"}
_numbers = itertools.count(1)


def old_rows():
    """Rows for every table, with a value for every column any version had."""
    jobs = [job(i, state) for i, state in enumerate(STATES, start=1)]
    events = [{"id": n, "job_id": j["id"], "time": 1e9 + n, "state": s, "attempt": 1,
               "host": "gone", "detail": f"event {n}"}
              for n, (j, s) in enumerate(((j, s) for j in jobs for s in ("pending", j["state"])),
                                         start=1)]
    return {
        "settings": [{"name": "cluster_state", "value": "active"}],
        "users": [{"name": ME, "roles": "USER,ADMIN", "enabled": 1, "public_key": None,
                   "created": 1e9},
                  {"name": "olduser", "roles": "USER", "enabled": 0, "public_key": "k" * 40,
                   "created": 1e9 + 1}],
        "hosts": [{"name": "gone", "address": "gone.invalid", "max_slots": 2,
                   "host_groups": "g1", "state": "inactive", "status": "down", "in_config": 1,
                   "cores": 4, "memory_total": 8 << 30, "os": "Linux", "load1": 0.5,
                   "load5": 0.25, "load15": 0.125, "cpu_percent": 12.5,
                   "mem_available": 4 << 30, "nprocs": 100, "last_seen": 1e9 + 50,
                   "status_reason": "old reason", "foreign_load": 0.75}],
        "batches": [{"id": 1, "user": ME, "submitted": 1e9, "size": len(jobs),
                     "env": json.dumps({"OLD": "1"}), "umask": 0o027}],
        "jobs": jobs,
        "job_events": events,
        "host_metrics": [{"id": n, "host": "gone", "time": 1e9 + n, "load1": 0.5 * n,
                          "load5": 0.25, "load15": 0.125, "cpu_percent": 10.0 + n,
                          "mem_available": n << 30, "nprocs": 90 + n, "foreign_load": 0.5}
                         for n in (1, 2)],
        "reservations": [{"code": "r1", "host": "gone", "slots": 1, "user": ME,
                          "created": 1e9 + 2, "users": ME}],
    }


def job(job_id, state):
    """A job as each state leaves it; waiting ones can never run (inactive host)."""
    row = {"id": job_id, "batch": 1, "user": ME, "name": f"old{job_id}",
           "command": f"echo old {job_id}", "state": state, "cores": 1, "memory": 1 << 20,
           "priority": job_id % 3, "host_req": "gone", "group_req": "", "exclude_hosts": "",
           "stdout": f"/tmp/old{job_id}.out", "stderr": f"/tmp/old{job_id}.err", "logfile": "",
           "info_text": f"info {job_id} – ünïcode", "shell": "/bin/sh", "time_limit": 60 * job_id,
           "retries": 1, "cwd": "/tmp", "submitted": 1e9 + job_id + 0.25, "attempt": 0,
           "host": None, "started": None, "finished": None, "exit_code": None,
           "term_signal": None, "max_rss": None, "reason": "",
           "depends_on": "5" if job_id in (2, 6) else "",
           "reservation": "r1" if state == "cancelled" else "",
           "entry": f"line {job_id}" if job_id % 2 else "",
           "script": "#!/bin/sh\necho old\n" if job_id == 3 else "",
           "array_index": job_id if job_id in (4, 5) else None}
    if state in ("dispatched", "running", "done", "failed", "cancelled", "lost"):
        row.update(attempt=1, host="gone")
    if state in ("running", "done", "failed", "lost"):
        row["started"] = 1e9 + 100.5
    if state in ("done", "failed", "cancelled", "lost"):
        row["finished"] = 1e9 + 200.75
    row.update({"done": {"exit_code": 0, "max_rss": 12345},
                "failed": {"exit_code": 3, "term_signal": 9, "reason": "exit 3"},
                "cancelled": {"reason": "cancelled"}, "held": {"reason": "held"},
                "lost": {"reason": "lost: host down"}}.get(state, {}))
    return row


@pytest.fixture(scope="module")
def old_trees(tmp_path_factory):
    """Each old commit's bin/, hq/, etc/ and agents/, from this repository's history."""
    missing = [c for _, c, _ in OLD if subprocess.run(
        ["git", "-C", REPO, "cat-file", "-e", f"{c}^{{commit}}"], capture_output=True
    ).returncode != 0]
    if missing:
        reason = f"git history without {', '.join(c[:8] for c in missing)} (a shallow clone?)"
        unavailable(reason, "the upgrade tests")
    trees = {}
    for label, commit, _ in OLD:
        path = tmp_path_factory.mktemp(f"hq-{label}")
        archive = subprocess.run(["git", "-C", REPO, "archive", commit, "bin", "hq", "etc",
                                  "agents"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
        trees[commit] = str(path)
    return trees


@pytest.fixture(params=["sqlite", "mysql"])
def fresh_url(request, tmp_path):
    """A database nobody has used yet (its own MySQL database, dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hq.sqlite"
        return
    request.applymarker(pytest.mark.mysql)
    session = request.getfixturevalue("mysql_database")
    need_mysqldump()
    name = f"{session.name}_up{next(_numbers)}"
    session.conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield session.url.rsplit("/", 1)[0] + "/" + name
    session.conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


def need_mysqldump():
    """MySQL backups need the client's mysqldump: skipped with a reason, failed under CI."""
    import shutil
    from hq.store.backup import DUMP_TOOLS
    if not any(map(shutil.which, DUMP_TOOLS)):
        reason = "mysqldump not installed (Debian: apt-get install mariadb-client)"
        unavailable(reason, "the upgrade tests")


def make_old_database(tree, cluster, version):
    """The old hq-dbadmin creates the tables; rows go in with that version's columns only."""
    env = {k: v for k, v in cluster.env.items() if k != "HQPATH"}    # the old tree's own
    result = subprocess.run([os.path.join(tree, "bin", "hq-dbadmin"), "--create-tables"],
                            env=env, cwd=tree, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    store = open_store(parse_db_url(cluster.db_url))
    try:
        assert store.schema_version() == version
        with store.transaction() as cur:
            present = introspect.tables(cur, store.dialect)
            for table, rows in old_rows().items():
                if table not in present:
                    continue
                columns = list(introspect.columns(cur, store.dialect, table))
                unknown = [c for c in columns if c not in rows[0]]
                assert not unknown, f"{table}: no test value for {unknown}"
                cur.executemany(store.sql(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                    f"({', '.join('?' * len(columns))})"),
                    [tuple(row[c] for c in columns) for row in rows])
        return dump(store)
    finally:
        store.close()


def dump(store):
    """{table: [row dicts in key order]} of every table there is."""
    with store.transaction() as cur:
        present = introspect.tables(cur, store.dialect)
    return {t: store.query(f"SELECT * FROM {t} ORDER BY {KEYS[t]}") for t in KEYS if t in present}


def fresh_shape(url):
    """The catalogue of a database the current hq made."""
    store = open_store(parse_db_url(url))
    try:
        store.drop_tables()
        store.create_tables()
        with store.transaction() as cur:
            return introspect.shape(cur, store.dialect)
    finally:
        store.drop_tables()
        store.close()


def check_rows_kept(before, after):
    """Every old row reads as before, column by column; added columns hold their default."""
    for table, rows in before.items():
        assert len(after[table]) == len(rows), table
        for old, new in zip(rows, after[table]):
            assert {c: new[c] for c in old} == old, table
            extra = {c: new[c] for c in new if c not in old}
            assert extra == {c: ADDED[(table, c)] for c in extra}, table


@pytest.mark.slow
@pytest.mark.parametrize("label, commit, version", OLD, ids=[o[0] for o in OLD])
def test_upgrade_keeps_every_row_and_serves(label, commit, version, old_trees, fresh_url,
                                           tmp_path):
    """Catches: a column or table an upgrade step forgets (shape differs from a fresh
    database), a row changed or lost, added columns without their defaults, no database_id,
    a backup missing or taken after the change, and a server that cannot serve an upgraded
    database (old jobs read differently through `hq-client details`, a new job not done)."""
    cluster = Cluster(fresh_url, hosts=(("localhost", "-", "local", "127.0.0.1"),
                                        ("gone", "2", "g1", "gone.invalid", "inactive")))
    cluster.set_config("server", "requeue_grace_s", "600")     # old running jobs stay so
    try:
        before = make_old_database(old_trees[commit], cluster, version)
        if label == "v3":           # the same check for every version: once is enough
            refused = cluster.run("hq-server")
            assert refused.returncode != 0 and refused.stderr.count("\n") == 1
            assert "is older than this hq's" in refused.stderr and "hq-dbadmin --upgrade" in \
                refused.stderr and "Traceback" not in refused.stderr
        backup_file = str(tmp_path / "before-upgrade")
        result = cluster.run("hq-dbadmin", "--upgrade", f"--backup={backup_file}", check=True)
        assert f"from schema {version} to {SCHEMA_VERSION}" in result.stdout
        check_backup(backup_file, fresh_url, version)
        store = open_store(parse_db_url(fresh_url))
        try:
            assert store.schema_version() == SCHEMA_VERSION
            assert re.fullmatch(r"[0-9a-f]{16}", store.database_id())
            after = dump(store)
            old_id = [r["value"] for r in before["settings"] if r["name"] == "database_id"]
            assert old_id in ([], [store.database_id()])       # an existing id is kept
            for rows_of in (before, after):
                rows_of["settings"] = [r for r in rows_of["settings"]
                                       if r["name"] != "database_id"]
            before.pop("schema_version")
            check_rows_kept(before, after)
            with store.transaction() as cur:
                shape = introspect.shape(cur, store.dialect)
            rows = {r["id"]: r for r in store.get_jobs(list(range(1, len(STATES) + 1)))}
            events = store.job_events(sorted(rows))
        finally:
            store.close()
        if label == "v3":
            again = cluster.run("hq-dbadmin", "--upgrade", check=True)
            assert "nothing to upgrade" in again.stdout
        serve_and_compare(cluster, rows, events)
    finally:
        cluster.close()
    assert shape == fresh_shape(fresh_url)


def check_backup(path, url, version):
    """The backup holds the database as it was before the upgrade."""
    assert os.stat(path).st_mode & 0o777 == 0o600
    if url.startswith("sqlite"):
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(version,)]
            assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == len(STATES)
        return
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert re.search(rf"INSERT INTO `schema_version` VALUES\s*\({version}\);", text)
    assert "CREATE TABLE `jobs`" in text and "echo old 8" in text


def serve_and_compare(cluster, rows, events):
    """The current hq-server loads the upgraded database: `details` shows each old job as
    its row says (live ones from memory), with its events; a new job runs to done."""
    cluster.start_server()
    shown = json.loads(cluster.run("hq-client", "details", "--json", *map(str, sorted(rows)),
                                   check=True).stdout)
    by_job = {}
    for e in events:
        by_job.setdefault(e["job_id"], []).append(event_json(e))
    for job_shown in shown:
        row = rows[job_shown["id"]]
        expected = job_json(row)
        if row["state"] in ("held", "pending"):      # says why it waits, from the server
            expected.pop("reason"), job_shown.pop("reason")
        assert {k: job_shown[k] for k in expected} == expected
        assert job_shown["events"] == by_job[row["id"]]
    submitted = cluster.run("hq-submit", "--wait", "echo new", check=True, timeout=60)
    new_id = int(submitted.stdout.split()[0])
    assert new_id > max(rows)
    new = json.loads(cluster.run("hq-client", "details", "--json", str(new_id),
                                 check=True).stdout)[0]
    assert (new["state"], new["exit_code"]) == ("done", 0)
