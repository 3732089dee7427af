"""Handlers of agent messages in hq-server: REGISTER, HEARTBEAT, EVENTS.

Each takes (server, identity, body) and returns reply fields, or raises HQError.
"""

import logging

from hq import protocol as p
from hq.errors import BAD_REQUEST, UNKNOWN_HOST, UNKNOWN_USER, HQError
from hq.model import DISPATCHED, RUNNING, UP

log = logging.getLogger("hq.agents")

UNKNOWN_AGENT = "UNKNOWN_AGENT"   # heartbeat/events from an agent that must register again
METRIC_FIELDS = ("load1", "load5", "load15", "cpu_percent", "mem_available", "nprocs")


def register(server, identity, body):
    user = p.field(body, "user", str)
    host_name = p.field(body, "host", str)
    state = server.state
    host = state.hosts.get(host_name)
    if host is None:
        raise HQError(UNKNOWN_HOST, f"host {host_name!r} is not in cluster.tab")
    if user not in state.users or not state.users[user]["enabled"]:
        raise HQError(UNKNOWN_USER, f"user {user!r} is unknown or disabled")
    old = host.agents.get(user)
    if old is not None and old != identity:
        state.agents.pop(old, None)
    host.agents[user] = identity
    state.agents[identity] = (user, host_name)
    host.cores = p.field(body, "cores", int, host.cores)
    host.memory_total = p.field(body, "memory_total", int, host.memory_total)
    host.os = p.field(body, "os", str, host.os)
    _take_metrics(server, host, body)
    state.writes.update_host(host.name, cores=host.cores, memory_total=host.memory_total,
                             os=host.os, status=UP, status_reason="")
    log.info("agent of %s registered on host %s (%d cores)", user, host_name, host.cores)
    _reconcile(server, identity, user, host, body)
    return {"heartbeat_s": server.settings.heartbeat_s}


def _reconcile(server, identity, user, host, body):
    """Kill what the agent runs that is no longer wanted; accept the rest."""
    stale = []
    for entry in p.field(body, "running", list, []):
        job_id, attempt = _pair(entry)
        job = server.state.jobs.get(job_id)
        wanted = (job is not None and job.attempt == attempt and job.host == host.name
                  and job.state in (DISPATCHED, RUNNING))
        if not wanted:
            stale.append([job_id, attempt])
    if stale:
        server.send(identity, p.encode(p.KILL, {"jobs": stale}))


def _pair(entry):
    if (not isinstance(entry, list) or len(entry) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry)):
        raise HQError(BAD_REQUEST, "running entries must be [job id, attempt]")
    return entry[0], entry[1]


def _agent(server, identity):
    known = server.state.agents.get(identity)
    if known is None:
        raise HQError(UNKNOWN_AGENT, "agent not registered (server restarted?): register again")
    user, host_name = known
    return user, server.state.hosts[host_name]


def _take_metrics(server, host, body):
    for name in METRIC_FIELDS:
        value = body.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(host, name, value)
    now = server.now
    host.last_seen = now
    if host.status != UP:
        host.status = UP
    server.state.writes.update_host(host.name, last_seen=now, status=UP,
                                    **{n: getattr(host, n) for n in METRIC_FIELDS if n != "nprocs"})
    server.sample_metrics(host, body)


def heartbeat(server, identity, body):
    user, host = _agent(server, identity)
    _take_metrics(server, host, body)
    return {}


def events(server, identity, body):
    user, host = _agent(server, identity)
    host.last_seen = server.now
    for event in p.field(body, "events", list):
        if not isinstance(event, dict):
            raise HQError(BAD_REQUEST, "events must be objects")
        job_id = p.field(event, "job", int)
        attempt = p.field(event, "attempt", int)
        kind = p.field(event, "type", str)
        if kind == "started":
            server.state.job_started(job_id, attempt, p.field(event, "time", (int, float), server.now),
                                     event.get("pid"), server.now)
        elif kind == "finished":
            server.state.job_finished(job_id, attempt, event, server.now, user)
            started, ended = event.get("started"), event.get("time")
            if isinstance(started, (int, float)) and isinstance(ended, (int, float)):
                server.ahead.finished(host.name, ended - started)
        else:
            raise HQError(BAD_REQUEST, f"unknown event type {kind!r}")
    return {"seq": body.get("seq")}


AGENT_REQUESTS = {p.REGISTER: register, p.HEARTBEAT: heartbeat, p.EVENTS: events}
