"""Bounded soak: N short jobs on a local two-host cluster while faults strike at random moments:
kill -9 of hq-server, agents, the user-server and, with --faults, full disks and database outages.

Usage: .venv/bin/python tools/chaos.py [--jobs N] [--sleep S] [--kills K] [--faults disk,db]
                                       [--outages M] [--runs R] [--backend sqlite|mysql] [--seed S]
       .venv/bin/python tools/chaos.py --net [--jobs N] [--sleep S] [--events E] [--hosts H]
                                       [--runs R] [--seed S]

--faults adds kinds to the kills (default: kills only): `disk`, $HQ_HOME on a tmpfs filled for a
few seconds, then freed; `db`, the database out for a few seconds (SQLite: its file on a tmpfs
filled, then freed; MySQL: a private MariaDB stopped, then started). Each kind strikes M times a
run; half of the outages also see a kill -9 while they last. Needs root for the tmpfs mounts.
Every job appends "ID PID" to a ledger: prints jobs, done, failed (`unknown outcome` and other
reasons), lost, requeued attempts and jobs that ran twice (which must be 0: exit status 1).

--net (root, MySQL; tools/chaos_net.py): the jobs run on netcluster hosts with an active
hq-server and its standby on hosts of their own, shipped timing; E faults strike one after the
other: an agent host crashed or cut off (3-14 s), the active server's host crashed or cut off
(the standby takes over). Prints crashes, partitions, takeovers (and their seconds), jobs, done,
lost (with reasons), ran twice and duplicated submissions (both must be 0: exit status 1).
"""

import argparse
import collections
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hq.errors import HQError  # noqa: E402
from tools.chaos_faults import DiskFull, Kills, MysqlDown, SqliteFull  # noqa: E402
from tools.cluster import Cluster, MysqlDatabase, wait_until  # noqa: E402
from tools.faults import ledger_command, ledger_counts, tmpfs  # noqa: E402

HOSTS = [("alpha", "2", "-", "127.0.0.1"), ("beta", "2", "-", "localhost")]
TERMINAL = ("done", "failed", "lost", "cancelled")
UNKNOWN_OUTCOME = "unknown outcome"


def counts(client):
    try:
        return client.status()
    except HQError:
        return None


def ended_count(client):
    c = counts(client) or {}
    return sum(c.get(s, 0) for s in TERMINAL)


@contextlib.contextmanager
def installation(args, tmp):
    """A cluster (not started) on the backend, with the faults' file systems and database:
    (cluster, the outages it can suffer)."""
    with contextlib.ExitStack() as stack:
        outages, db_dir = [], tmp
        if "db" in args.faults and args.backend == "sqlite":
            db_dir = stack.enter_context(tmpfs("16m"))
            outages.append(SqliteFull(db_dir))
        if args.backend == "mysql" and "db" in args.faults:
            from tools.private_mysql import PrivateMysql
            private = PrivateMysql()
            stack.callback(private.close)
            private.install()
            private.start()
            url = private.url
            outages.append(MysqlDown(private))
        elif args.backend == "mysql":
            database = MysqlDatabase()
            stack.callback(database.drop)
            url = database.url
        else:
            url = f"sqlite:///{db_dir}/hq.sqlite"
        cluster = Cluster(url, hosts=HOSTS)
        stack.callback(shutil.rmtree, cluster.root, True)
        if "disk" in args.faults:
            outages.append(DiskFull("disk", stack.enter_context(tmpfs("32m", cluster.home))))
        cluster.set_config("server", "requeue_grace_s", str(args.grace))
        stack.callback(cluster.close)
        yield cluster, outages


def outage(cluster, fault, kills, rng, tally):
    """`fault` for 2-5 s; half the time something is killed -9 while it lasts (hq-server is
    restarted once the database is back: it cannot start without it)."""
    fault.begin()
    tally[fault.name] += 1
    try:
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.3, 2.0))
            target = kills.strike(cluster, rng, restart_server=not fault.database)
            tally[f"kill {target}"] += 1
            tally[f"kill during {fault.name}"] += 1
        time.sleep(rng.uniform(2.0, 5.0))
    finally:
        fault.end()
    if cluster.server is None:
        cluster.start_server()


def soak(cluster, outages, args, rng, ledger):
    """Submit the jobs, strike the faults at random points of progress, wait for the end:
    (ids, fault tally)."""
    client = cluster.client()
    ids = client.submit_many([ledger_command(ledger, f"sleep {rng.uniform(0.01, args.sleep):.2f}")
                              for _ in range(args.jobs)])
    kills = Kills([h[0] for h in HOSTS])
    events = [None] * args.kills + [o for o in outages for _ in range(args.outages)]
    rng.shuffle(events)
    tally = collections.Counter()
    for event in events:
        target = rng.uniform(0.1, 0.9) * args.jobs
        wait_until(lambda: ended_count(client) >= target, 300, 0.05, "progress")
        if event is None:
            tally[f"kill {kills.strike(cluster, rng)}"] += 1
        else:
            outage(cluster, event, kills, rng, tally)
        client.close()
        client = cluster.client()

    def ended():
        c = counts(client)
        return c if c and sum(c[s] for s in TERMINAL) >= len(ids) else None
    wait_until(ended, 600, 0.2, "every job to end")
    return client.details(ids), tally


