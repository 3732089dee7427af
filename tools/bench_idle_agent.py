"""What an idle agent costs its host: a real hq-server, user-server and agent (one host, SQLite,
the shipped 2 s heartbeat: an idle host's reporter keeps 4 s), the agent's CPU over --seconds once
its first job has ended, beside a floor measured in the same run (a Python process that wakes as
often and does nothing).

Usage: .venv/bin/python tools/bench_idle_agent.py [--seconds S]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hq.server.fleet import IDLE_EVERY  # noqa: E402
from tools.cluster import Cluster, wait_until  # noqa: E402

HEARTBEAT_S = 2.0

FLOOR = "import time\nwhile True: time.sleep({0})\n"


def cpu_s(pid):
    """CPU seconds of every thread of `pid`, in nanoseconds' resolution (schedstat), not in
    the clock ticks of /proc/PID/stat (10 ms: an idle agent uses a few of them a minute)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
            total += int(handle.read().split()[0])
    return total / 1e9


def measure(pids, seconds):
    """% of a core each process used over `seconds` (measured side by side)."""
    before, start = [cpu_s(pid) for pid in pids], time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - start
    return [100 * (cpu_s(pid) - b) / took for pid, b in zip(pids, before)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="hqidle")
    try:
        every = IDLE_EVERY * HEARTBEAT_S                # started long before
        floor = subprocess.Popen([sys.executable, "-c", FLOOR.format(every)])
        try:
            with Cluster(f"sqlite:///{root}/hq.sqlite", heartbeat_s=HEARTBEAT_S).running() \
                    as cluster:
                cluster.run("hq-submit", "--wait", "true", check=True, timeout=60)
                wait_until(lambda: cluster.agent_pids(), 10, message="the agent's pid file")
                agent_pct, floor_pct = measure([cluster.agent_pids()[0], floor.pid],
                                               args.seconds)
        finally:
            floor.kill()
            floor.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"idle agent: {agent_pct:.3f} % of a core over {args.seconds:g} s (heartbeat "
          f"{HEARTBEAT_S:g} s, {every:g} s on an idle host); floor, a Python process waking "
          f"every {every:g} s: {floor_pct:.3f} %")


if __name__ == "__main__":
    main()
