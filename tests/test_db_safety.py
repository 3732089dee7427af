"""The database's files and secrets: backups on both backends, a wrong MySQL password said as
such, SQLite files private, a warning for a readable hq-db.cfg with a password, --info."""

import os
import re
import sqlite3
import stat

import pytest

from hq.errors import HQError
from hq.store import backup, open_store
from hq.store.schema import SCHEMA_VERSION
from hq.store.sqlite import SqliteStore
from hq.store.writes import Writes
from tests.helpers import MYSQL, Cluster
from tests.test_store import new_job
from tests.test_upgrade import need_mysqldump


@pytest.fixture
def quiet(db_url):
    """etc/ and HQ_HOME for hq commands on `db_url`; no process started."""
    cluster = Cluster(db_url)
    yield cluster
    cluster.close()


def one_line(result, *words):
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_backup_copies_the_database_while_it_is_open(store, quiet, tmp_path):
    """Catches a backup missing rows, readable by others, over an existing file, or left
    half written under the final name after a failure."""
    if store.dialect == "mysql":
        need_mysqldump()
    w = Writes()
    w.batches.append({"id": 1, "user": "alice", "submitted": 1.0, "size": 2, "env": "{}",
                      "umask": 18})
    w.jobs += [new_job(1), new_job(2, "done")]
    store.apply(w)
    (tmp_path / "backups").mkdir()
    target = tmp_path / "backups" / "copy"
    result = quiet.run("hq-dbadmin", f"--backup={target}", check=True)
    assert f"backed up {store.describe()} to {target}" in result.stdout
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    if store.dialect == "sqlite":
        with sqlite3.connect(target) as conn:
            assert conn.execute("SELECT id, state FROM jobs ORDER BY id").fetchall() == [
                (1, "pending"), (2, "done")]
            assert conn.execute("SELECT value FROM settings WHERE name = 'database_id'"
                                ).fetchone()[0] == store.database_id()
    else:
        text = target.read_text()
        assert "CREATE TABLE `jobs`" in text and "'echo 2'" in text
    one_line(quiet.run("hq-dbadmin", f"--backup={target}"), "exists", "[DATABASE_ERROR]")
    assert os.listdir(tmp_path / "backups") == ["copy"]


@pytest.mark.mysql
def test_backup_without_mysqldump_says_what_to_install(mysql_database, tmp_path, monkeypatch):
    """Catches a missing client tool turning into a traceback or an empty backup file."""
    from hq.config import parse_db_url
    store = open_store(parse_db_url(mysql_database.url))
    monkeypatch.setattr(backup, "DUMP_TOOLS", ("hq-no-such-dump",))
    try:
        with pytest.raises(HQError, match="mysqldump not found.*mariadb-client") as info:
            backup.backup(store, str(tmp_path / "copy"))
        assert info.value.code == "CONFIG_ERROR" and os.listdir(tmp_path) == []
    finally:
        store.close()


@pytest.mark.mysql
def test_wrong_mysql_password_is_said_as_such(mysql_database, tmp_path):
    """Catches the raw PyMySQL error (or 'no hq tables', or a traceback) for a wrong password,
    from HQ_DB_URL and from hq-db.cfg, for hq-dbadmin and hq-server."""
    cluster = Cluster(mysql_database.url)
    wrong = MYSQL["password"] + "-wrong"
    who = f"{MYSQL['user']}@{MYSQL['host']}"
    try:
        env = dict(cluster.env, HQ_DB_URL=re.sub(r"//[^@]*@", f"//{MYSQL['user']}:{wrong}@",
                                                 mysql_database.url))
        for command in (["hq-dbadmin", "--info"], ["hq-dbadmin", "--create-tables"],
                        ["hq-server"]):
            one_line(cluster.run(*command, env=env),
                     f"access denied for {who}: wrong password in HQ_DB_URL? [DATABASE_ERROR]")
        env.pop("HQ_DB_URL")
        path = os.path.join(cluster.etc, "hq-db.cfg")
        with open(path, "w") as handle:
            handle.write(f"[database]\nbackend = mysql\nhost = {MYSQL['host']}\nport = "
                         f"{MYSQL['port']}\nuser = {MYSQL['user']}\npassword = {wrong}\n"
                         f"database = {mysql_database.name}\n")
        os.chmod(path, 0o600)
        one_line(cluster.run("hq-dbadmin", "--info", env=env),
                 f"access denied for {who}: wrong password in hq-db.cfg? [DATABASE_ERROR]")
    finally:
        cluster.close()


