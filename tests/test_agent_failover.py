"""An agent given several server addresses (an active hq-server and its standby) moves to the
next one when its server goes silent or answers NOT_ACTIVE, at once, and backs off only after
a whole round of silent addresses (agents/exec_server.py `follow_active`)."""

import time

from agents.exec_server import TRY_S, Agent
from hq import protocol as p
from tests.helpers import free_port


def test_silence_and_not_active_move_the_agent_on(tmp_path, monkeypatch):
    """Catches an agent that stays with a dead server's address, one that waits a backoff
    before trying the standby, and a NOT_ACTIVE answer that is not acted on."""
    monkeypatch.setenv("HQ_HOME", str(tmp_path))
    first, second = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    agent = Agent(f"{first},{second}", "nowhere", "me", heartbeat_s=2, orphan_s=600,
                  state_dir=str(tmp_path / "jobs"))
    try:
        agent.connect()
        assert agent.server == first
        agent.registered = True                 # as if the first server had answered
        now = agent.last_heard + 3 * 2 + 0.1    # ... and then fell silent for 3 heartbeats
        agent.check_server(now)
        assert agent.server == second, "the standby is tried at once"
        now = agent.last_heard + TRY_S + 0.1    # its REGISTER unanswered: a whole round
        agent.check_server(now)
        assert agent.server == second and agent.reconnect_at == now + 1.0, "backoff 1 s"
        agent.check_server(now + 1.0)
        assert agent.server == first
        agent.on_message(p.ERROR, {"req": "register", "code": "NOT_ACTIVE",
                                   "message": "standby"})
        assert agent.reconnect_at is not None and agent.reconnect_at - time.time() <= 0.5
        agent.check_server(agent.reconnect_at)
        assert agent.server == second and agent.running
    finally:
        agent.socket.close(linger=0)
