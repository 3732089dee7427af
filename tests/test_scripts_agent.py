"""The agent's side of batch scripts with real processes: the private copy a job runs, what it
finds in its environment, what the journal keeps, and that no copy outlives its job. Each test
names its bug."""

import os

import pytest

from agents import scripts
from agents.jobfiles import JobFiles
from agents.runner import Runner
from tests.test_runner import reap_all, spec, start

SCRIPT = ('#!/bin/sh\necho "$1|$HQ_ARRAY_INDEX|$SLURM_ARRAY_TASK_ID|$SLURM_ARRAY_JOB_ID|'
          '$SLURM_JOB_ID|$SLURM_CPUS_PER_TASK|$SLURM_JOB_NAME|$SLURM_SUBMIT_DIR"\n'
          'stat -c %a "$0"; echo "$0"\n')


@pytest.fixture
def runner(tmp_path):
    made = Runner("hostA", JobFiles(str(tmp_path / "state")))
    yield made
    made.kill_all()


def script_job(tmp_path, job_id, **extra):
    return spec(tmp_path, job_id, "job.sh 'a b'", script=SCRIPT, args=["a b"], cores=2,
                name="sim", **extra)


def test_a_script_runs_from_a_private_copy_that_goes_with_the_job(tmp_path, runner):
    """Catches a script run from the submitter's file, a copy left behind after the job, or
    its whole text kept in the journal (which would grow by a script per job)."""
    runner.assign(script_job(tmp_path, 1, array_index=4, slurm_env=True), {}, slots=2)
    start(runner, 1)
    [ended] = reap_all(runner, 1)
    assert ended["exit_code"] == 0
    line, mode, path = (tmp_path / "out" / "1.out").read_text().splitlines()
    assert line == f"a b|4|4|7|1|2|sim|{tmp_path}"
    assert mode == "700" and path == str(tmp_path / "state" / "scripts" / "1.1")
    assert not os.path.exists(path)
    [record] = runner.files.records()
    assert "script" not in record["spec"] and record["spec"]["script_file"] == path


def test_slurm_variables_only_when_the_server_says_so(tmp_path, runner):
    """Catches SLURM_ variables set when [server] slurm_env = no (mpirun would call srun)."""
    runner.assign(script_job(tmp_path, 2, slurm_env=False), {}, slots=2)
    start(runner, 1)
    reap_all(runner, 1)
    assert (tmp_path / "out" / "2.out").read_text().startswith("a b|||||||\n")


def test_a_run_without_the_script_text_fails_the_job_alone(tmp_path, runner):
    """Catches a job whose script index names nothing in its RUN run as a plain command (or
    stopping the agent)."""
    job = script_job(tmp_path, 3)
    job["script"] = 5
    scripts.attach(job, ["#!/bin/sh\n"])
    runner.assign(job, {}, slots=2)
    [failed] = start(runner, 1)
    assert failed["type"] == "finished" and failed["error"] == \
        "cannot start: script: missing from the RUN message"


def test_a_new_agent_removes_the_scripts_of_jobs_it_does_not_hold(tmp_path):
    """Catches the private copies of a dead agent's jobs left for ever in the state
    directory."""
    directory = tmp_path / "state" / "scripts"
    directory.mkdir(parents=True)
    for name in ("8.1", "9.2", "junk"):
        (directory / name).write_text("#!/bin/sh\n")
    Runner("hostA", JobFiles(str(tmp_path / "state")))
    assert os.listdir(directory) == []
