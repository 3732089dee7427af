"""Time `hq-dbadmin --upgrade` from schema 3 on a database of N jobs (two events each, a batch
per 1,000 jobs); print rows per table before and after, and seconds per million jobs.

Usage: .venv/bin/python tools/bench_upgrade.py [--jobs N] [--backend sqlite|mysql]
           [--mysql-url mysql://root@127.0.0.1:3306] [--backup]

The schema-3 tables are the current ones without what step 4 adds (hq/store/migrations.py),
which is the shape hq's own v3 made (tests/test_upgrade.py checks that on real v3 databases).
Rows are made in SQL (INSERT ... SELECT over a digits table), 100,000 jobs a statement.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from hq.config import parse_db_url  # noqa: E402
from hq.store import introspect, open_store  # noqa: E402
from hq.store.migrations import STEPS, Column, Setting  # noqa: E402
from hq.store.schema import TABLE_NAMES  # noqa: E402

CHUNK = 100_000
DIGITS = "(SELECT 0 AS d UNION ALL " + " UNION ALL ".join(f"SELECT {i}" for i in range(1, 10)) + ")"


def numbers(first, count):
    """SQL yielding n = first .. first+count-1 (count a power of ten up to CHUNK, or less)."""
    places = max(1, len(str(CHUNK)) - 1)
    terms = " + ".join(f"d{i}.d * {10 ** i}" for i in range(places))
    joins = ", ".join(f"{DIGITS} d{i}" for i in range(places))
    return (f"(SELECT {first} + {terms} AS n FROM {joins}) seq "
            f"WHERE n < {first + count}")


def job_columns(dialect):
    cat = (lambda a, b: f"{a} || {b}") if dialect == "sqlite" else (
        lambda a, b: f"CONCAT({a}, {b})")
    div = "/" if dialect == "sqlite" else "DIV"
    t0 = 1.7e9
    return {
        "id": "n", "batch": f"(n - 1) {div} 1000 + 1", "user": "'bench'", "name": "'job'",
        "command": cat("'./simulate --case '", "n"),
        "state": "CASE WHEN n % 50 = 0 THEN 'pending' WHEN n % 97 = 0 THEN 'failed' "
                 "ELSE 'done' END",
        "cores": "1", "memory": "0", "priority": "0", "host_req": "''", "group_req": "''",
        "exclude_hosts": "''", "stdout": cat("'/home/bench/out/'", "n"),
        "stderr": cat("'/home/bench/err/'", "n"), "logfile": "''", "info_text": "''",
        "shell": "'/bin/sh'", "time_limit": "0", "retries": "1", "cwd": "'/home/bench'",
        "submitted": f"{t0} + n", "attempt": "1", "host": "'n1'", "started": f"{t0} + n + 1",
        "finished": f"{t0} + n + 2", "exit_code": "n % 97", "term_signal": "NULL",
        "max_rss": "1000 + n % 1000", "reason": "''", "depends_on": "''", "reservation": "''",
        "entry": "''"}


def make_version_3(store):
    store.drop_tables()
    store.create_tables()
    with store.transaction() as cur:
        for op in STEPS[4]:
            if isinstance(op, Column):
                cur.execute(f"ALTER TABLE {op.table} DROP COLUMN {op.definition.split()[0]}")
            elif isinstance(op, Setting):
                cur.execute(store.sql("DELETE FROM settings WHERE name = ?"), (op.name,))
        cur.execute("UPDATE schema_version SET version = 3")


def fill(store, jobs):
    if store.dialect == "sqlite":           # a bench database: no fsync while filling
        store.execute("PRAGMA synchronous=OFF")
        store.execute("PRAGMA cache_size=-262144")
    exprs = job_columns(store.dialect)
    with store.transaction() as cur:
        columns = list(introspect.columns(cur, store.dialect, "jobs"))
    missing = [c for c in columns if c not in exprs]
    if missing:
        sys.exit(f"bench_upgrade: no value for jobs.{missing[0]} (schema 3 changed?)")
    for first in range(1, jobs + 1, CHUNK):
        count = min(CHUNK, jobs + 1 - first)
        with store.transaction() as cur:
            cur.execute(f"INSERT INTO jobs ({', '.join(columns)}) SELECT "
                        f"{', '.join(exprs[c] for c in columns)} FROM {numbers(first, count)}")
            for state, shift in (("pending", 0), ("done", 2)):
                cur.execute("INSERT INTO job_events (job_id, time, state, attempt, host, detail) "
                            f"SELECT n, 1.7e9 + n + {shift}, '{state}', 1, 'n1', '' "
                            f"FROM {numbers(first, count)}")
        print(f"\r  {first + count - 1:,} jobs", end="", flush=True)
    print()
    with store.transaction() as cur:
        cur.execute("INSERT INTO batches (id, user, submitted, size, env) SELECT n, 'bench', "
                    f"1.7e9 + n, 1000, '{{}}' FROM {numbers(1, (jobs + 999) // 1000)}")
        cur.execute("INSERT INTO host_metrics (host, time, load1, load5, load15, cpu_percent, "
                    "mem_available, nprocs, foreign_load) SELECT 'n1', 1.7e9 + n, 1, 1, 1, 50, "
                    f"1000000, 100, 0 FROM {numbers(1, 10_000)}")
    store.add_users([("bench", ["USER"])])


def counts(store):
    out = {}
    for table in TABLE_NAMES:
        out[table] = store.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
    return out


def run_upgrade(url, workdir, backup=False):
    env = dict(os.environ, HQ_DB_URL=url, HQ_HOME=workdir)
    command = [os.path.join(REPO, "bin", "hq-dbadmin"), "--upgrade", "--yes"]
    if backup:
        command.append(f"--backup={workdir}/backup")
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"bench_upgrade: {result.stderr.strip()}")
    return elapsed, result.stdout.strip().splitlines()


def database(args, workdir):
    if args.backend == "sqlite":
        return f"sqlite:///{workdir}/hq.sqlite", lambda: None
    import pymysql
    base = parse_db_url(args.mysql_url.rstrip("/") + "/x")
    name = f"hq_bench_upgrade_{os.getpid()}"
    conn = pymysql.connect(host=base.host, port=base.port, user=base.user,
                           password=base.password, autocommit=True)
    conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")

    def drop():
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
    return args.mysql_url.rstrip("/") + "/" + name, drop


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=None,
                        help="default 1,000,000 on SQLite, 200,000 on MySQL")
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306")
    parser.add_argument("--backup", action="store_true", help="time --upgrade --backup=FILE")
    args = parser.parse_args()
    jobs = args.jobs or (1_000_000 if args.backend == "sqlite" else 200_000)
    with tempfile.TemporaryDirectory(prefix="hqbench") as workdir:
        url, drop = database(args, workdir)
        try:
            store = open_store(parse_db_url(url))
            make_version_3(store)
            started = time.perf_counter()
            fill(store, jobs)
            print(f"made schema 3 with {jobs:,} jobs in {time.perf_counter() - started:.1f} s")
            before = counts(store)
            elapsed, said = run_upgrade(url, workdir, args.backup)
            after = counts(store)
            floor, _ = run_upgrade(url, workdir)      # nothing to do: start and checks
            store.close()
        finally:
            drop()
    print(f"{'table':<15} {'before':>12} {'after':>12}")
    for table in TABLE_NAMES:
        print(f"{table:<15} {before[table]:>12,} {after[table]:>12,}")
    print("\n".join(f"  {line}" for line in said))
    net = max(elapsed - floor, 0.0)
    print(f"upgrade{' with backup' if args.backup else ''} ({args.backend}, {jobs:,} jobs): "
          f"{elapsed:.2f} s; hq-dbadmin --upgrade with nothing to do: {floor:.2f} s; "
          f"{net / jobs * 1e6:.2f} s per million jobs beyond that")


if __name__ == "__main__":
    main()
