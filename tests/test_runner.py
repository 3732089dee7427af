"""The agent's Runner with real processes: posix_spawn in a new session, output files, the
environment (HQ_ENTRY), jobs waiting for a slot, dropping a waiting job, start errors."""

import os

from agents.runner import Runner
from tests.helpers import wait_until


def spec(tmp_path, job_id, command, **extra):
    out = str(tmp_path / "out" / f"{job_id}.out")
    return {"id": job_id, "attempt": 1, "command": command, "shell": "/bin/sh",
            "cwd": str(tmp_path), "stdout": out, "stderr": out.replace(".out", ".err"),
            "logfile": "", "cores": 1, "time_limit": 0, "batch": 7, "name": "n",
            "entry": "", **extra}


def reap_all(runner, count, timeout=20):
    ended = []
    wait_until(lambda: ended.extend(runner.reap()) or len(ended) >= count, timeout,
               message=f"{count} jobs to end")
    return ended


def test_job_runs_in_its_own_session_with_entry_and_outputs(tmp_path):
    runner = Runner("hostA")
    runner.assign(spec(tmp_path, 1, 'echo "$HQ_ENTRY $HQ_BATCH_ID $HQ_HOST $(pwd)"; '
                       'ps -o sid= -p $$ >&2; echo $$ >&2', entry="the line"),
                  {"PATH": os.environ["PATH"]}, slots=2)
    started = runner.start_waiting()
    assert [e["type"] for e in started] == ["started"]
    [ended] = reap_all(runner, 1)
    assert ended["exit_code"] == 0 and ended["job"] == 1
    assert (tmp_path / "out" / "1.out").read_text() == f"the line 7 hostA {tmp_path}\n"
    session, pid = (tmp_path / "out" / "1.err").read_text().split()
    assert session == pid, "the job leads its own session (and process group)"
    runner.kill_all()


def test_waiting_jobs_start_only_when_slots_free_and_can_be_dropped(tmp_path):
    runner = Runner("hostA")
    gate = tmp_path / "gate"
    for job_id in (1, 2, 3):
        runner.assign(spec(tmp_path, job_id, f"while [ ! -e {gate} ]; do sleep 0.01; done"),
                      {}, slots=2)
    assert [e["job"] for e in runner.start_waiting()] == [1, 2]
    assert runner.start_waiting() == [] and sorted(runner.running_pairs()) == [[1, 1], [2, 1],
                                                                                 [3, 1]]
    dropped = runner.drop(3, 1)
    assert dropped["type"] == "finished" and dropped["exit_code"] is None
    assert runner.drop(3, 1) is None
    runner.assign(spec(tmp_path, 4, "true"), {}, slots=2)
    gate.write_text("")
    ended = reap_all(runner, 2)
    assert sorted(e["job"] for e in ended) == [1, 2]
    assert [e["job"] for e in runner.start_waiting()] == [4]
    assert [e["job"] for e in reap_all(runner, 1)] == [4]
    runner.kill_all()


def test_start_errors_name_what_failed(tmp_path):
    runner = Runner("hostA")
    runner.assign(spec(tmp_path, 1, "true", cwd=str(tmp_path / "missing")), {})
    runner.assign(spec(tmp_path, 2, "true", shell="/no/such/shell"), {})
    (tmp_path / "plain").write_text("a file, not a directory")
    blocked = spec(tmp_path, 3, "true")
    blocked["stdout"] = str(tmp_path / "plain" / "x.out")
    runner.assign(blocked, {})
    events = {e["job"]: e for e in runner.start_waiting()}
    assert all(e["type"] == "finished" for e in events.values())
    assert events[1]["error"] == f"cannot start: No such file or directory: {tmp_path}/missing"
    assert events[2]["error"] == "cannot start: No such file or directory: /no/such/shell"
    assert events[3]["error"] == f"cannot start: File exists: {tmp_path}/plain"
    assert os.getcwd() == runner.directory
    runner.kill_all()
