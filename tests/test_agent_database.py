"""A real agent process driven by PlayServer: the database identity in REGISTER and its reply,
records of another database never reported (their processes killed), reports held until the
server has answered REGISTER, `unknown outcome` for adopted jobs that left no exit status, and
an agent restarted on a full HQ_HOME."""

import os
import subprocess

import psutil
import pytest

from agents.jobfiles import JobFiles, read_journal
from tests.helpers import pid_alive, wait_until
from tests.test_agent_protocol import PlayServer, fill, job_spec, small_tmpfs, stop_agent

pytestmark = pytest.mark.slow


def journal_of(home, host="hostA"):
    return JobFiles(os.path.join(str(home), "run", f"jobs-{host}"))


def live_process():
    """A process in its own session, as a job's shell is: (Popen, its create time)."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    return proc, psutil.Process(proc.pid).create_time()


def test_register_carries_the_database_id_and_adopts_the_heartbeat(tmp_path):
    """Catches an agent that ignores the reply to REGISTER: it must take `heartbeat_s` from it
    (not only from --heartbeat), and tell the server which database its records belong to."""
    server = PlayServer(tmp_path, register_reply={"database_id": "db1", "heartbeat_s": 0.2})
    try:
        server.start_agent(heartbeat=5)
        assert server.registered()["database_id"] is None        # no records yet
        server.wait(lambda: len(server.heartbeats) >= 4, 5, "heartbeats every 0.2 s")
        server.run([job_spec(tmp_path, 1, "sleep 600")], database_id="db1")
        server.wait(lambda: server.events, 10, "job 1 to start")
        stop_agent(server)
        [record] = journal_of(tmp_path).records()
        assert record["db"] == "db1"
        server.start_agent(heartbeat=5)
        assert server.registered(2)["database_id"] == "db1"     # its records' database
        assert server.registers[1]["running"] == [[1, 1]]
        server.kill([(1, 1)])
        event = server.wait_finished(1)          # adopted: the signal is not known here
        assert event["reason"] == "cancelled" and "error" not in event
    finally:
        server.close()


def test_records_of_another_database_are_killed_and_never_reported(tmp_path):
    """Catches a restarted agent that reports its journalled jobs to a server whose database
    was reset (job ids start again at 1: job 1 there is another job): the live one is killed,
    the ended ones are not reported, their records dropped with a WARNING; records of the
    server's database are adopted and reported as before."""
    files = journal_of(tmp_path)
    foreign_live, foreign_ctime = live_process()
    ours_live, ours_ctime = live_process()
    files.record({**job_spec(tmp_path, 1, "sleep 600"), "cores": 1}, foreign_live.pid,
                 foreign_ctime, foreign_ctime, database_id="old")
    files.record(job_spec(tmp_path, 2, "exit 3"), 999999, 1.0, 1.0, database_id="old")
    files.record(job_spec(tmp_path, 7, "sleep 600"), ours_live.pid, ours_ctime, ours_ctime,
                 database_id="new")
    files.record(job_spec(tmp_path, 8, "exit 3"), 999998, 1.0, 1.0, database_id="new")
    server = PlayServer(tmp_path, register_reply=None)
    try:
        server.start_agent()
        register = server.registered()
        assert register["database_id"] == "new"                  # its latest record's
        server.registered(2, timeout=10)          # unanswered: asked again (3 heartbeats)
        assert server.events == [], "reports sent before the server answered REGISTER"
        assert server.heartbeats == [], "heartbeats sent before the server answered REGISTER"
        server.answer_register(database_id="new", heartbeat_s=0.5)
        event = server.wait_finished(8)
        assert event["error"] == "unknown outcome" and event["database_id"] == "new"
        wait_until(lambda: foreign_live.poll() is not None, 10, message="the foreign job killed")
        assert ours_live.poll() is None, "the job of the server's database was killed"
        server.wait(lambda: server.heartbeats and server.heartbeats[-1]["running"] == [[7, 1]],
                    10, "a heartbeat listing only job 7")
        assert {e["job"] for e in server.events} == {8}
        log = server.log()
        assert "job 1 attempt 1 is not of the server's database new" in log
        assert "job 2 attempt 1 is not of the server's database new" in log
        wait_until(lambda: sorted(read_journal(files.journal_path)) == ["7.1.new"], 10,
                   message="only job 7 left in the journal")
    finally:
        server.close()
        for proc in (foreign_live, ours_live):
            proc.kill()
            proc.wait()


