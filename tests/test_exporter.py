"""The Prometheus endpoint of hq-server shows jobs, hosts, dispatches and per-host slots."""

import urllib.request

import pytest

from tests.helpers import Cluster, free_port, wait_until


SLOTS = 3     # the host's slots, set in cluster.tab: not this machine's core count


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite",
                hosts=(("localhost", str(SLOTS), "local", "127.0.0.1"),))
    try:
        c.setup_database()
        c.port_metrics = free_port()
        c.start_server(f"--metrics-port={c.port_metrics}")
        yield c
    finally:
        c.close()


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in lines if line and not line.startswith("#")}


def test_metrics_endpoint(cluster):
    """Catches metrics that miss dispatches, ends or the host's slots (issue 14: the free
    slots are the slots of cluster.tab, 3, so the test passes on any machine; before, it
    expected this machine's 2 cores)."""
    metrics_port = cluster.port_metrics
    client = cluster.client()
    ids = client.submit_many(["true", "true", "exit 1"])
    client.wait(ids, timeout=30)
    metrics = wait_until(lambda: (lambda m: m if m.get('hq_hosts{status="up"}') == 1 and
                                  m.get('hq_jobs_ended_total{state="done"}') == 2 else None)(
        scrape(metrics_port)), 15, 0.2, "the metrics to show the finished jobs")
    assert metrics["hq_dispatched_total"] == 3
    assert metrics['hq_jobs_ended_total{state="failed"}'] == 1
    assert metrics["hq_queue_wait_seconds_count"] == 3
    assert metrics['hq_host_free_slots{host="localhost"}'] == SLOTS
    assert metrics['hq_host_used_slots{host="localhost"}'] == 0
    assert metrics['hq_jobs{state="pending"}'] == 0
