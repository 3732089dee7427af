"""Does one user's huge listing slow another user down? `hq-submit true` of one user, timed from
the command to its return, alone and while another user pages through all of their N jobs.

Usage:
  bench_listing.py [--jobs=N] [--runs=N] [--backend=NAME]

Options:
  --jobs=N         Jobs of the listing user (held, so they stay) [default: 1000000].
  --runs=N         `hq-submit true` runs of the other user, each phase [default: 60].
  --backend=NAME   sqlite or mysql [default: sqlite].

Prints p50/p99/max of the other user's `hq-submit true` alone (the floor) and during the
listing, and how long the whole listing took (pages of at most 10,000 jobs).
"""

import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.cluster import Cluster, MysqlDatabase  # noqa: E402


def second_user(cluster, name):
    """An HQ_HOME with its own CURVE key, registered as user `name` by the admin."""
    home = os.path.join(cluster.root, name)
    env = dict(cluster.env, HQ_HOME=home)
    refused = cluster.run("hq-client", "status", env=env)
    assert refused.returncode != 0, "an unregistered key must be refused"
    key = os.path.join(home, "keys", "user.key")
    cluster.run("hq-admin", "adduser", name, f"--key={key}", check=True)
    cluster.run("hq-client", "status", env=env, check=True)
    return env


def timed_submits(cluster, env, runs):
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        cluster.run("hq-submit", "--hold", "true", env=env, check=True)
        walls.append((time.perf_counter() - start) * 1000)
    return walls


def summary(walls):
    ordered = sorted(walls)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):7.1f} ms  p99 {p99:7.1f} ms  max {ordered[-1]:7.1f} ms"


def fill(cluster, jobs):
    start = time.perf_counter()
    lines = "true\n" * jobs
    cluster.run("hq-submit", "--hold", "-q", "-", input=lines, timeout=3600, check=True)
    return time.perf_counter() - start


def keep_listing(cluster, stop, passes):
    """The listing user pages through all their jobs (LIST, at most 10,000 a reply) again and
    again until `stop` is set; `passes` gets (seconds, jobs) of each whole pass."""
    from hq import protocol as p
    client = cluster.client()
    while not stop.is_set():
        start, count = time.perf_counter(), 0
        for _ in client.pages(p.LIST, states=[], limit=0):
            count += 1
        passes.append((time.perf_counter() - start, count))


def main(argv=None):
    from docopt import docopt
    args = docopt(__doc__, argv=argv)
    jobs, runs = int(args["--jobs"]), int(args["--runs"])
    database = MysqlDatabase() if args["--backend"] == "mysql" else None
    url = database.url if database else None
    cluster = Cluster(url or "sqlite:///PLACEHOLDER")
    if not database:
        cluster.db_url = f"sqlite:///{cluster.root}/hq.sqlite"
        cluster.env["HQ_DB_URL"] = cluster.db_url
    try:
        with cluster.running():
            bob = second_user(cluster, "bob")
            print(f"{jobs:,} held jobs of the listing user accepted in {fill(cluster, jobs):.1f} s")
            print(f"alone:            {summary(timed_submits(cluster, bob, runs))}")
            stop, passes = threading.Event(), []
            lister = threading.Thread(target=keep_listing, args=(cluster, stop, passes))
            lister.start()
            during = timed_submits(cluster, bob, runs)
            stop.set()
            lister.join()
            print(f"during listings: {summary(during)}")
            for seconds, count in passes:
                print(f"a whole listing: {count:,} jobs in {seconds:.1f} s")
    finally:
        if database:
            database.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
