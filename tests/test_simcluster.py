"""tools/simcluster.py against a real hq-server on both backends, checked in the database it
leaves behind (--keep): 50 simulated hosts x 2 users, every job done exactly once; a host that
stops heartbeating goes down and its jobs run again elsewhere; an agent whose connection is cut
reconnects and keeps the jobs it runs."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from hq.config import parse_db_url
from hq.store import open_store
from tests.helpers import REPO

SIM = os.path.join(REPO, "tools", "simcluster.py")
pytestmark = pytest.mark.slow


def simulate(db_url, *args, heartbeat_s=0.5):
    """Run the simulator on `db_url` (kept); its figures and an open store on the database."""
    result = subprocess.run([sys.executable, SIM, "--hosts=50", "--slots=4", "--users=2",
                             f"--db={db_url}", "--keep", "--json", f"--heartbeat={heartbeat_s}",
                             "--status-every=0.5", *args],
                            capture_output=True, text=True, timeout=100, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    kept = result.stdout.split("kept ", 1)[1].split(" and ", 1)[0]
    shutil.rmtree(kept, ignore_errors=True)
    return figures, open_store(parse_db_url(db_url))


def done_events(store):
    """job id -> how many `done` events it has, for every job that is not a cancelled one."""
    rows = store.query("SELECT j.id AS id, COUNT(e.id) AS n FROM jobs j LEFT JOIN job_events e "
                       "ON e.job_id = j.id AND e.state = 'done' WHERE j.state <> 'cancelled' "
                       "GROUP BY j.id")
    return {r["id"]: r["n"] for r in rows}


def test_every_job_of_a_simulated_cluster_is_done_exactly_once(db_url):
    """Catches a job lost or done twice under the load of 100 agent connections and two users
    streaming 2,000 jobs (with single submissions, cancels and queries), a held job that ran,
    an agent connection dropped, or a host marked down while it heartbeats."""
    figures, store = simulate(db_url, "--jobs=2000")
    try:
        counts = done_events(store)
        assert len(counts) == 2000 and set(counts.values()) == {1}
        assert store.count_states()["done"] == 2000
        assert store.count_states()["cancelled"] == 20 == figures["cancelled"]
    finally:
        store.close()
    assert figures["agents"] == figures["agents_expected"] == 100
    assert figures["false_down"] == 0 and figures["false_gone"] == 0
    assert figures["run_twice_sim"] == 0 and figures["status_count"] > 0


@pytest.fixture
def faults(db_url):
    """A run in which 2 hosts die and the agents of 2 other hosts lose their connection for
    1.5 s (5 heartbeats: the server forgets them after 3) and then register again."""
    figures, store = simulate(db_url, "--jobs=400", "--duration=1-2", "--grace=2",
                              "--silence=2", "--pause=2", "--pause-s=1.5", "--fault-at=1",
                              "--cancels=0", "--query-every=0", heartbeat_s=0.3)
    yield figures, store
    store.close()


def test_silent_host_goes_down_its_jobs_run_elsewhere_and_a_cut_agent_keeps_its_jobs(faults):
    """Catches a silent host that is not marked down or whose jobs are never requeued (or are
    requeued more than once), and an agent that reconnects within the grace whose running
    jobs are requeued instead of kept (or kept but run twice)."""
    figures, store = faults
    silenced, paused = figures["silenced"], figures["paused"]
    hosts = {row["name"]: row["status"] for row in store.load_hosts()}
    assert [hosts[h] for h in silenced] == ["down", "down"]
    assert [hosts[h] for h in paused] == ["up", "up"]
    counts = done_events(store)
    assert len(counts) == 400 and set(counts.values()) == {1}
    assert figures["silenced_held"] > 0
    assert figures["silenced_moved"] == figures["silenced_done"] == figures["silenced_held"]
    assert figures["paused_held"] > 0
    assert figures["paused_kept"] == figures["paused_done"] == figures["paused_held"]
    assert figures["paused_requeued"] == 0 and figures["false_down"] == 0
