"""`make sql`: a private MariaDB made by tools/private_mysql.py in a temporary directory, used
through the hq-db.cfg it writes (PyMySQL, hq-dbadmin), stopped; also as a user other than root."""

import configparser
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import BIN, REPO, free_port, unavailable
from tools.private_mysql import available

TOOL = os.path.join(REPO, "tools", "private_mysql.py")


@pytest.fixture
def needs_mariadbd():
    if not available():
        reason = "mariadbd/mariadb-install-db not installed"
        unavailable(reason, "this test")


def tool(*args, python=sys.executable, user=None):
    command = [python, TOOL, *args]
    if user:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def read_cfg(path):
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(path)
    return cfg["database"]


@pytest.mark.slow
@pytest.mark.mysql
def test_start_use_stop(needs_mariadbd, tmp_path):
    import pymysql
    directory = str(tmp_path / "mysql")
    port = free_port()
    started = tool("start", "--dir", directory, "--port", str(port))
    assert started.returncode == 0, started.stderr
    try:
        cfg_path = os.path.join(directory, "hq-db.cfg")
        assert f"wrote {cfg_path}" in started.stdout
        assert stat.S_IMODE(os.stat(cfg_path).st_mode) == 0o600
        cfg = read_cfg(cfg_path)
        assert (cfg["backend"], cfg["host"], cfg.getint("port")) == ("mysql", "127.0.0.1", port)
        assert len(cfg["password"]) == 32
        conn = pymysql.connect(host=cfg["host"], port=port, user=cfg["user"],
                               password=cfg["password"], database=cfg["database"])
        conn.close()
        with pytest.raises(pymysql.err.OperationalError):      # no other way in
            pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
        assert tool("start", "--dir", directory).stdout.startswith("already running")
        etc = tmp_path / "etc"
        shutil.copytree(os.path.join(REPO, "etc"), etc)
        shutil.copy(cfg_path, etc / "hq-db.cfg")
        env = {k: v for k, v in os.environ.items() if k != "HQ_DB_URL"}
        env.update(HQ_CONF=str(etc), HQ_HOME=str(tmp_path / "home"))
        made = subprocess.run([os.path.join(BIN, "hq-dbadmin"), "--create-tables"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        conn = pymysql.connect(host="127.0.0.1", port=port, user="hq",
                               password=cfg["password"], database="hq")
        with conn.cursor() as cursor:
            cursor.execute("SHOW TABLES")
            tables = {row[0] for row in cursor.fetchall()}
        conn.close()
        assert {"jobs", "batches", "hosts", "users", "schema_version"} <= tables
        assert tool("status", "--dir", directory).returncode == 0
    finally:
        stopped = tool("stop", "--dir", directory)
    assert stopped.returncode == 0 and "stopped MariaDB" in stopped.stdout, stopped.stderr
    status = tool("status", "--dir", directory)
    assert status.returncode == 3 and status.stdout.startswith("stopped")


@pytest.mark.slow
@pytest.mark.mysql
def test_non_root_user(needs_mariadbd):
    if os.geteuid() != 0 or not shutil.which("runuser") or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root (to run the tool as nobody), runuser and /usr/bin/python3")
    if any(not os.stat(p).st_mode & stat.S_IXOTH for p in (REPO, *Path(REPO).parents)):
        pytest.skip(f"{REPO} is closed to nobody")
    base = tempfile.mkdtemp(prefix="hqnobody")     # /tmp: open to nobody, unlike tmp_path
    try:
        os.chmod(base, 0o755)
        shutil.chown(base, "nobody")
        directory = os.path.join(base, "mysql")
        as_nobody = {"python": "/usr/bin/python3", "user": "nobody"}
        started = tool("start", "--dir", directory, **as_nobody)
        try:
            assert started.returncode == 0, started.stderr
            assert os.stat(os.path.join(directory, "data")).st_uid != 0
            assert tool("status", "--dir", directory, **as_nobody).returncode == 0
        finally:
            stopped = tool("stop", "--dir", directory, **as_nobody)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_no_mariadbd_one_line(tmp_path):
    result = subprocess.run([sys.executable, TOOL, "start", "--dir", str(tmp_path)],
                            env=dict(os.environ, PATH=str(tmp_path)), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("private_mysql: no MariaDB server here")
    assert result.stderr.strip().endswith("[CONFIG_ERROR]") and result.stderr.count("\n") == 1
