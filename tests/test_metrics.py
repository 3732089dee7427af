"""The agent's health sample (agents/metrics.py): CPU of processes outside hq jobs counts as
outside load; processes of hq jobs (HQ_JOB_ID in their environment) do not."""

import os
import subprocess
import sys

import psutil

from agents.metrics import Sampler, facts
from tests.helpers import wait_until

BURN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"


def burner(**env):
    return subprocess.Popen([sys.executable, "-c", BURN], env=dict(os.environ, **env))


def test_outside_load_counts_other_processes_but_not_hq_jobs():
    sampler = Sampler()
    outside, job = burner(), burner(HQ_JOB_ID="7")
    try:
        sampler.sample()
        by_pid = {}
        wait_until(lambda: by_pid.update({p.pid: v for p, v in sampler.is_job.items()})
                   or (outside.pid in by_pid and job.pid in by_pid), 10, 0.05,
                   "both burners to be sampled")
        assert by_pid[job.pid] is True and by_pid[outside.pid] is False
        assert by_pid[os.getpid()] is True      # the sampling agent itself is not outside load
        psutil.Process(outside.pid).cpu_percent(None)
        sample = wait_until(lambda: (lambda s: s if s["foreign_load"] >= 0.2 else None)(
            sampler.sample()), 10, 0.3, "the outside burner to show as load")
        assert 0 <= sample["cpu_percent"] and sample["mem_available"] > 0
    finally:
        for proc in (outside, job):
            proc.kill()
            proc.wait()


def test_facts():
    info = facts()
    assert info["cores"] >= 1 and info["memory_total"] > 0 and info["os"]
