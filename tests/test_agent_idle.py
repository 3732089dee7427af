"""An agent without jobs for [agent] idle_s exits once the server agrees; the host is then
'unknown' (not 'down'), and new work for the user starts an agent again."""

import configparser
import json
import os
import re
from datetime import datetime, timezone

from tests.helpers import Cluster, pid_alive, wait_until


def details(cluster, job_id):
    result = cluster.run("hq-client", "details", "--json", str(job_id), check=True)
    return json.loads(result.stdout)[0]


def log_time(line):
    """Seconds since the epoch of a log line's asctime (local time, milliseconds)."""
    stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line).group(1)
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


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
        job_id = int(c.run("hq-submit", "sleep 3", check=True).stdout)   # busy > idle_s
        wait_until(lambda: details(c, job_id)["state"] == "running", 20, message="the job to run")
        first = [pid for pid in c.agent_pids() if pid]
        assert first and all(pid_alive(pid) for pid in first)
        wait_until(lambda: not any(pid_alive(pid) for pid in first), 30,
                   message="the idle agent to exit")
        ended = datetime.fromisoformat(details(c, job_id)["finished"].replace(
            "Z", "+00:00")).astimezone(timezone.utc).timestamp()
        with open(os.path.join(c.home, "log", "agent-localhost.log")) as handle:
            [exit_line] = [line for line in handle if "the server let us go" in line]
        assert log_time(exit_line) - ended >= 2 - 0.05, "idle only once its job had ended"
        host = json.loads(c.run("hq-admin", "lscluster", "--json", check=True).stdout)["hosts"][0]
        assert host["status"] == "unknown" and host["agents"] == []
        assert "idle" in host["status_reason"]
        assert "agent of" in c.server_log() and "exits: idle" in c.server_log()
        assert c.run("hq-submit", "--wait", "true", timeout=60).returncode == 0
        second = [pid for pid in c.agent_pids() if pid]
        assert second and set(second).isdisjoint(first)
    finally:
        c.close()
