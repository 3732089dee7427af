"""Bad configuration, a refusing database and bad input: one clear line, non-zero exit, no
traceback, no hang. And administrative state survives a server restart."""

import json
import os
import subprocess

import pytest

from tests.helpers import BIN, Cluster, free_port


def run(env, *args, timeout=20, input=None):
    return subprocess.run([os.path.join(BIN, args[0]), *args[1:]], env=env, capture_output=True,
                          text=True, timeout=timeout, input=input)


def one_line_error(result, *words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture
def quiet_cluster(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite")
    yield c
    c.close()


def test_broken_cluster_tab_is_named(quiet_cluster):
    c = quiet_cluster
    c.write_cluster([("node1", "lots", "-", "-")])
    one_line_error(run(c.env, "hq-dbadmin", "--create-tables", "--add-standard-entries"),
                   "cluster.tab line 1", "max slots", "[CONFIG_ERROR]")
    c.run("hq-dbadmin", "--create-tables", check=True)
    one_line_error(run(c.env, "hq-server"), "cluster.tab line 1", "[CONFIG_ERROR]")


def test_missing_db_config_is_named(quiet_cluster):
    env = dict(quiet_cluster.env)
    env.pop("HQ_DB_URL")
    os.unlink(os.path.join(quiet_cluster.etc, "hq-db.cfg"))
    one_line_error(run(env, "hq-dbadmin", "--info"), "hq-db.cfg: file not found")


def test_refusing_database_gives_a_clear_line(quiet_cluster):
    env = dict(quiet_cluster.env, HQ_DB_URL=f"mysql://root@127.0.0.1:{free_port()}/hq")
    one_line_error(run(env, "hq-dbadmin", "--create-tables"), "cannot reach MySQL",
                   "[DATABASE_ERROR]")
    one_line_error(run(env, "hq-server"), "[DATABASE_ERROR]")


def test_server_without_tables_says_what_to_run(quiet_cluster):
    one_line_error(run(quiet_cluster.env, "hq-server"), "hq-dbadmin --create-tables")


def test_port_in_use_is_reported(quiet_cluster):
    c = quiet_cluster
    c.setup_database()
    c.start_server()
    one_line_error(run(c.env, "hq-server"), "cannot listen on", str(c.port))


def test_drop_tables_asks_unless_yes(quiet_cluster):
    c = quiet_cluster
    c.setup_database()
    one_line_error(run(c.env, "hq-dbadmin", "--drop-tables", input=""), "needs --yes")
    assert "jobs" in c.run("hq-dbadmin", "--info", check=True).stdout
    c.run("hq-dbadmin", "--drop-tables", "--yes", check=True)
    assert "schema version  None" in c.run("hq-dbadmin", "--info", check=True).stdout


def test_bad_submit_options(cluster):
    for args, words in ((["-m", "lots", "true"], "memory must look like"),
                        (["-d", "/no/such/dir", "true"], "no such directory"),
                        (["-t", "-5", "true"], "-t/--time-limit"),
                        (["-f", "/no/such/file"], "No such file")):
        one_line_error(cluster.run("hq-submit", *args), *[words])
    one_line_error(cluster.run("hq-client", "cancel", "abc"), "job id must be a whole number")


def test_host_and_cluster_state_survive_a_restart(cluster):
    cluster.run("hq-admin", "deactivatehost:localhost", check=True)
    cluster.run("hq-admin", "deactivate", check=True)
    cluster.stop_server()
    cluster.start_server()
    state = json.loads(cluster.run("hq-admin", "lscluster", "--json", check=True).stdout)
    assert state["cluster"] == "inactive" and state["hosts"][0]["state"] == "inactive"
