"""Promises of the README checked end to end on a real cluster (issue 14): job options and the
job's environment, `--mem` placement, the pruning of old host metrics. SQLite only (nothing
here depends on the backend)."""

import json
import os
import sqlite3
import sys
import time

import pytest

from tests.helpers import Cluster, wait_until

TERMINAL = {"done", "failed", "cancelled", "lost"}


@pytest.fixture
def one_host(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite", hosts=(("solo", "4", "-", "127.0.0.1"),))
    with c.running():
        yield c


def details(cluster, *ids):
    return json.loads(cluster.run("hq-client", "details", "--json", *map(str, ids),
                                  check=True).stdout)


def ended(cluster, ids, timeout=30):
    return wait_until(lambda: (lambda js: js if all(j["state"] in TERMINAL for j in js)
                               else None)(details(cluster, *ids)), timeout, 0.1,
                      f"jobs {ids} to end")


def test_options_and_environment_reach_the_job(one_host, tmp_path):
    """Catches -e/-O (stderr), -S (shell), -n, -r not reaching the job, HQ_JOB_NAME and
    HQ_ATTEMPT missing from its environment, and max_rss not recorded. The job runs bash
    (`$BASH_VERSION` is set only there), writes to stdout and stderr, and holds 64 MiB.
    Checked by dropping HQ_ATTEMPT from agents/jobstart.py's environment, and with -O
    ignored in hq/client/cli/submit.py: the matching assertion fails."""
    c = one_host
    out, err, err_o = (str(tmp_path / name) for name in ("job.out", "job.err", "o.err"))
    hold = f"{sys.executable} -c 'b = b\"x\" * (64 << 20)'"
    command = (f'echo "$HQ_JOB_NAME $HQ_ATTEMPT ${{BASH_VERSION:+bash}}"; echo oops >&2; '
               f"{hold}")
    first = c.run("hq-submit", "-n", "named", "-o", out, "-e", err, "-S", "/bin/bash",
                  "-r", "3", command, check=True)
    second = c.run("hq-submit", "-o", os.devnull, "-O", err_o, "echo other >&2", check=True)
    one, two = int(first.stdout), int(second.stdout)
    a, b = ended(c, [one, two])
    assert (a["state"], b["state"]) == ("done", "done")
    with open(out) as handle:
        assert handle.read() == "named 1 bash\n"
    with open(err) as handle:
        assert handle.read() == "oops\n"
    with open(err_o) as handle:
        assert handle.read() == "other\n"
    assert (a["name"], a["retries"], a["shell"]) == ("named", 3, "/bin/bash")
    assert a["max_rss"] >= 64 << 20, a["max_rss"]


def test_mem_keeps_jobs_that_do_not_fit_together_apart(one_host, tmp_path):
    """`--mem`: catches jobs placed on a host whose memory they would share beyond its total
    (what hq jobs there asked for is taken off). Two jobs that each ask for more than half
    of the host's memory run one after the other, the second waiting with reason
    `resources`, while the host has 4 slots. Checked with mem_reserved ignored in
    scheduler.memory_free: both run at once."""
    c = one_host
    assert c.run("hq-submit", "--wait", "true").returncode == 0       # memory now known
    host, = json.loads(c.run("hq-admin", "lscluster", "--json", check=True).stdout)["hosts"]
    want = host["memory_total"] // 2 + (64 << 20)
    if host["mem_available"] < want:
        pytest.skip(f"this machine has {host['mem_available'] >> 20} MB available, the test "
                    f"asks for {want >> 20} MB")
    go = tmp_path / "go"
    gate = f"while [ ! -e {go} ]; do sleep 0.05; done"
    first, second = (int(c.run("hq-submit", "--mem", f"{want >> 20}M", gate,
                               check=True).stdout) for _ in range(2))
    wait_until(lambda: details(c, first)[0]["state"] == "running", 20, 0.1,
               "the first job to run")
    waiting, = details(c, second)
    assert waiting["state"] == "pending" and waiting["reason"].startswith("resources"), waiting
    go.touch()
    a, b = ended(c, [first, second])
    assert (a["state"], b["state"]) == ("done", "done")
    assert a["finished"] <= b["started"], "both ran at once"


def test_old_host_metrics_are_pruned(tmp_path):
    """Catches host_metrics growing without end: rows older than metrics_retention_s are
    deleted (the first tick after a start, then once a minute), newer ones kept, and new
    samples recorded. Checked with the prune left out of the loop's tick: the old row
    stays."""
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite")
    try:
        c.setup_database()
        c.set_config("server", "metrics_retention_s", "3600")
        c.set_config("server", "metrics_interval_s", "0.5")
        now = time.time()
        db = sqlite3.connect(f"{tmp_path}/hq.sqlite")
        with db:
            db.executemany("INSERT INTO host_metrics (host, time, load1) VALUES (?, ?, ?)",
                           [("localhost", now - 7200, 1.0), ("localhost", now - 600, 2.0)])
        c.start_server()
        assert c.run("hq-submit", "--wait", "true").returncode == 0     # an agent samples

        def times():
            return [t for (t,) in db.execute("SELECT time FROM host_metrics ORDER BY time")]
        kept = wait_until(lambda: (lambda ts: ts if ts[0] > now - 3600 and ts[-1] > now
                                   else None)(times()), 20, 0.1, "the old row to go")
        assert kept[0] == now - 600
        db.close()
    finally:
        c.close()
