"""An agent that never hears from a server and has no jobs exits after `orphan_s`, even while it
keeps reconnecting with backoff (each attempt must not reset that clock)."""

import os
import subprocess
import sys

from agents.exec_server import Agent
from tests.helpers import REPO, free_port


def test_reconnecting_does_not_reset_the_orphan_clock(tmp_path, monkeypatch):
    monkeypatch.setenv("HQ_HOME", str(tmp_path))
    agent = Agent(f"tcp://127.0.0.1:{free_port()}", "nowhere", "me", heartbeat_s=2,
                  orphan_s=600, state_dir=str(tmp_path / "jobs"))
    agent.connect()
    start = agent.last_contact
    now = start
    while agent.running and now < start + 700:    # the agent's clock, in 0.5 s steps
        now += 0.5
        agent.check_server(now)
    agent.socket.close(linger=0)
    assert not agent.running, "still waiting for a server after 700 s"
    assert 600 < now - start < 602


def test_orphaned_agent_process_exits(tmp_path):
    env = dict(os.environ, HQ_HOME=str(tmp_path), PYTHONPATH=REPO)
    agent = subprocess.Popen(
        [sys.executable, "-m", "agents.exec_server", f"--server=tcp://127.0.0.1:{free_port()}",
         "--host-name=nowhere", "--heartbeat=0.2", "--orphan=2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = agent.communicate(timeout=20)
    finally:
        agent.kill()
    assert agent.returncode == 0 and "no server for" in out
