"""Batch scripts end to end on both backends, with the real commands: `hq-submit SCRIPT` reads
the script at submission (the file may change or go at once), honours its #HQ and #SBATCH lines
under the command line, and every attempt runs what was submitted. Each test names its bug."""

import json
import os
import signal

import pytest

from tests.helpers import Cluster, read_pid, wait_until

WHAT = 'echo "$SLURM_JOB_NAME $HQ_CORES $SLURM_CPUS_PER_TASK $HQ_ARRAY_INDEX ' \
       '$SLURM_ARRAY_TASK_ID $SLURM_JOB_ID"\n'


@pytest.fixture
def four_slots(db_url):
    """A cluster whose one host offers 4 slots, however many cores this machine has."""
    c = Cluster(db_url, hosts=(("localhost", "4", "-", "127.0.0.1"),))
    with c.running():
        yield c


def write(path, text, mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return path.name


def submit(cluster, *args, cwd):
    result = cluster.run("hq-submit", *args, cwd=str(cwd))
    assert result.returncode == 0, result.stderr
    return [int(line) for line in result.stdout.split()], result.stderr


def details(cluster, ids):
    return json.loads(cluster.run("hq-client", "details", "--json", *map(str, ids),
                                  check=True).stdout)


def wait_ended(cluster, ids, timeout=30):
    return wait_until(lambda: (lambda jobs: jobs if all(j["finished"] for j in jobs) else None)(
        details(cluster, ids)), timeout, 0.1, f"jobs {ids} to end")


def test_scripts_run_as_submitted_after_their_files_are_gone(cluster, tmp_path):
    """Catches the script's path recorded as the command (`not found`, exit 127, once the
    file is deleted; exit 126 for a file without its x bit), or its #! interpreter ignored."""
    names = [write(tmp_path / "run.sh", '#!/bin/bash\necho "bash [$1] [$2]"\n', 0o700),
             write(tmp_path / "plain.sh", "#!/bin/sh\necho sh ran\n"),
             write(tmp_path / "job.py", "#!/usr/bin/env python3\nimport sys\n"
                   "print('python', sys.argv[1:])\n")]
    ids = [submit(cluster, "--hold", name, "one two", "3", cwd=tmp_path)[0][0]
           for name in names]
    texts = [(tmp_path / name).read_text() for name in names]
    for name in names:
        os.unlink(tmp_path / name)
    cluster.run("hq-client", "release", *map(str, ids), check=True)
    jobs = wait_ended(cluster, ids)
    assert [j["state"] for j in jobs] == ["done"] * 3, [j["reason"] for j in jobs]
    assert [open(j["stdout"]).read() for j in jobs] == [
        "bash [one two] [3]\n", "sh ran\n", "python ['one two', '3']\n"]
    assert [j["script"] for j in jobs] == texts
    assert jobs[0]["command"] == "run.sh 'one two' 3" and jobs[0]["name"] == "run.sh"


def test_directives_reach_the_jobs_and_the_command_line_wins(four_slots, tmp_path):
    """Catches #HQ or #SBATCH lines ignored (cores, time, name, output, array), the command
    line losing to them, an unknown option dropped silently, or a multi-node script run."""
    cluster = four_slots
    write(tmp_path / "job.sh", "#!/bin/sh\n#SBATCH --job-name=slurmname --cpus-per-task=2\n"
          "#SBATCH --time=0:30 --array=1-3\n#SBATCH --output=out-%x-%A_%a-%j.txt\n"
          "#SBATCH --partition=debug\n#HQ -n sim\n#HQ -p 5\n\n" + WHAT)
    ids, warnings = submit(cluster, "job.sh", cwd=tmp_path)
    assert len(ids) == 3 and "job.sh line 5: #SBATCH --partition=debug ignored" in warnings
    [cli], _ = submit(cluster, "-n", "cli", "-c", "1", "-t", "100", "--array", "4", "job.sh",
                      cwd=tmp_path)
    jobs = wait_ended(cluster, [*ids, cli])
    assert [(j["name"], j["cores"], j["time_limit"], j["array_index"]) for j in jobs] == [
        ("sim", 2, 30, 1), ("sim", 2, 30, 2), ("sim", 2, 30, 3), ("cli", 1, 100, 4)]
    assert {j["priority"] for j in jobs} == {5}
    for job, cores in zip(jobs, (2, 2, 2, 1)):
        index = job["array_index"]
        path = tmp_path / f"out-{job['name']}-{job['batch']}_{index}-{job['id']}.txt"
        assert job["stdout"] == job["stderr"] == str(path)
        assert path.read_text() == f"{job['name']} {cores} {cores} {index} {index} {job['id']}\n"
    write(tmp_path / "wide.sh", "#!/bin/sh\n#SBATCH --nodes=2\ntrue\n")
    refused = cluster.run("hq-submit", "wide.sh", cwd=str(tmp_path))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == "hq-submit: wide.sh line 2: #SBATCH --nodes=2: hq runs a job on " \
        "one host (--nodes=1) [BAD_USAGE]\n"


@pytest.mark.slow
def test_a_requeued_attempt_and_a_restarted_server_run_the_submitted_script(cluster, tmp_path):
    """Catches an attempt that reads the script file again (a requeue, a server restart):
    the job would run what the file says by then, not what was submitted."""
    ledger = tmp_path / "ledger"
    marker = tmp_path / "hung"                   # the very first run hangs: its host is lost
    write(tmp_path / "job.sh", f'#!/bin/sh\necho "v1 $HQ_JOB_ID.$HQ_ATTEMPT" >> {ledger}\n'
          f'[ -e {marker} ] || {{ touch {marker}; exec sleep 60; }}\n')
    [first], _ = submit(cluster, "-r", "1", "job.sh", cwd=tmp_path)
    [held], _ = submit(cluster, "--hold", "job.sh", cwd=tmp_path)
    write(tmp_path / "job.sh", f'#!/bin/sh\necho "v2 $HQ_JOB_ID.$HQ_ATTEMPT" >> {ledger}\n')
    wait_until(lambda: ledger.exists() and ledger.read_text(), 20, 0.1, "the first attempt")
    crash_agent(cluster)                  # its new agent will not know the job: requeued
    wait_until(lambda: details(cluster, [first])[0]["state"] == "done", 40, 0.2,
               "the second attempt to end")
    cluster.stop_server(signal.SIGKILL)
    cluster.start_server()
    cluster.run("hq-client", "release", str(held), check=True)
    assert wait_ended(cluster, [held])[0]["state"] == "done"
    assert ledger.read_text() == f"v1 {first}.1\nv1 {first}.2\nv1 {held}.1\n"


def crash_agent(cluster):
    """Kill the agent and its jobs, and lose its journal: its successor knows nothing."""
    run = os.path.join(cluster.home, "run")
    pid = read_pid(os.path.join(run, "agent-localhost.pid"))
    children = [int(c) for c in os.popen(f"pgrep -P {pid}").read().split()]
    os.kill(pid, signal.SIGKILL)
    for child in children:
        os.killpg(child, signal.SIGKILL)
    os.unlink(os.path.join(run, "jobs-localhost", "journal"))
