"""What an idle agent costs its host: a real hq-server, user-server and agent (one host, SQLite,
the shipped 2 s heartbeat), the agent's CPU over --seconds once its first job has ended, beside a
floor measured in the same run (a Python process that wakes as often and does nothing).

Usage: .venv/bin/python tools/bench_idle_agent.py [--seconds S]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.cluster import Cluster, wait_until  # noqa: E402

FLOOR = "import time\nwhile True: time.sleep({0})\n"


def cpu_s(process):
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def measure(pids, seconds):
    """% of a core each process used over `seconds` (measured side by side)."""
    processes = [psutil.Process(pid) for pid in pids]
    before, start = [cpu_s(p) for p in processes], time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - start
    return [100 * (cpu_s(p) - b) / took for p, b in zip(processes, before)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="hqidle")
    try:
        with Cluster(f"sqlite:///{root}/hq.sqlite", heartbeat_s=2.0).running() as cluster:
            cluster.run("hq-submit", "--wait", "true", check=True, timeout=60)
            wait_until(lambda: cluster.agent_pids(), 10, message="the agent's pid file")
            floor = subprocess.Popen([sys.executable, "-c", FLOOR.format(2.0)])
            try:
                agent_pct, floor_pct = measure([cluster.agent_pids()[0], floor.pid],
                                               args.seconds)
            finally:
                floor.kill()
                floor.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"idle agent: {agent_pct:.3f} % of a core over {args.seconds:g} s (heartbeat 2 s); "
          f"floor, a Python process waking every 2 s: {floor_pct:.3f} %")


if __name__ == "__main__":
    main()
