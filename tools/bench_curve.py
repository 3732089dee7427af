"""The cost of CURVE: `hq-submit true` wall time (median of N) and throughput of M `true` jobs
(submit through the Python API until all are done), with [security] curve on and off.

Usage: .venv/bin/python tools/bench_curve.py [--runs N] [--jobs M]

Also the median PING round trip straight to hq-server: the per-message cost of CURVE alone.
hq-submit itself talks ipc:// to the user-server, which keeps one CURVE connection open, so
no handshake is on its path.
"""

import argparse
import configparser
import getpass
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.cluster import Cluster, wait_until  # noqa: E402
from tools.bench_latency import cli_walls  # noqa: E402


def cluster_with(curve, tmp):
    cluster = Cluster(f"sqlite:///{tmp}/hq-{curve}-{time.time()}.sqlite", heartbeat_s=2)
    cluster.user = getpass.getuser()
    path = os.path.join(cluster.etc, "hq.cfg")
    cfg = configparser.ConfigParser()
    cfg.read(path)
    cfg["security"]["curve"] = curve
    with open(path, "w") as handle:
        cfg.write(handle)
    return cluster


def measure(cluster, runs, jobs):
    client, walls = cli_walls(cluster, runs)
    live = ("held", "pending", "dispatched", "running")
    wait_until(lambda: not sum(client.status()[s] for s in live), 60, 0.1, "an idle cluster")
    ended = lambda: sum(n for s, n in client.status().items() if s not in live)  # noqa: E731
    ended_before = ended()
    started = time.perf_counter()
    ids = client.submit_many(["true"] * jobs)
    submitted = time.perf_counter() - started
    wait_until(lambda: ended() >= ended_before + jobs, 600, 0.1, f"{jobs} jobs to end")
    total = time.perf_counter() - started
    client.close()
    return walls, len(ids) / submitted, jobs / total, ping_rtt(cluster, 500)


def ping_rtt(cluster, count):
    """Median round trip of PING straight to hq-server (CURVE when the server uses it)."""
    import zmq
    from hq import protocol as p, security
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if "CURVE is off" not in cluster.server_log():
        home = cluster.home
        security.make_client_socket(
            sock, security.read_public_key(os.path.join(home, "keys", "server.key")),
            *security.load_keypair(security.cert_paths(home, security.USER_CERT)[1]))
    sock.connect(f"tcp://127.0.0.1:{cluster.port}")
    rtts = []
    for i in range(count):
        started = time.perf_counter()
        sock.send_multipart(p.encode(p.PING, {"req": i, "user": cluster.user}))
        if not sock.poll(10000):
            raise SystemExit("no PING reply within 10 s")
        sock.recv_multipart()
        rtts.append(time.perf_counter() - started)
    sock.close()
    return statistics.median(rtts)


def floor(runs):
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import zmq"], check=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="hqcurve")
    results = []
    for curve in ("on", "off", "on", "off"):   # alternated: the machine's load drifts
        cluster = cluster_with(curve, tmp)
        try:
            cluster.setup_database()
            cluster.start_server()
            results.append((curve, measure(cluster, args.runs, args.jobs)))
        finally:
            cluster.close()
    print(f"{args.runs} hq-submit runs, {args.jobs} jobs of `true`, one host")
    print(f"{'curve':<6} {'hq-submit p50':>14} {'submit jobs/s':>14} {'run jobs/s':>11} "
          f"{'PING rtt p50':>13}")
    for curve, (walls, submit_rate, run_rate, rtt) in results:
        print(f"{curve:<6} {statistics.median(walls) * 1000:>11.1f} ms {submit_rate:>14.0f} "
              f"{run_rate:>11.1f} {rtt * 1e6:>10.0f} us")
    print(f"floor: python -c 'import zmq' {floor(args.runs) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
