"""Bounded soak: N short jobs on a local two-host cluster while hq-server, agents and the
user-server are killed (-9) at random moments; prints submitted, done, requeued, lost, duplicated.

Usage: .venv/bin/python tools/chaos.py [--jobs N] [--kills K] [--backend sqlite|mysql] [--seed S]
"""

import argparse
import collections
import os
import random
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hq.errors import HQError  # noqa: E402
from tools.cluster import Cluster, MysqlDatabase, kill_pid, read_pid, wait_until  # noqa: E402

HOSTS = [("alpha", "2", "-", "127.0.0.1"), ("beta", "2", "-", "localhost")]


def counts(client):
    try:
        return client.status()
    except HQError:
        return None


def kill_server(cluster):
    cluster.server.send_signal(signal.SIGKILL)
    cluster.server.wait(10)
    cluster.server = None
    cluster.start_server()


def kill_agent(cluster, rng):
    pid = read_pid(os.path.join(cluster.home, "run", f"agent-{rng.choice(HOSTS)[0]}.pid"))
    kill_pid(pid, signal.SIGKILL)


def kill_user_server(cluster):
    kill_pid(cluster.user_server_pid(), signal.SIGKILL)


def soak(cluster, jobs, kills, rng, ledger):
    client = cluster.client()
    ids = client.submit_many([f"sleep 0.0{rng.randint(1, 9)}; echo $HQ_JOB_ID >> {ledger}"
                              for _ in range(jobs)])
    done_kills = collections.Counter()
    actions = [("server", kill_server), ("agent", lambda c: kill_agent(c, rng)),
               ("user-server", kill_user_server)]
    for _ in range(kills):
        target = rng.uniform(0.1, 0.9) * jobs
        wait_until(lambda: (counts(client) or {}).get("done", 0) >= target or
                   (counts(client) or {}).get("done", 0) >= jobs, 300, 0.05, "progress")
        name, action = rng.choice(actions)
        action(cluster)
        done_kills[name] += 1
        client.close()
        client = cluster.client()
    final = wait_until(lambda: (lambda c: c if c and sum(c[s] for s in ("done", "failed", "lost",
                       "cancelled")) >= jobs else None)(counts(client)), 600, 0.2, "the end")
    return client, ids, final, done_kills


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--grace", type=float, default=10.0,
                        help="requeue_grace_s of the server (the shipped default: 10)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    mysql = MysqlDatabase() if args.backend == "mysql" else None
    tmp = tempfile.mkdtemp(prefix="hqchaos")
    ledger = os.path.join(tmp, "ledger")
    open(ledger, "w").close()
    cluster = Cluster(mysql.url if mysql else f"sqlite:///{tmp}/hq.sqlite", hosts=HOSTS)
    cluster.set_config("server", "requeue_grace_s", str(args.grace))
    started = time.monotonic()
    try:
        cluster.setup_database()
        cluster.start_server()
        client, ids, final, kills = soak(cluster, args.jobs, args.kills, rng, ledger)
        jobs = client.details(ids)
    finally:
        cluster.close()
        if mysql:
            mysql.drop()
    seen = collections.Counter(int(x) for x in open(ledger).read().split())
    requeued = sum(1 for j in jobs for a in j["attempts"] if a["outcome"] == "pending")
    lost_mid_run = {j["id"] for j in jobs if len(j["attempts"]) > 1}
    duplicated = [i for i, n in seen.items() if n > 1 and i not in lost_mid_run]
    rows = [("seed", args.seed), ("backend", args.backend), ("heartbeat, grace", f"0.5 s, {args.grace:g} s"),
            ("kills", ", ".join(f"{k} {n}" for k, n in sorted(kills.items()))),
            ("jobs submitted", len(ids)), ("done", final["done"]), ("failed", final["failed"]),
            ("lost", final["lost"]), ("requeued attempts", requeued),
            ("ran twice (requeued mid-run)", sum(1 for i in lost_mid_run if seen[i] > 1)),
            ("duplicated", len(duplicated)),
            ("done but not in ledger", sum(1 for j in jobs if j["state"] == "done"
                                           and not seen[j["id"]])),
            ("seconds", round(time.monotonic() - started, 1))]
    for name, value in rows:
        print(f"{name:<30} {value}")
    for job in jobs:
        if job["id"] in lost_mid_run and seen[job["id"]] > 1 and os.environ.get("HQ_CHAOS_SHOW"):
            for e in job["events"]:
                print("  ", job["id"], e["time"], e["state"], e["attempt"], e["host"], e["detail"])
    return 1 if duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
