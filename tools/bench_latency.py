"""Latency of the command line on an idle one-host cluster (server and user-server up), beside
floors measured in the same run: `python -c pass` and `python -c 'import zmq'` (medians of N).

Usage: .venv/bin/python tools/bench_latency.py [--runs N] [--backend sqlite|mysql] [--zmq]
                                               [--importtime]

--zmq sends the commands through the ZeroMQ socket of the user-server (HQ_TRANSPORT=zmq)
instead of the plain stream socket of the fast path. --importtime prints, first, the modules
that `hq-submit true` spends most import time on (`python -X importtime`, cumulative).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.cluster import BIN, REPO, Cluster, MysqlDatabase, kill_pid, wait_until  # noqa: E402

WAIT_JOB_S = 0.4        # how long the job of the wait measurement runs
BULK_JOBS = 1000


def seconds(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def walls(command, runs, env=None, stdin=None):
    """Wall times of a command run `runs` times (output discarded); None if it fails."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stdin=stdin,
                              stderr=subprocess.PIPE)
        times.append(time.perf_counter() - started)
        if done.returncode not in (0,):
            print(f"  ({' '.join(command)[:60]} exited {done.returncode}: "
                  f"{done.stderr.decode().strip()[:200]})", file=sys.stderr)
            return None
    return times


def hq(name):
    return os.path.join(BIN, name)


def wait_lags(cluster, client, runs):
    """Seconds from a job's end (the agent's clock) to the exit of `hq-client wait ID`
    started while the job runs."""
    lags = []
    for _ in range(runs):
        job_id = client.submit(f"sleep {WAIT_JOB_S}")
        proc = subprocess.Popen([hq("hq-client"), "wait", str(job_id)], env=cluster.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait(60)
        returned = time.time()
        job = client.details([job_id], events=False)[0]
        lags.append(returned - seconds(job["finished"]))
    return lags


def bulk_status(cluster, client, runs):
    """`hq-client status --jobs ID,...` for BULK_JOBS ended jobs (None if not supported)."""
    ids = client.submit_many(["true"] * BULK_JOBS)
    client.wait(ids, timeout=120)
    return walls([hq("hq-client"), "status", "--jobs", ",".join(map(str, ids))], runs,
                 cluster.env)


def first_command(cluster, runs):
    """`hq-client status` when no user-server runs (it starts one)."""
    times = []
    for _ in range(runs):
        kill_pid(cluster.user_server_pid(), signal.SIGTERM)
        wait_until(lambda: not os.path.exists(os.path.join(cluster.home, "run", "user.sock")),
                   10, message="the user-server's socket to go")
        got = walls([hq("hq-client"), "status"], 1, cluster.env)
        if got is None:
            return None
        times += got
    return times


def import_times(cluster, top=10):
    """The `top` imports by cumulative time of one `hq-submit true` (user-server up)."""
    env = dict(cluster.env, PYTHONPROFILEIMPORTTIME="1")
    walls([hq("hq-submit"), "true"], 3, cluster.env)          # warm caches
    done = subprocess.run([hq("hq-submit"), "true"], env=env, capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")
             and "cumulative" not in line]
    lines.sort(key=lambda line: -int(line.split("|")[1]))
    print(f"top imports of hq-submit true (us: self | cumulative | module), "
          f"{len(lines)} modules:")
    for line in lines[:top]:
        print("  " + line[len("import time:"):].strip())


def measure(cluster, runs):
    py = sys.executable
    env = cluster.env
    client = cluster.client()
    job_id = client.wait([client.submit("true")], timeout=30)[0]["id"]
    rows = {
        "floor: python -c pass": walls([py, "-c", "pass"], runs),
        "floor: python -c 'import zmq'": walls([py, "-c", "import zmq"], runs),
        "floor: python -S -c pass (no site)": walls([py, "-S", "-c", "pass"], runs),
        "hq-submit true": walls([hq("hq-submit"), "true"], runs, env),
        "hq-client details ID --json": walls([hq("hq-client"), "details", str(job_id),
                                             "--json"], runs, env),
        "hq-client status": walls([hq("hq-client"), "status"], runs, env),
        "hq-submit --wait true": walls([hq("hq-submit"), "--wait", "true"], runs, env),
        "hq-client wait ID: after the end": wait_lags(cluster, client, runs),
        f"status of {BULK_JOBS} jobs (one call)": bulk_status(cluster, client, runs),
    }
    to_start, to_finish = [], []
    for _ in range(runs):
        job = client.wait([client.submit("true")], timeout=30)[0]
        to_start.append(seconds(job["started"]) - seconds(job["submitted"]))
        to_finish.append(seconds(job["finished"]) - seconds(job["submitted"]))
    rows["submit -> started (server)"] = to_start
    rows["submit -> finished (server)"] = to_finish
    client.close()
    rows["first command, no user-server"] = first_command(cluster, max(5, runs // 3))
    return rows


def report(rows, floor):
    ms = lambda v: f"{v * 1000:8.1f} ms"  # noqa: E731
    print(f"{'measure':<38} {'p50':>11} {'p99':>11} {'p50/floor':>10}")
    for name, values in rows.items():
        if values is None:
            print(f"{name:<38} {'n/a':>11}")
            continue
        median = statistics.median(values)
        print(f"{name:<38} {ms(median):>11} {ms(pct(values, 99)):>11} {median / floor:>9.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--zmq", action="store_true", help="use the ZeroMQ socket")
    parser.add_argument("--importtime", action="store_true", help="print the top imports")
    args = parser.parse_args()
    # as an installation has it (pip compiles; PYTHONDONTWRITEBYTECODE would leave every run
    # compiling hq's modules anew)
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "hq"),
                    os.path.join(REPO, "agents")], check=True)
    mysql = MysqlDatabase() if args.backend == "mysql" else None
    tmp = tempfile.mkdtemp(prefix="hqlat")
    cluster = Cluster(mysql.url if mysql else f"sqlite:///{tmp}/hq.sqlite", heartbeat_s=2)
    if args.zmq:
        cluster.env["HQ_TRANSPORT"] = "zmq"
    try:
        cluster.setup_database()
        cluster.start_server()
        if args.importtime:
            cluster.client().wait([cluster.client().submit("true")], timeout=30)
            import_times(cluster)
        rows = measure(cluster, args.runs)
    finally:
        cluster.close()
        if mysql:
            mysql.drop()
    print(f"backend {args.backend}, transport {'zmq' if args.zmq else 'default'}, "
          f"{args.runs} runs each (first command: {max(5, args.runs // 3)}); load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    report(rows, statistics.median(rows["floor: python -c pass"]))


if __name__ == "__main__":
    main()
