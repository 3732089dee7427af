"""The adoption journal and the exit statuses that jobs' shells append (real /bin/sh)."""

import subprocess

from agents import jobfiles
from agents.jobfiles import JobFiles, read_journal


def spec(job_id, command="true"):
    return {"id": job_id, "attempt": 1, "command": command, "cores": 1}


def run(files, job_id, command):
    argv = files.wrap("/bin/sh", command, job_id, 1)
    return subprocess.run(argv, capture_output=True, text=True).returncode


def test_exit_status_is_appended_by_the_jobs_shell(tmp_path):
    files = JobFiles(str(tmp_path))
    assert run(files, 1, "exit 3") == 3
    assert run(files, 2, "echo $# $1; false") == 1          # no positional parameters leak
    assert run(files, 3, "kill -TERM $$") == -15              # killed: nothing appended
    assert [files.exit_status(i, 1) for i in (1, 2, 3)] == [3, 1, None]


def test_journal_keeps_live_attempts_across_agents_and_compacts(tmp_path, monkeypatch):
    files = JobFiles(str(tmp_path))
    for i in range(1, 6):
        files.record(spec(i), 1, 0.0)
    files.forget(2, 1)
    again = JobFiles(str(tmp_path))          # the next agent
    assert sorted(r["spec"]["id"] for r in again.records()) == [1, 3, 4, 5]
    monkeypatch.setattr(jobfiles, "COMPACT_AFTER", 2)
    run(again, 1, "true")
    for i in (1, 3, 4):
        again.forget(i, 1, idle=True)
    assert list(read_journal(again.journal_path)) == ["5.1"]
    assert len(open(again.journal_path).read().splitlines()) == 3   # compacted, then 4.1 ended
    assert open(again.exits_path).read() == ""             # 1.1 ended: its status dropped
