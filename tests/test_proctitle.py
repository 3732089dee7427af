"""Daemons name themselves in ps: hq-server, hq-user-server USER, hq-exec-server USER@HOST
(a real cluster: server, user-server and agent as processes)."""

import getpass
import subprocess

from tests.helpers import Cluster, wait_until


def ps_args(pid):
    result = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True,
                            text=True, timeout=10)
    return result.stdout.strip()


def test_daemon_titles(tmp_path):
    cluster = Cluster(f"sqlite:///{tmp_path}/hq.sqlite",
                      hosts=(("alpha", "-", "-", "127.0.0.1"),))
    with cluster.running():
        client = cluster.client()
        client.wait([client.submit("true")], timeout=30)
        user = getpass.getuser()
        assert wait_until(lambda: ps_args(cluster.server.pid) == "hq-server", 5,
                          message="hq-server's title")
        assert ps_args(cluster.user_server_pid()) == f"hq-user-server {user}"
        agents = wait_until(lambda: [p for p in cluster.agent_pids() if p], 5,
                            message="the agent's pidfile")
        assert [ps_args(pid) for pid in agents] == [f"hq-exec-server {user}@alpha"]
        client.close()
