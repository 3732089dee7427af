"""Prometheus endpoint of hq-server (`hq-server --metrics-port N`, off by default): jobs and
hosts by state, queue wait, dispatch rate, per-host load and free slots."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hq.model import DISPATCHED, LIVE, TERMINAL


class Exporter:
    def __init__(self, port, address="127.0.0.1"):
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("hq_jobs", "Live jobs by state", ["state"], registry=r)
        self.ended = Counter("hq_jobs_ended_total", "Jobs that reached a terminal state since "
                             "the server started", ["state"], registry=r)
        self.hosts = Gauge("hq_hosts", "Hosts by status (up/down/unknown)", ["status"],
                           registry=r)
        self.hosts_active = Gauge("hq_hosts_active", "Hosts that take new jobs", registry=r)
        self.dispatched = Counter("hq_dispatched_total", "Job attempts dispatched", registry=r)
        self.queue_wait = Histogram(
            "hq_queue_wait_seconds", "Time from submission to dispatch", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 86400))
        self.load = Gauge("hq_host_load1", "1-minute load average", ["host"], registry=r)
        self.free = Gauge("hq_host_free_slots", "Slots free for new jobs", ["host"], registry=r)
        self.used = Gauge("hq_host_used_slots", "Slots held by hq jobs", ["host"], registry=r)
        self.server, self.thread = start_http_server(port, addr=address, registry=r)

    def on_transition(self, job, old, new, now):
        """Listener of ClusterState: counts dispatches, queue wait and ended jobs."""
        if new == DISPATCHED:
            self.dispatched.inc()
            self.queue_wait.observe(max(0.0, now - job.submitted))
        elif new in TERMINAL:
            self.ended.labels(new).inc()

    def refresh(self, state):
        """Copy the loop's picture into the gauges (called from the server loop's tick)."""
        by_state = dict.fromkeys(sorted(LIVE), 0)
        for job in state.jobs.values():
            by_state[job.state] = by_state.get(job.state, 0) + 1
        for name, count in by_state.items():
            self.jobs.labels(name).set(count)
        by_status = {"up": 0, "down": 0, "unknown": 0}
        active = 0
        for host in state.hosts.values():
            by_status[host.status] = by_status.get(host.status, 0) + 1
            active += host.state == "active"
            self.load.labels(host.name).set(host.load1)
            self.free.labels(host.name).set(host.free_slots if host.state == "active" else 0)
            self.used.labels(host.name).set(host.slots_used)
        for name, count in by_status.items():
            self.hosts.labels(name).set(count)
        self.hosts_active.set(active)

    def close(self):
        self.server.shutdown()

