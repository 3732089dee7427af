"""Three hosts of their own on this machine (tools/netcluster.py: a network namespace, address,
host name and sshd each), hq's shipped timing: agents started over ssh serve every host, jobs
spread by slots and see their host's name, a crashed host's jobs are requeued and done elsewhere."""

import collections
import time

import pytest

from tests.helpers import wait_until
from tests.netbox import NetBox, skip_unless_possible

pytestmark = pytest.mark.slow
SHIPPED = (("server", "heartbeat_s", "2"), ("server", "requeue_grace_s", "10"))


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    skip_unless_possible()
    box = NetBox(tmp_path_factory.mktemp("netbox"), settings=SHIPPED)
    try:
        with box.cluster.running():
            box.all_up()
            yield box
    finally:
        box.close()


def submit(box, commands, *options):
    """Submit one job per command (one batch); their ids."""
    out = box.hq("hq-submit", *options, "-", input="".join(c + "\n" for c in commands),
                 check=True).stdout
    return [int(word) for word in out.split()]


def test_hosts_have_their_own_address_and_jobs_spread_by_slots(box, tmp_path):
    """Catches agents that all land on one host (ssh to the wrong address, a host name that
    is the machine's), a server that only listens on loopback, and slots that are ignored:
    6 jobs on 3 hosts of 2 slots run at once, 2 per host, each printing its host's name."""
    hosts = box.hosts()
    assert {n: h["address"] for n, h in hosts.items()} == {
        h["name"]: h["address"] for h in box.state["hosts"]}
    assert all(h["status"] == "up" for h in hosts.values())
    out = tmp_path / "out"
    out.mkdir()
    ids = submit(box, [f'sleep 4; echo "$(hostname) $HQ_HOST" > {out}/{i}' for i in range(6)])
    box.hq("hq-client", "wait", *map(str, ids), timeout=90, check=True)
    jobs = box.jobs(ids)
    assert collections.Counter(j["host"] for j in jobs.values()) == {
        "node1": 2, "node2": 2, "node3": 2}
    assert max(j["started"] for j in jobs.values()) < min(j["finished"] for j in jobs.values())
    for i in range(6):
        name, host = (out / str(i)).read_text().split()
        assert name == host


def test_crashed_host_is_down_and_its_jobs_are_done_on_another(box, tmp_path):
    """Catches a crashed host whose jobs stay running for ever or are lost (every process of
    node3 killed at once, its link cut first so not even a TCP reset leaves): node3 goes down,
    its jobs are requeued and done on the other hosts, each job exactly once in the ledger."""
    ledger = tmp_path / "ledger"
    ledger.touch()
    ids = submit(box, [f'sleep 8; echo "$HQ_JOB_ID $(hostname)" >> {ledger}'] * 6)
    jobs = wait_until(lambda: (lambda j: j if all(x["state"] == "running" for x in j.values())
                               else None)(box.jobs(ids)), 60, 0.5, "6 jobs running")
    on3 = sorted(i for i, j in jobs.items() if j["host"] == "node3")
    assert len(on3) == 2
    crashed = time.monotonic()
    try:
        box.tool("crash", "node3")
        wait_until(lambda: box.hosts()["node3"]["status"] == "down", 30, 0.2, "node3 down")
        noticed = time.monotonic() - crashed
        wait_until(lambda: all(box.jobs(on3)[i]["attempt"] == 2 for i in on3), 40, 0.2,
                   "node3's jobs requeued")
        requeued = time.monotonic() - crashed
        box.hq("hq-client", "wait", *map(str, ids), timeout=90, check=True)
        done = time.monotonic() - crashed
    finally:
        box.tool("boot", "node3")
    print(f"\nnode3 crashed: down after {noticed:.1f}s, its jobs requeued after {requeued:.1f}s,"
          f" all done after {done:.1f}s")
    runs = collections.Counter(int(line.split()[0]) for line in ledger.read_text().splitlines())
    assert runs == {i: 1 for i in ids}
    hosts = {int(line.split()[0]): line.split()[1] for line in ledger.read_text().splitlines()}
    assert all(hosts[i] in ("node1", "node2") for i in on3)
    assert 5 < noticed < 10 and 15 < requeued < 25, (noticed, requeued)
    box.all_up(timeout=120)
