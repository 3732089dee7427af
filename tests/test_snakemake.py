"""The Snakemake executor plugin (snakemake-executor-plugin-hq/) running real workflows on a
real hq cluster: a fan-out of 20 jobs and a gather, with threads and memory mapped to hq;
Ctrl-C of snakemake cancels its running hq jobs.

Each test names in its docstring the bug it catches."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import REPO, Cluster, wait_until

pytest.importorskip("snakemake", reason="snakemake is not installed (pip install snakemake)")

PLUGIN = os.path.join(REPO, "snakemake-executor-plugin-hq")
HOSTS = (("localhost", "16", "local", "127.0.0.1"),)     # 16 slots: 8 two-thread jobs at once

FAN_OUT = """
rule all:
    input: "gathered.txt"

rule square:
    output: "parts/{i}.txt"
    threads: 2
    resources: mem_mb=64, runtime=5
    shell: "echo $(( {wildcards.i} * {wildcards.i} )) $HQ_CORES > {output}"

rule gather:
    input: expand("parts/{i}.txt", i=range(20))
    output: "gathered.txt"
    shell: "cat {input} > {output}"
"""

SLOW = """
rule all:
    input: expand("slow/{i}.txt", i=range(3))

rule slow:
    output: "slow/{i}.txt"
    shell: "sleep 120; touch {output}"
"""


@pytest.fixture
def wide_cluster(db_url):
    c = Cluster(db_url, hosts=HOSTS)
    with c.running():
        yield c


def snakemake(cluster, workdir, snakefile, *args, popen=False):
    with open(os.path.join(workdir, "Snakefile"), "w") as handle:
        handle.write(snakefile)
    env = dict(cluster.env, PYTHONPATH=os.pathsep.join([REPO, PLUGIN]))
    command = [sys.executable, "-m", "snakemake", "--executor", "hq", "--jobs", "20",
               "--seconds-between-status-checks", "10", *args]
    if popen:
        return subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300)


def hq_jobs(cluster):
    return json.loads(cluster.run("hq-client", "list", "--json", check=True).stdout)


@pytest.mark.slow
def test_a_fan_out_and_gather_runs_through_hq(wide_cluster, tmp_path):
    """Catches jobs that do not run through hq, a result that is wrong, threads or memory not
    passed on, hq's job id missing from Snakemake's log, or status checks that wait for the
    10 s pause instead of hq's push (the whole workflow would take minutes)."""
    done = snakemake(wide_cluster, str(tmp_path), FAN_OUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = (tmp_path / "gathered.txt").read_text().split("\n")
    assert lines[:-1] == [f"{i * i} 2" for i in range(20)]    # HQ_CORES: the 2 threads
    jobs = hq_jobs(wide_cluster)
    squares = [j for j in jobs if j["name"] == "smk-square"]
    assert len(squares) == 20 and len(jobs) == 21
    assert all(j["state"] == "done" for j in jobs)
    details = json.loads(wide_cluster.run("hq-client", "details", str(squares[0]["id"]),
                                          "--json", check=True).stdout)[0]
    assert (details["cores"], details["memory"], details["time_limit"]) == (2, 64 << 20, 300)
    assert f"submitted to hq as job {squares[0]['id']}" in done.stdout + done.stderr


@pytest.mark.slow
def test_ctrl_c_of_snakemake_cancels_its_running_hq_jobs(wide_cluster, tmp_path):
    """Catches hq jobs left running (each for 2 minutes) after the workflow was interrupted."""
    proc = snakemake(wide_cluster, str(tmp_path), SLOW, popen=True)
    try:
        wait_until(lambda: len([j for j in hq_jobs(wide_cluster) if j["state"] == "running"])
                   == 3, 120, interval=0.2, message="3 hq jobs running")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    jobs = hq_jobs(wide_cluster)
    assert len(jobs) == 3 and all(j["state"] == "cancelled" for j in jobs), jobs
