"""Upgrade steps on both backends: a crash midway, a step half done, a newer schema, two
upgrades at once. (tests/test_upgrade.py upgrades databases made by old hq versions.)"""

import pytest

from hq.config import parse_db_url
from hq.errors import HQError
from hq.store import open_store
from hq.store import migrations
from hq.store.migrations import STEPS, Column, Setting
from hq.store.schema import SCHEMA_VERSION
from hq.store.writes import Writes
from tests.helpers import Cluster
from tests.test_store import new_job


def as_version_3(store):
    """The current tables with schema 4's additions taken out again, and three jobs."""
    w = Writes()
    w.batches.append({"id": 1, "user": "alice", "submitted": 1.0, "size": 3, "env": "{}",
                      "umask": None})
    w.jobs.extend(new_job(i) for i in (1, 2, 3))
    store.apply(w)
    with store.transaction() as cur:
        for op in STEPS[4]:
            if isinstance(op, Column):
                cur.execute(f"ALTER TABLE {op.table} DROP COLUMN {op.definition.split()[0]}")
            elif isinstance(op, Setting):
                cur.execute(store.sql("DELETE FROM settings WHERE name = ?"), (op.name,))
        cur.execute("UPDATE schema_version SET version = 3")


def columns(store, table):
    return set(store.query(f"SELECT * FROM {table} LIMIT 1")[0])


def test_a_step_half_done_is_finished(store):
    """A crash after the first ALTER of step 4 (MySQL commits each one) leaves version 3 with
    jobs.script there: catches a re-run that adds the column again and fails."""
    as_version_3(store)
    with store.transaction() as cur:
        cur.execute("ALTER TABLE jobs ADD COLUMN script TEXT")
    assert migrations.upgrade(store) == (3, SCHEMA_VERSION)
    assert {"script", "array_index"} <= columns(store, "jobs")
    assert "umask" in columns(store, "batches") and store.database_id()
    assert [j["id"] for j in store.get_jobs([1, 2, 3])] == [1, 2, 3]
    assert migrations.upgrade(store) == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_a_failing_step_rolls_back_on_sqlite_and_resumes_on_mysql(store):
    """A step that fails after its first change: SQLite keeps nothing of the upgrade (one
    transaction); MySQL keeps the steps done, records them, and a re-run finishes. Catches a
    version row moved before its step, and a re-run tripping over what was done."""
    as_version_3(store)
    broken = dict(STEPS)
    step = SCHEMA_VERSION + 1
    broken[step] = [Column("jobs", "extra INT"), Column("no_such_table", "y INT")]
    with pytest.raises(HQError) as info:
        migrations.upgrade(store, steps=broken, target=step)
    assert info.value.code == "DATABASE_ERROR" and "upgrade failed" in info.value.message
    if store.dialect == "sqlite":
        assert store.schema_version() == 3 and "script" not in columns(store, "jobs")
        assert "nothing changed" in info.value.message
    else:
        assert store.schema_version() == SCHEMA_VERSION and "extra" in columns(store, "jobs")
        assert "run it again" in info.value.message
    broken[step] = [Column("jobs", "extra INT")]
    assert migrations.upgrade(store, steps=broken, target=step)[1] == step
    assert {"script", "extra"} <= columns(store, "jobs")
    assert len(store.get_jobs([1, 2, 3])) == 3


def test_a_newer_schema_is_refused_everywhere(store, db_url):
    """An older hq must not write a newer database: hq-server, --create-tables and --upgrade
    all refuse it in one line. Catches a check that only looks for older versions."""
    store.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    for attempt in (store.check_schema, store.create_tables, lambda: migrations.upgrade(store)):
        with pytest.raises(HQError, match="is newer than this hq's"):
            attempt()
    other = open_store(parse_db_url(db_url))       # the refused upgrade holds no lock
    try:
        assert other.execute("UPDATE settings SET value = value") >= 0
    finally:
        other.close()
    cluster = Cluster(db_url)
    try:
        for command in (["hq-server"], ["hq-dbadmin", "--upgrade", "--yes"]):
            result = cluster.run(*command)
            assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
            assert "is newer than this hq's" in result.stderr
    finally:
        cluster.close()
    assert store.schema_version() == SCHEMA_VERSION + 1


def test_an_older_schema_names_the_upgrade(store):
    """Catches an older schema passed by the server's check (or created over)."""
    as_version_3(store)
    for attempt in (store.check_schema, store.create_tables):
        with pytest.raises(HQError, match="hq-dbadmin --upgrade"):
            attempt()


@pytest.mark.mysql
def test_two_upgrades_at_once_on_mysql(mysql_database):
    """A second upgrade while one runs is refused (MySQL's named lock), not interleaved.
    (SQLite serializes them with its write lock.)"""
    db_url = mysql_database.url
    first, second = open_store(parse_db_url(db_url)), open_store(parse_db_url(db_url))
    try:
        first.drop_tables()
        first.create_tables()
        as_version_3(first)
        with first.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT GET_LOCK(%s, 0)", (f"hq-upgrade-{first.config.database}",))
            with pytest.raises(HQError, match="another upgrade"):
                migrations.upgrade(second)
            cur.execute("SELECT RELEASE_LOCK(%s)", (f"hq-upgrade-{first.config.database}",))
        assert migrations.upgrade(second) == (3, SCHEMA_VERSION)
    finally:
        first.close()
        second.close()
