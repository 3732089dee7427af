"""A real agent process, driven by PlayServer: jobs it cannot start fail alone while it keeps
serving; umask per job; leftover processes of a job are killed at its end and on cancel."""

import os

from tests.test_agent_protocol import PlayServer, job_spec


def test_agent_survives_a_job_it_cannot_start(tmp_path):
    """Catches the agent process dying (ValueError: embedded null byte) on a job whose
    environment holds a NUL: the job fails with a reason, the agent runs the next one."""
    server = PlayServer(tmp_path)
    try:
        server.start_agent()
        server.registered()
        server.run([job_spec(tmp_path, 1, "true", batch=1)], env={"X": "a\0b"}, slots=1)
        bad = server.wait_finished(1)
        assert bad["error"] == "cannot start: environment variable 'X': embedded null byte"
        server.run([job_spec(tmp_path, 2, "echo fine", batch=2)], slots=1)
        assert server.wait_finished(2)["exit_code"] == 0
        assert server.agent.poll() is None
        server.wait(lambda: server.heartbeats[-1]["running"] == [], 10, "a heartbeat, no jobs")
    finally:
        server.close()