def test_a_server_without_database_id_gets_the_reports_as_before(tmp_path):
    """Today's server sends no database_id: everything counts as its own (reports of adopted
    jobs are sent once it has answered REGISTER)."""
    files = journal_of(tmp_path)
    files.record(job_spec(tmp_path, 4, "exit 3"), 999997, 1.0, 1.0, database_id="old")
    server = PlayServer(tmp_path, register_reply={"heartbeat_s": 0.5})
    try:
        server.start_agent()
        assert server.wait_finished(4)["error"] == "unknown outcome"
    finally:
        server.close()


def test_unacknowledged_reports_of_an_old_database_are_dropped(tmp_path):
    """Catches reports resent to a server that came back on a reset database: a finished
    report the old one never acknowledged names a job id that is another job now."""
    server = PlayServer(tmp_path, register_reply={"database_id": "one", "heartbeat_s": 0.3})
    try:
        server.start_agent()
        server.registered()
        server.ack = False
        server.run([job_spec(tmp_path, 1, "true")], database_id="one")
        server.wait(lambda: server.events and "job 1 attempt 1 ended" in server.log(), 10,
                    "the job's end, its report unacknowledged or waiting for an answer")
        server.events.clear()
        server.register_reply = {"database_id": "two", "heartbeat_s": 0.3}
        server.send(b"ERROR", {"req": "heartbeat", "code": "UNKNOWN_AGENT", "message": "who?"})
        server.registered(2)
        server.ack = True
        server.run([job_spec(tmp_path, 2, "true")], database_id="two")
        server.wait_finished(2)
        assert server.finished(1) == []
        assert "finished report of job 1 attempt 1 dropped" in server.log()
        wait_until(lambda: list(read_journal(os.path.join(
            str(tmp_path), "run", "jobs-hostA", "journal"))) == [], 10,
            message="an empty journal")
    finally:
        server.close()


def test_restarted_agent_on_a_full_disk_reports_unknown_outcome_once(tmp_path):
    """Catches the agent restarted on a full HQ_HOME dying (OSError 28 in the journal's
    rewrite), after which the server requeued the job and ran it a second time: the new agent
    runs, adopts the job, and as the full disk kept the job's exit status from being written,
    reports `unknown outcome` (the server fails it without a retry). The job ran once. A new
    job waits while the journal cannot take it and runs once there is room (catches a full
    disk draining the agent's queue into failures)."""
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    with small_tmpfs(tmp_path / "home", "512k") as home:
        server = PlayServer(home, register_reply={"database_id": "db1", "heartbeat_s": 0.3},
                            log_file=tmp_path / "agent.log")
        try:
            pidfile = f"--pidfile={home}/agent.pid"
            server.start_agent(pidfile)
            server.registered()
            command = f"echo ran >> {ledger}; while [ ! -e {go} ]; do sleep 0.05; done"
            server.run([job_spec(tmp_path, 1, command)], database_id="db1")
            server.wait(lambda: any(e["type"] == "started" for e in server.events), 10,
                        "job 1 to start")
            job_pid = server.events[0]["pid"]
            fill(home)
            stop_agent(server)
            server.start_agent(pidfile)
            assert server.registered(2)["running"] == [[1, 1]]
            assert (home / "agent.pid").read_text() == f"{server.agent.pid}\n"
            go.touch()
            event = server.wait_finished(1)
            assert event["error"] == "unknown outcome" and event["exit_code"] is None
            assert not pid_alive(job_pid)
            assert ledger.read_text() == "ran\n"
            assert server.agent.poll() is None, "the new agent died"
            spec = job_spec(tmp_path, 2, f"echo ran2 >> {ledger}")
            server.run([spec], database_id="db1")
            assert server.agent.poll() is None
            os.remove(home / "filler")                  # room again: job 2 gets its slot
            event = server.wait_finished(2)
            assert event.get("error") is None and event["exit_code"] == 0, event
            assert ledger.read_text() == "ran\nran2\n"
        finally:
            server.close()
