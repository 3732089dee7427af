"""The agent's health sample (agents/metrics.py): CPU of processes outside hq jobs counts as
outside load; the agent and every process descended from it (its jobs, their children, what
they reaped) or from an adopted job do not. No scan of every process: an idle agent is cheap."""

import os
import subprocess
import sys

import psutil
import pytest

from agents.metrics import ProcFile, Sampler, _cpu_ticks, facts
from tests.helpers import kill_pid, wait_until
from tests.test_agent_protocol import PlayServer

BURN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"


def cpu(pid):
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def detached_burner(pidfile):
    """A burner that is not our descendant (its parent shell exits at once)."""
    subprocess.run(["sh", "-c", f'"{sys.executable}" -c "$0" & echo $! > {pidfile}', BURN],
                   check=True)
    return int(pidfile.read_text())


def test_hq_cpu_counts_our_descendants_but_not_outside_processes(tmp_path):
    """Catches a sampler that counts a job's processes as outside load (or outside processes
    as hq's): the CPU it books to hq grows with a job's grandchild, not with a process
    outside the agent's tree, and does not drop when the job ends and is reaped."""
    sampler = Sampler()
    outside = detached_burner(tmp_path / "outside")
    job = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0"; true', BURN])
    try:
        burner = wait_until(lambda: psutil.Process(job.pid).children(), 10,
                            message="the job's burning grandchild")[0].pid
        wait_until(lambda: cpu(burner) > 0.2 and cpu(outside) > 0.2, 20, 0.05, "both burn")
        before = (sampler.hq_seconds(), cpu(burner), cpu(outside), sum(os.times()[:2]))
        wait_until(lambda: cpu(burner) - before[1] > 0.5 and cpu(outside) - before[2] > 0.5,
                   20, 0.05, "both to burn half a second more")
        after = (sampler.hq_seconds(), cpu(burner), cpu(outside), sum(os.times()[:2]))
        hq, job_cpu, outside_cpu, own = (a - b for a, b in zip(after, before))
        assert hq >= job_cpu + own - 0.05, "the job's grandchild is not counted as hq's"
        assert hq - job_cpu - own < 0.2 * outside_cpu, "the outside process counted as hq's"
        counted = sampler.hq_seconds()
        kill_pid(burner)
        job.wait(10)                       # reaped: its CPU moves to our children's times
        assert sampler.hq_seconds() >= counted - 0.05
    finally:
        kill_pid(outside)
        job.kill()
        job.wait()


def test_adopted_jobs_trees_are_hq_cpu(tmp_path):
    """An adopted job is not our descendant: its tree counts as hq's through `roots`."""
    sampler = Sampler()
    adopted = detached_burner(tmp_path / "adopted")
    try:
        wait_until(lambda: cpu(adopted) > 0.2, 20, 0.05, "the adopted job to burn")
        before = sampler.hq_seconds([adopted]), cpu(adopted), sum(os.times()[:2])
        wait_until(lambda: cpu(adopted) - before[1] > 0.5, 20, 0.05, "it to burn more")
        after = sampler.hq_seconds([adopted]), cpu(adopted), sum(os.times()[:2])
        hq, burned, own = (a - b for a, b in zip(after, before))
        assert hq >= burned + own - 0.05
        assert sampler.hq_seconds() < after[0] - 0.3      # without the root: not counted
    finally:
        kill_pid(adopted)


def test_sample_fields():
    sampler = Sampler()
    first = sampler.sample()
    assert first["foreign_load"] == 0.0 and first["cpu_percent"] == 0.0
    ticks = _cpu_ticks()[1]
    wait_until(lambda: _cpu_ticks()[1] > ticks + 50, 5, message="the CPU clock to move on")
    sample = sampler.sample()
    assert 0 <= sample["cpu_percent"] <= 100 and 0 <= sample["foreign_load"] <= os.cpu_count()
    assert sample["mem_available"] > 0 and sample["nprocs"] >= 1
    assert {"load1", "load5", "load15"} <= set(sample)


def test_a_proc_file_kept_open_reads_what_is_there_now_however_long(tmp_path):
    """Catches a /proc file kept open (no open and close every heartbeat) that reads only its
    first block, the old content, or nothing forever after an error."""
    maps = ProcFile("/proc/self/maps", size=64)             # far longer than one block
    first = maps.read()
    assert first.startswith(open("/proc/self/maps", "rb").read()[:64]) and len(first) > 640
    path = tmp_path / "file"
    path.write_bytes(b"one")
    again = ProcFile(str(path))
    assert again.read() == b"one"
    os.close(again.fd)                                       # the descriptor is lost
    path.write_bytes(b"two")
    assert again.read() == b"two"
    assert ProcFile(str(tmp_path / "missing")).read() is None


@pytest.mark.slow
def test_idle_agent_is_cheap(tmp_path):
    """Catches an idle agent that scans every process each heartbeat (about 28 ms of CPU per
    heartbeat on a machine with 150 processes, 1.4 % of a core at the default 2 s): a real
    agent without jobs, heartbeating every 0.1 s, uses under 3 ms per heartbeat (about 0.7 ms
    here: 0.03 % of a core at 2 s)."""
    server = PlayServer(tmp_path)
    try:
        server.start_agent(heartbeat=0.1, log_level="INFO")
        server.registered()
        server.wait(lambda: len(server.heartbeats) >= 3, 10, "heartbeats")
        used, count = cpu(server.agent.pid), len(server.heartbeats)
        server.wait(lambda: len(server.heartbeats) >= count + 20, 20, "20 heartbeats")
        per_heartbeat = (cpu(server.agent.pid) - used) / (len(server.heartbeats) - count)
        assert per_heartbeat < 0.003, f"{per_heartbeat * 1000:.1f} ms of CPU per heartbeat"
    finally:
        server.close()


def test_only_the_agent_the_server_names_gathers_the_hosts_metrics(tmp_path):
    """Catches every user's agent on a host gathering (and sending) the host's metrics: the
    server's REGISTER and HEARTBEAT replies say whether this agent is the one that reports
    them; the others send liveness and their jobs only."""
    server = PlayServer(tmp_path, register_reply={"heartbeat_s": 0.1, "metrics": False})
    server.heartbeat_reply = {"metrics": False}
    try:
        server.start_agent(heartbeat=0.1, log_level="INFO")
        assert "load1" in server.registered()          # the server may not know yet
        server.wait(lambda: len(server.heartbeats) >= 4, 10, "heartbeats")
        assert [set(b) for b in server.heartbeats[-3:]] == [{"req", "running", "reported",
                                                             "every", "n"}] * 3
        server.heartbeat_reply = {"metrics": True}      # the reporter left: now this one
        count = len(server.heartbeats)
        server.wait(lambda: len(server.heartbeats) >= count + 3, 10, "heartbeats")
        assert {"load1", "foreign_load", "mem_available"} <= set(server.heartbeats[-1])
    finally:
        server.close()


def test_facts():
    info = facts()
    assert info["cores"] >= 1 and info["memory_total"] > 0 and info["os"]

