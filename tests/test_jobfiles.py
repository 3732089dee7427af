"""The adoption journal and the exit statuses that jobs' shells append (real /bin/sh): kept
across agents, compacted while jobs run, rotated exits files, database ids, a full disk."""

import json
import os
import subprocess

import pytest

from agents import jobfiles
from agents.jobfiles import JobFiles, JournalError, key_of, read_journal
from tests.test_agent_protocol import fill, small_tmpfs


def spec(job_id, command="true"):
    return {"id": job_id, "attempt": 1, "command": command, "cores": 1}


def run(files, job_id, command, database_id=None):
    """Run `command` wrapped as the agent wraps a job; its exit code; (generation, code)."""
    generation, path = files.exits_target()
    argv = jobfiles.wrap("/bin/sh", command, key_of(job_id, 1, database_id), path)
    return generation, subprocess.run(argv, capture_output=True, text=True).returncode


def test_exit_status_is_appended_by_the_jobs_shell(tmp_path):
    files = JobFiles(str(tmp_path))
    assert run(files, 1, "exit 3")[1] == 3
    assert run(files, 2, "false")[1] == 1
    assert run(files, 5, "exit 0")[1] == 0
    statuses = files.read_exits(files.generation)
    assert (statuses["2.1"], statuses["5.1"]) == (1, 0)
    assert run(files, 3, "kill -TERM $$")[1] == -15           # killed: nothing appended
    assert run(files, 4, "exit 5", "db1")[1] == 5
    statuses = files.read_exits(files.generation)
    assert statuses == {"1.1": 3, "2.1": 1, "4.1.db1": 5, "5.1": 0}
    files.record(spec(4), 1, 0.0, database_id="db1", generation=files.generation)
    assert files.exit_status(files.records()[0]) == 5


def test_no_positional_parameters_leak_into_the_job(tmp_path):
    """Issue 14: catches the wrapper's own arguments (exits file, attempt key, command) left
    as the job's positional parameters: `$#` must be 0 and `$0` the shell. Checked with the
    `shift 2` removed from jobfiles.TRAP: the job sees 2 (its key and its command)."""
    files = JobFiles(str(tmp_path))
    generation, path = files.exits_target()
    argv = jobfiles.wrap("/bin/sh", 'echo "$# [$1] [$2]"', key_of(7, 1), path)
    done = subprocess.run(argv, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "0 [] []\n")
    assert files.read_exits(generation) == {"7.1": 0}


def test_journal_keeps_live_attempts_across_agents(tmp_path):
    files = JobFiles(str(tmp_path))
    for i in range(1, 6):
        files.record(spec(i), 1, 0.0, database_id="db1" if i > 3 else None)
    files.forget(2, 1)
    again = JobFiles(str(tmp_path))          # the next agent
    assert sorted(r["spec"]["id"] for r in again.records()) == [1, 3, 4, 5]
    assert again.database_id() == "db1"
    again.forget(5, 1)
    assert list(read_journal(again.journal_path)) == ["1.1", "3.1", "4.1.db1"]


def test_journal_stays_bounded_while_jobs_run(tmp_path, monkeypatch):
    """Catches a journal compacted only while no job runs: on a busy agent it grew without
    bound. Here one job runs all along, 3,000 others start and end; the journal stays under
    twice the bound and still holds exactly the live attempts."""
    monkeypatch.setattr(jobfiles, "COMPACT_BYTES", 20000)
    files = JobFiles(str(tmp_path))
    files.record(spec(1, "sleep 600"), 1, 0.0)
    biggest = 0
    for i in range(2, 3002):
        files.record(spec(i), 1, 0.0)
        files.forget(i, 1)
        biggest = max(biggest, os.path.getsize(files.journal_path))
    assert biggest < 2 * 20000 + 200
    assert list(read_journal(files.journal_path)) == ["1.1"]
    assert [r["spec"]["id"] for r in JobFiles(str(tmp_path)).records()] == [1]


def test_exits_files_rotate_and_go_once_their_jobs_are_forgotten(tmp_path, monkeypatch):
    """Catches an exits file that grows without bound while jobs run (it can only be rewritten
    while no job appends to it): new jobs get a new file, and an old one goes once every
    attempt that used it is forgotten; a long job keeps its file and its status."""
    monkeypatch.setattr(jobfiles, "ROTATE_AFTER", 3)
    files = JobFiles(str(tmp_path))
    first, _ = run(files, 1, "exit 7")                 # the long job, still unacknowledged
    files.record(spec(1), 1, 0.0, generation=first)
    for i in range(2, 12):
        generation, code = run(files, i, "true")
        files.record(spec(i), 1, 0.0, generation=generation)
        files.forget(i, 1)
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("exits"))
    assert names == [f"exits.{first}", f"exits.{files.generation}"]
    assert files.exit_status(files.records()[0]) == 7
    files.forget(1, 1)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("exits")) == [
        f"exits.{files.generation}"]


def test_a_full_disk_refuses_new_records_and_loses_none(tmp_path):
    """Catches a restarted agent dying on a full disk (OSError: [Errno 28] in the journal's
    rewrite) and a journal that loses what it had: the next JobFiles starts, keeps every live
    record, refuses new ones with JournalError (the job must not run), and leaves no line cut
    short behind."""
    with small_tmpfs(tmp_path / "home", "64k") as home:
        directory = str(home / "jobs")
        files = JobFiles(directory)
        for i in range(1, 4):
            files.record(spec(i, "x" * 200), 1, 0.0, database_id="db1")
        files.forget(2, 1)
        fill(home)
        again = JobFiles(directory)                      # compaction fails: it goes on
        assert sorted(r["spec"]["id"] for r in again.records()) == [1, 3]
        with pytest.raises(JournalError, match="journal: No space left on device"):
            for i in range(10, 100):                     # fills the last partial block
                again.record(spec(i, "y" * 300), 1, 0.0)
        recorded = {r["spec"]["id"] for r in again.records()}
        assert {1, 3} < recorded                         # some fitted before the disk was full
        again.forget(1, 1)                               # may not be written: harmless
        with open(again.journal_path) as handle:
            lines = handle.read().splitlines()
        assert all(json.loads(line) for line in lines)    # no line cut short
        os.unlink(home / "filler")
        third = JobFiles(directory)
        assert {r["spec"]["id"] for r in third.records()} in (recorded, recorded - {1})
        third.record(spec(200), 1, 0.0)                  # room again: records go in
        assert 200 in {r["spec"]["id"] for r in JobFiles(directory).records()}


def test_the_jobs_shell_looks_like_sh_c(tmp_path):
    """Catches a job whose shell names an internal file (`.../exits: 1: eval: nosuchcmd: not
    found`, `$0` that path) instead of behaving as `sh -c COMMAND` does."""
    odd = tmp_path / "it's here"
    odd.mkdir()
    files = JobFiles(str(odd))
    generation, path = files.exits_target()
    for command in ("nosuchcmd", "echo $0 $#; echo line 2\nnosuchcmd", "exit 4"):
        argv = jobfiles.wrap("/bin/sh", command, key_of(7, 1), path)
        got = subprocess.run(argv, capture_output=True, text=True)
        want = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        assert (got.returncode, got.stdout, got.stderr) == \
            (want.returncode, want.stdout, want.stderr)
    assert files.read_exits(generation) == {"7.1": 4}
