"""A real agent process, driven by PlayServer: jobs it cannot start fail alone while it keeps
serving; umask per job; leftover processes of a job are killed at its end and on cancel."""

import os
import signal

import pytest

from tests.helpers import kill_pid, pid_alive, wait_until
from tests.test_agent_protocol import PlayServer, job_spec, stop_agent


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
        server.wait(lambda: server.heartbeats and server.heartbeats[-1]["running"] == [], 10,
                    "a heartbeat, no jobs")
    finally:
        server.close()


def read_pid_file(path):
    return wait_until(lambda: path.exists() and path.read_text().strip() and
                      int(path.read_text()), 10, message=f"a pid in {path}")


def test_leftovers_are_killed_when_their_job_ends(tmp_path):
    """Catches work outside the slots: a job's `setsid` child and its plain background child
    kept running uncounted after the job's shell exited. Both are gone shortly after the job
    ends; a job with keep_leftovers keeps its own."""
    server = PlayServer(tmp_path)
    setsid_pid, plain_pid, kept_pid = (tmp_path / n for n in ("setsid", "plain", "kept"))
    try:
        server.start_agent()
        server.registered()
        server.run([job_spec(tmp_path, 1, f"setsid sleep 600 & s=$!; sleep 600 & "
                                          f"echo $! > {plain_pid}; sleep 0.2; "
                                          f"echo $(ps -o sid= -p $s) > {tmp_path}/sid; "
                                          f"echo $s > {setsid_pid}"),
                    job_spec(tmp_path, 2, f"setsid sleep 600 & echo $! > {kept_pid}",
                             keep_leftovers=True)])
        assert server.wait_finished(1)["exit_code"] == 0
        assert server.wait_finished(2)["exit_code"] == 0
        escaped, background, kept = (read_pid_file(p) for p in (setsid_pid, plain_pid, kept_pid))
        sid = (tmp_path / "sid").read_text().strip()
        assert sid == str(escaped), f"not in a session of its own ({sid}): a weak test"
        wait_until(lambda: not pid_alive(escaped) and not pid_alive(background), 10,
                   message="the leftovers of job 1 to be killed")
        assert pid_alive(kept), "job 2 said keep_leftovers"
        assert "left behind: killed" in server.log()
    finally:
        server.close()
        for path in (setsid_pid, plain_pid, kept_pid):
            if path.exists() and path.read_text().strip():
                kill_pid(int(path.read_text()), signal.SIGKILL)


@pytest.mark.slow
def test_cancel_kills_the_setsid_children_too(tmp_path):
    """Catches `setsid` children surviving a cancel (the process group signal misses them):
    the job and its child are both gone (TERM, as for the job), even when the job's shell
    outlives the TERM (the child is signalled at once, not when the shell is gone)."""
    server = PlayServer(tmp_path)
    child_pid = tmp_path / "child"
    try:
        server.start_agent()
        server.registered()
        server.run([job_spec(tmp_path, 1, f"setsid sleep 600 & echo $! > {child_pid}; "
                                          "trap '' TERM; sleep 600")])
        child = read_pid_file(child_pid)
        server.kill([(1, 1)])
        wait_until(lambda: not pid_alive(child), 4, message="the setsid child to be killed")
        assert server.finished(1) == [], "the shell ignores TERM: it ends at the SIGKILL"
        event = server.wait_finished(1)
        assert event["signal"] == 9 and event["reason"] == "cancelled"
    finally:
        server.close()
        if child_pid.exists():
            kill_pid(int(child_pid.read_text()), signal.SIGKILL)


def test_an_adopted_jobs_leftovers_are_killed_when_it_ends(tmp_path):
    """The leftovers of a job started by a killed agent are not the new agent's children:
    found by the job's marks in their environment, they are killed when the job ends."""
    server = PlayServer(tmp_path)
    child_pid, go = tmp_path / "child", tmp_path / "go"
    try:
        server.start_agent()
        server.registered()
        server.run([job_spec(tmp_path, 1, f"setsid sleep 600 & echo $! > {child_pid}; "
                                          f"while [ ! -e {go} ]; do sleep 0.05; done")])
        child = read_pid_file(child_pid)
        stop_agent(server)
        server.start_agent()
        assert server.registered(2)["running"] == [[1, 1]]
        go.touch()
        assert server.wait_finished(1)["exit_code"] == 0
        wait_until(lambda: not pid_alive(child), 10, message="the adopted job's leftover killed")
    finally:
        server.close()
        if child_pid.exists():
            kill_pid(int(child_pid.read_text()), signal.SIGKILL)


def test_malformed_messages_do_not_stop_the_agent(tmp_path):
    """Catches an agent that dies on a RUN or KILL it cannot read (a job without an id, a
    KILL entry that is no pair): it logs the message and keeps serving."""
    server = PlayServer(tmp_path)
    try:
        server.start_agent()
        server.registered()
        server.send(b"KILL", {"jobs": [5, "x", [1]]})
        server.send(b"RUN", {"jobs": [{"command": "true"}, 7], "envs": [], "slots": "2"})
        server.run([job_spec(tmp_path, 3, "true", cores=None)])
        assert server.wait_finished(3)["error"] == "cannot start: cores: not a positive integer"
        server.run([job_spec(tmp_path, 4, "echo fine")])
        assert server.wait_finished(4)["exit_code"] == 0
        assert server.agent.poll() is None
        assert "KILL from the server not handled" in server.log()
    finally:
        server.close()
