"""hq.server.dbprobe on real databases: while MySQL is down the loop is told not to wait on it,
and a probe thread finds it back; SQLite is retried after a backoff without a thread."""

import os
import signal

import pytest

from hq.config import parse_db_url
from hq.server.dbprobe import DatabaseProbe
from hq.store import open_store
from hq.store.sqlite import SqliteStore
from tests.faults import private_mysql as private_mysql_context
from tests.helpers import wait_until


def test_sqlite_is_retried_after_a_backoff_and_submissions_at_once(tmp_path):
    probe = DatabaseProbe(SqliteStore(str(tmp_path / "hq.sqlite")))
    probe.failed(100.0)
    assert not probe.ready(100.0) and probe.ready(100.0, submission=True)
    assert probe.ready(100.0 + 0.11)
    probe.failed(200.0)
    assert not probe.ready(200.15)          # the backoff doubles
    probe.recovered()
    probe.failed(300.0)
    assert probe.ready(300.11)


@pytest.fixture
def private_mysql():
    with private_mysql_context() as db:
        yield db


@pytest.mark.mysql
def test_mysql_probe_waits_for_the_database_then_says_ready(private_mysql):
    """Catches a loop that retries commits on its own thread while MySQL fails (each try may
    hold it up to the connect timeout): ready() stays false until a probe reaches it. MySQL is
    stopped with SIGSTOP (it hangs: the worst case) and continued; its port is never given up,
    so no test of another worker can take it meanwhile."""
    store = open_store(parse_db_url(private_mysql.url))
    probe = DatabaseProbe(store)
    mysqld = private_mysql.pid()
    try:
        os.kill(mysqld, signal.SIGSTOP)
        assert not store.reachable()                    # within its 2 s timeouts
        probe.failed(1000.0, took=0.01)
        assert not probe.ready(1000.0) and not probe.ready(2000.0)
        assert probe.ready(1000.0, submission=True)     # a refusal is quick: try at once
        probe.failed(1000.0, took=2.0)                  # a hung database: not at once
        assert not probe.ready(1000.5, submission=True) and probe.ready(1001.1, True)
        os.kill(mysqld, signal.SIGCONT)
        wait_until(lambda: probe.ready(0.0), 30, 0.05, "the probe to reach MySQL again")
    finally:
        os.kill(mysqld, signal.SIGCONT)
        probe.close()
        store.close()
