"""hq-server's open-files limit (hq/server/limits.py), in a process of its own whose limits the
test lowers first; its listening backlog and I/O threads, on a real hq-server."""

import os
import shutil
import subprocess
import sys

from hq.server import limits
from tests.helpers import REPO, Cluster, unavailable

SCRIPT = """
import logging, resource
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 512))
from hq.server import limits
print(limits.raise_open_files(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(limits.check_open_files({hosts}, {users}))
"""


def run(hosts, users):
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(hosts=hosts, users=users)],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), result.stderr


def test_the_soft_limit_is_raised_to_the_hard_limit_and_a_low_hard_limit_is_named():
    """Catches a server left at a low soft limit (its 1,024th agent connection is refused
    without a word) and a hard limit too low for the cluster that nobody is told about."""
    out, err = run(1000, 10)
    assert out == ["512", "512", str(1000 * 10 + 256)]
    assert "ERROR open-files limit 512 is below the 10256" in err and "ulimit -Hn" in err
    out, err = run(20, 10)
    assert out == ["512", "512", "456"] and "ERROR" not in err


def test_the_listening_backlog_is_the_kernels_cap_and_io_threads_the_setting(tmp_path):
    """Catches hq-server listening with libzmq's backlog of 100 (10,000 agents coming back
    after a restart overflowed it: the kernel dropped their handshakes and TCP retried them
    after 1, 3, 7 ... s, past their leases) or with one I/O thread whatever io_threads says
    (one accepted about 230 connections a second beside 10,000 agents)."""
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("8192\n")
    assert limits.listen_backlog(str(somaxconn)) == 8192
    somaxconn.write_text("1000000\n")
    assert limits.listen_backlog(str(somaxconn)) == limits.MAX_BACKLOG
    assert limits.listen_backlog(str(tmp_path / "missing")) == limits.DEFAULT_BACKLOG
    if not shutil.which("ss"):
        unavailable("ss (iproute2) is missing: the listening socket's backlog is not shown")
    cluster = Cluster(f"sqlite:///{tmp_path}/hq.sqlite")
    try:
        cluster.set_config("server", "io_threads", "3")
        cluster.setup_database()
        cluster.start_server()
        pid = cluster.server.pid
        names = [open(f"/proc/{pid}/task/{task}/comm").read().strip()
                 for task in os.listdir(f"/proc/{pid}/task")]
        assert sorted(n for n in names if n.startswith("ZMQbg/IO")) == \
            ["ZMQbg/IO/0", "ZMQbg/IO/1", "ZMQbg/IO/2"]
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{cluster.port}"],
                                   capture_output=True, text=True, timeout=10).stdout.split()
        assert listening[0] == "LISTEN" and int(listening[2]) == limits.listen_backlog()
    finally:
        cluster.close()
