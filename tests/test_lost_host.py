"""A host that dies (agent and jobs killed, as in a crash) is noticed after 3 silent heartbeats;
its agent is restarted at once and, as it knows none of the jobs, they are requeued while
retries last, else end lost; details shows every attempt."""

import json
import os
import signal

import pytest

from tests.helpers import Cluster, kill_pid, read_pid, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def two_hosts(db_url):
    c = Cluster(db_url, hosts=[("alpha", "2", "-", "127.0.0.1"), ("beta", "1", "-", "localhost")])
    with c.running():
        yield c


def crash_host(cluster, name):
    """Kill the host's agent and every job it started, as a power cut would: the agent first,
    so that it cannot report the jobs' deaths."""
    pid = read_pid(os.path.join(cluster.home, "run", f"agent-{name}.pid"))
    children = [int(c) for c in os.popen(f"pgrep -P {pid}").read().split()]
    kill_pid(pid, signal.SIGKILL)
    for child in children:
        os.killpg(child, signal.SIGKILL)


def details(cluster, job_id):
    return json.loads(cluster.run("hq-client", "details", "--json", str(job_id),
                                  check=True).stdout)[0]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_crashed_host_jobs_are_requeued_then_lost(two_hosts, tmp_path):
    cluster = two_hosts
    client = cluster.client()
    retry = client.submit("sleep 3; echo ran > " + str(tmp_path / "retry"), host_req="alpha")
    once = client.submit("sleep 30", host_req="alpha", retries=0)
    other = client.submit("sleep 0.2", host_req="beta")
    wait_until(lambda: {j["state"] for j in client.details([retry, once], events=False)}
               == {"running"}, 20, message="both jobs to run on alpha")
    crash_host(cluster, "alpha")
    lost = wait_until(lambda: (lambda j: j if j["state"] == "lost" else None)(
        client.details([once], events=False)[0]), 20, 0.1, "the job without retries to be lost")
    assert lost["reason"].startswith("lost: ") and "alpha" in lost["reason"]
    done = wait_until(lambda: (lambda j: j if j["state"] == "done" else None)(
        details(cluster, retry)), 40, 0.1, "the requeued job to run again and finish")
    assert [a["outcome"] for a in done["attempts"]] == ["pending", "done"]
    assert done["attempts"][0]["why"].startswith("requeued: ")
    assert "alpha" in done["attempts"][0]["why"]
    assert (tmp_path / "retry").read_text() == "ran\n"
    assert client.details([other], events=False)[0]["state"] == "done"
    hosts = json.loads(cluster.run("hq-admin", "lscluster", "--json", check=True).stdout)
    assert {h["name"] for h in hosts["hosts"]} == {"alpha", "beta"}


def test_unwritable_output_fails_the_job_and_the_agent_survives(cluster):
    client = cluster.client()
    bad = client.submit("echo hi", stdout="/etc/hostname/cannot/out")
    job = client.wait([bad], timeout=20)[0]
    assert job["state"] == "failed" and "cannot start" in job["reason"]
    assert "Not a directory" in job["reason"]
    good = client.submit("true")
    assert client.wait([good], timeout=20)[0]["state"] == "done"
