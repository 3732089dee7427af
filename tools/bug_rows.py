"""Issue 14's deliberate bugs, put back one at a time in a copy of the tracked files: each row's
test must pass on the clean copy and fail with the bug (docs/mutation.md).

    .venv/bin/python tools/bug_rows.py [WORD]     # only the rows whose name holds WORD

Prints one line per row and exits 1 if a row's test misses its bug. Takes about a minute (the
SIGTERM row waits for the 5 s grace)."""

import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
HANDLERS = "tests/test_handlers.py::"

# (name, file, text, the same text with the bug put back, the test that must catch it)
ROWS = [
    ("a job's end counts once: job_finished ignoring the attempt number", "hq/server/core.py",
     "if job is None or job.attempt != attempt or job.state not in (DISPATCHED, RUNNING):",
     "if job is None or job.state not in (DISPATCHED, RUNNING):",
     HANDLERS + "test_a_late_report_of_an_earlier_attempt_never_ends_the_current_one"),
    ("an agent reports only its user's jobs: ownership check always yes",
     "hq/server/handlers/agent.py",
     "    job = core.jobs.get(job_id)\n    if job is not None:\n        return job.user",
     "    return True\n    job = core.jobs.get(job_id)\n    if job is not None:\n"
     "        return job.user",
     HANDLERS + "test_an_agent_cannot_report_another_users_job"),
    ("SIGKILL 5 s after SIGTERM: SIGTERM sent twice", "agents/runner.py",
     "now >= run.kill_at:\n                signal_group(run.pid, signal.SIGKILL)",
     "now >= run.kill_at:\n                signal_group(run.pid, signal.SIGTERM)",
     "tests/test_runner.py::test_a_job_that_traps_term_gets_kill_five_seconds_later"),
    ("--after a cancelled or lost parent fails: waiters released unless FAILED",
     "hq/server/core.py", "                if ended_state == DONE:",
     "                if ended_state != FAILED:",
     HANDLERS + "test_after_a_cancelled_or_lost_parent_fails_the_child"),
    ("--after a cancelled or lost parent fails: settled as failed only after FAILED",
     "hq/server/core.py", "            elif state != DONE:", "            elif state == FAILED:",
     HANDLERS + "test_after_a_cancelled_or_lost_parent_fails_the_child"),
    ("fair share with several shapes: lazy re-keying of the heap disabled",
     "hq/server/scheduler.py", "        if slots != used.get(user, 0):", "        if False:",
     "tests/test_scheduler.py::test_fair_share_holds_when_a_user_has_jobs_of_several_shapes"),
    ("down after 3 silent heartbeats: 3 -> 30", "hq/server/fleet.py",
     "SILENT_HEARTBEATS = 3", "SILENT_HEARTBEATS = 30",
     HANDLERS + "test_an_agent_is_gone_after_three_silent_heartbeats_not_before"),
    ("down after 3 silent heartbeats: 3 -> 2", "hq/server/fleet.py",
     "SILENT_HEARTBEATS = 3", "SILENT_HEARTBEATS = 2",
     HANDLERS + "test_an_agent_is_gone_after_three_silent_heartbeats_not_before"),
]


def copy_tree(target):
    """The files git tracks (what a clone has), and the shared virtualenv."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest)
    (target / ".venv").symlink_to((ROOT / ".venv").resolve())


def passes(copy, test):
    run = subprocess.run([str(copy / ".venv/bin/python"), "-m", "pytest", "-q", "-x", test],
                         cwd=copy, capture_output=True, text=True, timeout=300)
    return run.returncode == 0


def check(copy, row):
    """'caught', or why not: the clean test fails, or the bug passes it."""
    name, path, text, buggy, test = row
    source = copy / path
    clean = source.read_text()
    if clean.count(text) != 1:
        return f"the text to change is not once in {path}: update this row"
    if not passes(copy, test):
        return "its test fails without the bug"
    source.write_text(clean.replace(text, buggy))
    try:
        return "MISSED: the test passes with the bug" if passes(copy, test) else "caught"
    finally:
        source.write_text(clean)


def main(argv):
    rows = [row for row in ROWS if not argv or argv[0] in row[0]]
    with tempfile.TemporaryDirectory(prefix="hq-bug-rows-") as tmp:
        copy = pathlib.Path(tmp)
        copy_tree(copy)
        verdicts = [(row[0], check(copy, row)) for row in rows]
    for name, verdict in verdicts:
        print(f"{verdict:>8}  {name}")
    return 0 if all(v == "caught" for _, v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
