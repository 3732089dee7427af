"""The Prometheus endpoint of hq-server shows jobs, hosts, dispatches and per-host slots."""

import urllib.request

import pytest

from tests.helpers import free_port, wait_until


@pytest.fixture
def metrics_port(cluster):
    cluster.stop_server()
    port = free_port()
    cluster.start_server(f"--metrics-port={port}")
    return port


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_endpoint(cluster, metrics_port):
    client = cluster.client()
    ids = client.submit_many(["true", "true", "exit 1"])
    client.wait(ids, timeout=30)
    metrics = wait_until(lambda: (lambda m: m if m.get('hq_hosts{status="up"}') == 1 and
                                  m.get('hq_jobs_ended_total{state="done"}') == 2 else None)(
        scrape(metrics_port)), 15, 0.2, "the metrics to show the finished jobs")
    assert metrics["hq_dispatched_total"] == 3
    assert metrics['hq_jobs_ended_total{state="failed"}'] == 1
    assert metrics["hq_queue_wait_seconds_count"] == 3
    assert metrics['hq_host_free_slots{host="localhost"}'] == 2
    assert metrics['hq_jobs{state="pending"}'] == 0