def reason_kind(reason):
    """A failure's reason without the path it names (`...: No space left on device`)."""
    if not reason:
        return "(no reason)"
    return reason.split(": /", 1)[0]


def figures(jobs, seen):
    """The run's figures from the jobs' details and the ledger."""
    states = collections.Counter(j["state"] for j in jobs)
    failed = collections.Counter(reason_kind(j["reason"]) for j in jobs
                                 if j["state"] == "failed")
    return {"jobs": len(jobs), "done": states["done"], "failed": states["failed"],
            "unknown outcome": failed.pop(UNKNOWN_OUTCOME, 0),
            "lost": states["lost"], "cancelled": states["cancelled"],
            "requeued attempts": sum(1 for j in jobs for a in j["attempts"]
                                     if a["outcome"] == "pending"),
            "job runs (ledger lines)": sum(seen.values()),
            "ran twice": sum(1 for j in jobs if seen[j["id"]] > 1),
            "done but not in ledger": sum(1 for j in jobs if j["state"] == "done"
                                          and not seen[j["id"]]),
            "other failures": failed}


def one_run(args, seed):
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="hqchaos")
    ledger = os.path.join(tmp, "ledger")
    open(ledger, "w").close()
    try:
        with installation(args, tmp) as (cluster, outages):
            cluster.setup_database()
            cluster.start_server()
            jobs, tally = soak(cluster, outages, args, rng, ledger)
            result = figures(jobs, ledger_counts(ledger))
            if os.environ.get("HQ_CHAOS_SHOW"):
                show_twice(jobs, ledger_counts(ledger))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result, tally


def show_twice(jobs, seen):
    for job in jobs:
        if seen[job["id"]] > 1:
            for e in job["events"]:
                print("  ", job["id"], e["time"], e["state"], e["attempt"], e["host"],
                      e["detail"])


def report(args, totals, tally, failures, seconds):
    rows = [("seed", args.seed), ("backend", args.backend),
            ("faults", ", ".join(["kill", *args.faults])),
            ("heartbeat, grace", f"0.5 s, {args.grace:g} s"), ("runs", args.runs),
            *[(f"faults: {name}", n) for name, n in sorted(tally.items())],
            *totals.items(),
            ("other failures", "; ".join(f"{n} {why}" for why, n in failures.most_common(5))
             or "none"),
            ("seconds", round(seconds, 1))]
    for name, value in rows:
        print(f"{name:<30} {value}")


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--sleep", type=float, default=0.09, help="longest job (seconds)")
    parser.add_argument("--faults", default="", type=lambda s: [k for k in s.split(",") if k],
                        help="kinds added to the kills: disk, db (comma-separated)")
    parser.add_argument("--outages", type=int, default=2, help="strikes of each --faults kind")
    parser.add_argument("--runs", type=int, default=1, help="runs, seeds S, S+1, ...")
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--grace", type=float, default=10.0,
                        help="requeue_grace_s of the server (the shipped default: 10)")
    parser.add_argument("--net", action="store_true",
                        help="netcluster hosts, a standby server, MySQL (root only)")
    parser.add_argument("--events", type=int, default=6, help="--net: faults a run")
    parser.add_argument("--hosts", type=int, default=3, help="--net: agent hosts")
    args = parser.parse_args(argv)
    unknown = set(args.faults) - {"disk", "db", "kill"}
    if unknown:
        parser.error(f"unknown --faults kind: {', '.join(sorted(unknown))} (disk, db)")
    args.faults = [k for k in ("disk", "db") if k in args.faults]
    return args


def main(argv=None):
    args = parse(argv)
    if args.net:
        if os.geteuid() != 0:
            print("chaos --net: needs root (network namespaces)", file=sys.stderr)
            return 2
        from tools import chaos_net
        return chaos_net.main(args)
    started = time.monotonic()
    totals, tally, failures = collections.Counter(), collections.Counter(), collections.Counter()
    for run in range(args.runs):
        result, run_tally = one_run(args, args.seed + run)
        failures.update(result.pop("other failures"))
        totals.update(result)
        tally.update(run_tally)
        print(f"run {run + 1}/{args.runs} (seed {args.seed + run}): "
              + ", ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    report(args, totals, tally, failures, time.monotonic() - started)
    return 1 if totals["ran twice"] or totals["done but not in ledger"] else 0


if __name__ == "__main__":
    sys.exit(main())
