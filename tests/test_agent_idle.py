"""An agent without jobs for [agent] idle_s exits once the server agrees; the host is then
'unknown' (not 'down'), and new work for the user starts an agent again."""

import configparser
import json
import os

from tests.helpers import Cluster, pid_alive, wait_until


def test_idle_agent_exits_and_new_work_starts_it_again(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite")
    path = os.path.join(c.etc, "hq.cfg")
    cfg = configparser.ConfigParser()
    cfg.read(path)
    cfg["agent"]["idle_s"] = "2"
    with open(path, "w") as handle:
        cfg.write(handle)
    try:
        c.setup_database()
        c.start_server()
        assert c.run("hq-submit", "--wait", "sleep 3").returncode == 0   # busy > idle_s
        first = [pid for pid in c.agent_pids() if pid]
        assert first and all(pid_alive(pid) for pid in first)
        wait_until(lambda: not any(pid_alive(pid) for pid in first), 20,
                   message="the idle agent to exit")
        host = json.loads(c.run("hq-admin", "lscluster", "--json", check=True).stdout)["hosts"][0]
        assert host["status"] == "unknown" and host["agents"] == []
        assert "idle" in host["status_reason"]
        assert "agent of" in c.server_log() and "exits: idle" in c.server_log()
        assert c.run("hq-submit", "--wait", "true", timeout=60).returncode == 0
        second = [pid for pid in c.agent_pids() if pid]
        assert second and set(second).isdisjoint(first)
    finally:
        c.close()
