"""Nothing lost: real kill -9 of hq-server and of the user-server in the middle of a run of
short jobs that each append their id to a ledger; afterwards every job ran exactly once."""

import collections
import signal

import pytest

from hq.errors import HQError
from tests.helpers import kill_pid, pid_alive, wait_until

pytestmark = pytest.mark.slow


def counts(client):
    try:
        return client.status()
    except HQError:
        return None          # the server is restarting: ask again


def ledger_ids(path):
    return collections.Counter(int(x) for x in path.read_text().split())


def wait_all_done(client, ids, timeout=90):
    def finished():
        c = counts(client)
        return c is not None and c["done"] + c["failed"] + c["lost"] >= len(ids) and c
    final = wait_until(finished, timeout, 0.2, "every job to end")
    assert final["done"] == len(ids), final
    return final


def test_server_killed_and_restarted_loses_nothing_and_runs_nothing_twice(cluster, tmp_path):
    ledger = tmp_path / "ledger"
    ledger.touch()
    client = cluster.client()
    ids = client.submit_many([f"sleep 0.02; echo $HQ_JOB_ID >> {ledger}"] * 300)
    wait_until(lambda: (counts(client) or {}).get("done", 0) >= 40, 60, 0.05,
               "some jobs to finish")
    cluster.server.send_signal(signal.SIGKILL)
    cluster.server.wait(10)
    cluster.server = None
    cluster.start_server()
    wait_all_done(client, ids)
    seen = ledger_ids(ledger)
    assert sorted(seen) == sorted(ids)
    assert max(seen.values()) == 1, [i for i, n in seen.items() if n > 1]
    jobs = client.details(ids, events=False)
    assert {j["state"] for j in jobs} == {"done"}


def test_user_server_killed_the_next_command_starts_a_new_one(cluster, tmp_path):
    ledger = tmp_path / "ledger"
    ledger.touch()
    client = cluster.client()
    first = client.submit_many([f"echo $HQ_JOB_ID >> {ledger}"] * 50)
    old = cluster.user_server_pid()
    kill_pid(old, signal.SIGKILL)
    assert not pid_alive(old)
    client.close()
    client = cluster.client()
    second = client.submit_many([f"echo $HQ_JOB_ID >> {ledger}"] * 50)
    assert cluster.user_server_pid() not in (None, old)
    wait_all_done(client, first + second)
    seen = ledger_ids(ledger)
    assert sorted(seen) == sorted(first + second) and max(seen.values()) == 1
