"""The database restarted under load: the server keeps running, submissions during the outage
get a clear error, and afterwards every accepted job has run exactly once."""

import collections

import pytest

from hq.errors import HQError
from tests.helpers import Cluster, unavailable, wait_until
from tools.private_mysql import PrivateMysql, available

pytestmark = [pytest.mark.slow, pytest.mark.mysql]


@pytest.fixture
def private_mysql():
    if not available():
        reason = "mariadb-install-db/mariadbd not installed"
        unavailable(reason, "this test")
    db = PrivateMysql()
    db.install()
    db.start()
    yield db
    db.close()


def test_mysql_restart_under_load(private_mysql, tmp_path):
    ledger = tmp_path / "ledger"
    ledger.touch()
    cluster = Cluster(private_mysql.url)
    try:
        cluster.setup_database()
        cluster.start_server()
        client = cluster.client()
        ids = client.submit_many([f"sleep 0.05; echo $HQ_JOB_ID >> {ledger}"] * 120)
        wait_until(lambda: client.status()["done"] >= 10, 60, 0.05, "some jobs to finish")
        private_mysql.kill()                                  # crash, mid-run
        with pytest.raises(HQError) as refused:
            client.submit("true")
        assert refused.value.code == "DATABASE_ERROR"
        assert cluster.server.poll() is None                  # still serving
        private_mysql.start()                                 # same data, same port

        def accepted():            # until its probe reaches the database (0.25 s at most),
            try:                   # the server refuses at once what it cannot record
                return client.submit_many([f"echo $HQ_JOB_ID >> {ledger}"] * 5)
            except HQError as exc:
                assert exc.code == "DATABASE_ERROR", exc
                return None
        later = wait_until(accepted, 30, 0.1, "a submission accepted once MySQL is back")

        def all_done():
            try:
                counts = client.status()
            except HQError:
                return None
            return counts["done"] == len(ids) + len(later) and counts
        wait_until(all_done, 90, 0.2, "every job to be done after the restart")
        seen = collections.Counter(int(x) for x in ledger.read_text().split())
        assert sorted(seen) == sorted(ids + later) and max(seen.values()) == 1
        assert "commit failed" in cluster.server_log()
    finally:
        cluster.close()