def test_readable_db_config_with_a_password_warns_once(tmp_path, caplog, monkeypatch):
    """Catches a password file others can read passing silently (and a warning without a
    password, or repeated at every load)."""
    from hq import config
    monkeypatch.delenv("HQ_DB_URL", raising=False)     # set by tests using hq.Client
    path = tmp_path / "hq-db.cfg"
    path.write_text("[database]\nbackend = mysql\npassword = secret\n")
    os.chmod(path, 0o640)
    config.load_db_config(str(tmp_path))
    config.load_db_config(str(tmp_path))
    warned = [r.getMessage() for r in caplog.records if r.name == "hq.config"]
    assert len(warned) == 1 and "readable by group" in warned[0] and "chmod 600" in warned[0]
    assert caplog.records[0].levelname == "WARNING"
    caplog.clear()
    os.chmod(path, 0o600)
    other = tmp_path / "other"
    other.mkdir()
    (other / "hq-db.cfg").write_text("[database]\nbackend = mysql\n")     # no password
    os.chmod(other / "hq-db.cfg", 0o644)
    config.load_db_config(str(tmp_path))
    config.load_db_config(str(other))
    assert caplog.records == []


def test_readable_db_config_warns_through_dbadmin(tmp_path):
    """The warning is one line before the command's own output, not a traceback."""
    cluster = Cluster(f"sqlite:///{tmp_path}/unused.sqlite")
    try:
        env = dict(cluster.env)
        env.pop("HQ_DB_URL")
        path = os.path.join(cluster.etc, "hq-db.cfg")
        with open(path, "w") as handle:
            handle.write("[database]\nbackend = mysql\nhost = 127.0.0.1\nport = 1\n"
                         "password = secret\n")
        os.chmod(path, 0o644)
        result = cluster.run("hq-dbadmin", "--info", env=env)
        lines = result.stderr.splitlines()
        assert len(lines) == 2 and "readable by group and others" in lines[0], result.stderr
        assert lines[1].startswith("hq-dbadmin: ") and "Traceback" not in result.stderr
    finally:
        cluster.close()


def test_sqlite_files_are_private(tmp_path):
    """Catches a database (or its -wal/-shm files) made with the umask's 0644: other users
    could read every job's command and environment."""
    old = os.umask(0o022)
    try:
        store = SqliteStore(str(tmp_path / "db" / "hq.sqlite"))
        store.create_tables()
        w = Writes()
        w.jobs.append(new_job(1))
        store.apply(w)
        names = sorted(os.listdir(tmp_path / "db"))
        assert names == ["hq.sqlite", "hq.sqlite-shm", "hq.sqlite-wal"]
        for name in names:
            assert stat.S_IMODE(os.stat(tmp_path / "db" / name).st_mode) == 0o600, name
        store.close()
    finally:
        os.umask(old)


def test_info_shows_database_id_and_schema_version(store, quiet):
    """Catches --info without the id that agents' and user-servers' records are matched on."""
    result = quiet.run("hq-dbadmin", "--info", check=True)
    assert re.search(rf"^database id +{store.database_id()}$", result.stdout, re.M)
    assert re.search(rf"^schema version +{SCHEMA_VERSION} \(this hq: {SCHEMA_VERSION}\)$",
                     result.stdout, re.M)
    assert re.search(r"^jobs +0$", result.stdout, re.M)
