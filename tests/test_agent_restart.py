"""An agent killed (-9) while its jobs run: the jobs go on, a new agent adopts them, their exit
status is recovered from the wrapper's file, and no job runs twice."""

import collections
import os
import signal

import pytest

from agents.jobfiles import read_journal
from tests.helpers import kill_pid, read_pid, wait_until

pytestmark = pytest.mark.slow


def test_killed_agent_is_replaced_and_adopts_its_jobs(cluster, tmp_path):
    ledger = tmp_path / "ledger"
    ledger.touch()
    client = cluster.client()
    short, long_ = client.submit_many([f"sleep 1; echo $HQ_JOB_ID >> {ledger}; exit 3",
                                       f"sleep 6; echo $HQ_JOB_ID >> {ledger}"])
    wait_until(lambda: {j["state"] for j in client.details([short, long_], events=False)}
               == {"running"}, 20, message="both jobs to run")
    pidfile = os.path.join(cluster.home, "run", "agent-localhost.pid")
    old = read_pid(pidfile)
    kill_pid(old, signal.SIGKILL)
    jobs = wait_until(lambda: (lambda js: js if all(j["state"] in ("done", "failed", "lost")
                                                    for j in js) else None)(
        client.details([short, long_])), 40, 0.2, "both jobs to end")
    assert [(j["state"], j["exit_code"]) for j in jobs] == [("failed", 3), ("done", 0)]
    assert [len(j["attempts"]) for j in jobs] == [1, 1]        # adopted, not requeued
    seen = collections.Counter(int(x) for x in ledger.read_text().split())
    assert seen == {short: 1, long_: 1}
    new = read_pid(pidfile)
    assert new and new != old
    with open(os.path.join(cluster.home, "log", "agent-localhost.log")) as log:
        text = log.read()
    assert f"job {long_} attempt 1 adopted" in text
    journal = os.path.join(cluster.home, "run", "jobs-localhost", "journal")
    wait_until(lambda: not read_journal(journal), 10, message="the journal to show no live job")
