"""Latency of one job on an idle one-host cluster: `hq-submit true` wall time, and
submit-to-start / submit-to-finished of single `true` jobs (server-side timestamps).

Usage: .venv/bin/python tools/bench_latency.py [--runs N] [--backend sqlite|mysql]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.cluster import BIN, Cluster, MysqlDatabase  # noqa: E402


def seconds(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def cli_walls(cluster, runs):
    """Wall times of `hq-submit -q true` once the user-server and agent are up; and a client."""
    client = cluster.client()
    client.wait([client.submit("true")], timeout=30)
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([os.path.join(BIN, "hq-submit"), "-q", "true"], env=cluster.env,
                       check=True)
        walls.append(time.perf_counter() - started)
    return client, walls


def measure(cluster, runs):
    client, walls = cli_walls(cluster, runs)
    to_start, to_finish = [], []
    for _ in range(runs):
        job = client.wait([client.submit("true")], timeout=30)[0]
        to_start.append(seconds(job["started"]) - seconds(job["submitted"]))
        to_finish.append(seconds(job["finished"]) - seconds(job["submitted"]))
    floor = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["sh", "-c", "true"], check=True)
        floor.append(time.perf_counter() - started)
    return walls, to_start, to_finish, floor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    args = parser.parse_args()
    mysql = MysqlDatabase() if args.backend == "mysql" else None
    tmp = tempfile.mkdtemp(prefix="hqlat")
    cluster = Cluster(mysql.url if mysql else f"sqlite:///{tmp}/hq.sqlite", heartbeat_s=2)
    try:
        cluster.setup_database()
        cluster.start_server()
        walls, to_start, to_finish, floor = measure(cluster, args.runs)
    finally:
        cluster.close()
        if mysql:
            mysql.drop()
    ms = lambda v: f"{v * 1000:7.1f} ms"  # noqa: E731
    print(f"backend {args.backend}, {args.runs} runs each")
    print(f"{'measure':<34} {'p50':>10} {'p90':>10}")
    for name, values in (("hq-submit true (wall)", walls), ("submit -> started", to_start),
                         ("submit -> finished", to_finish), ("floor: sh -c true (wall)", floor)):
        print(f"{name:<34} {ms(statistics.median(values)):>10} {ms(pct(values, 90)):>10}")


if __name__ == "__main__":
    main()
