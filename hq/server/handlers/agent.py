"""Handlers of agent messages in hq-server: REGISTER, HEARTBEAT, EVENTS.

Each takes (server, identity, body) and returns reply fields, or raises HQError.
"""

import logging

from hq import protocol as p
from hq.errors import BAD_REQUEST, UNKNOWN_HOST, UNKNOWN_USER, HQError
from hq.model import DISPATCHED, RUNNING, UNKNOWN, UP

log = logging.getLogger("hq.agents")

UNKNOWN_AGENT = "UNKNOWN_AGENT"   # heartbeat/events from an agent that must register again
INT32_LIMIT = 1 << 31
METRIC_FIELDS = ("load1", "load5", "load15", "cpu_percent", "mem_available", "nprocs",
                 "foreign_load")


def register(server, identity, body):
    user = server.requester(body)     # the agent's CURVE key says whose jobs it may run
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
    state.changed = True
    host.cores = p.field(body, "cores", int, host.cores, check=lambda v: 0 < v < INT32_LIMIT)
    host.memory_total = p.field(body, "memory_total", int, host.memory_total,
                                check=lambda v: v >= 0)
    host.os = p.field(body, "os", str, host.os or "")[:255]
    host.status_reason = ""
    _take_metrics(server, host, body, user)
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
    if server.authenticator is not None and user != server.peer_user:
        raise HQError(UNKNOWN_AGENT, "agent connection changed user: register again")
    return user, server.state.hosts[host_name]


def _take_metrics(server, host, body, user):
    for name in METRIC_FIELDS:
        value = body.get(name)
        if p.is_number(value) and 0 <= value < INT32_LIMIT ** 2:
            setattr(host, name, value)
    if "foreign_load" in body and host.foreign_load > 0:
        host.foreign_load = max(0.0, host.foreign_load - _others_slots(server, host, user))
    now = server.now
    host.last_seen = now
    if host.status != UP:
        host.status, host.down_since = UP, None
        server.state.changed = True
    server.state.writes.update_host(host.name, last_seen=now, status=UP,
                                    **{n: getattr(host, n) for n in METRIC_FIELDS if n != "nprocs"})
    server.sample_metrics(host, body)


def _others_slots(server, host, user):
    """Slots of other users' hq jobs on the host: the agent of `user` may not read their
    processes' environment, so it counted them as outside load."""
    state = server.state
    return sum(state.attempts[key][1] for key in state.on_host.get(host.name, ())
               if state.attempts[key][2] != user)


def heartbeat(server, identity, body):
    user, host = _agent(server, identity)
    _take_metrics(server, host, body, user)
    known = {_pair(e) for key in ("running", "reported") for e in p.field(body, key, list, [])}
    server.state.reconcile(host, user, known, server.now, 2 * server.settings.heartbeat_s + 1)
    return {}


def events(server, identity, body):
    user, host = _agent(server, identity)
    host.last_seen = server.now
    reports = [_report(event) for event in p.field(body, "events", list)]
    for report in reports:
        job_id, attempt = report["job"], report["attempt"]
        if not _ours(server, user, host, job_id, attempt):
            log.warning("agent of %s on %s reported job %s attempt %s that is not its own: "
                        "ignored", user, host.name, job_id, attempt)
        elif report["type"] == "started":
            when = report.get("time") or server.now
            if not server.state.job_started(job_id, attempt, when, report.get("pid"),
                                            server.now):
                server.send(identity, p.encode(p.KILL, {"jobs": [[job_id, attempt]]}))
        else:
            server.state.job_finished(job_id, attempt, report, server.now)
            if "started" in report and "time" in report:
                server.ahead.finished(host.name, report["time"] - report["started"])
    return {"seq": body.get("seq")}


REPORT_FIELDS = {"time": p.is_number, "started": p.is_number, "pid": p.is_int,
                 "exit_code": p.is_int, "signal": p.is_int, "max_rss": p.is_int,
                 "error": lambda v: isinstance(v, str), "reason": lambda v: isinstance(v, str)}


def _report(event):
    """A started/finished report checked field by field (the database takes nothing else)."""
    if not isinstance(event, dict):
        raise HQError(BAD_REQUEST, "events must be objects")
    report = {"job": p.field(event, "job", int), "attempt": p.field(event, "attempt", int),
              "type": p.field(event, "type", str)}
    if report["type"] not in ("started", "finished"):
        raise HQError(BAD_REQUEST, f"unknown event type {report['type'][:40]!r}")
    for name, valid in REPORT_FIELDS.items():
        value = event.get(name)
        if value is not None and not valid(value):
            raise HQError(BAD_REQUEST, f"event field '{name}' has a bad type")
        if value is not None:
            report[name] = value[:255] if isinstance(value, str) else value
    for name in ("exit_code", "signal"):
        if not p.is_int(report.get(name, 0), -INT32_LIMIT, INT32_LIMIT):
            raise HQError(BAD_REQUEST, f"event field '{name}' must fit 32 bits")
    return report


def _ours(server, user, host, job_id, attempt):
    """A report may only touch a job of the agent's user that was sent to the agent's host."""
    job = server.state.jobs.get(job_id)
    if job is not None:
        return job.user == user and job.host == host.name
    held = server.state.attempts.get((job_id, attempt))
    return held is None or (held[0] == host.name and held[2] == user)


def bye(server, identity, body):
    """An idle agent asks to exit: yes (and it is forgotten) unless work is assigned to it."""
    user, host = _agent(server, identity)
    state = server.state
    if any(state.attempts[key][2] == user for key in state.on_host.get(host.name, ())):
        return {"bye": False}
    del state.agents[identity]
    if host.agents.get(user) == identity:
        del host.agents[user]
    server.spawn_asked.pop((user, host.name), None)    # new work may start it again at once
    if not host.agents:
        host.status, host.status_reason = UNKNOWN, "no agent: idle"
        state.writes.update_host(host.name, status=UNKNOWN, status_reason=host.status_reason)
    log.info("agent of %s on %s exits: idle", user, host.name)
    return {"bye": True}


AGENT_REQUESTS = {p.REGISTER: register, p.HEARTBEAT: heartbeat, p.EVENTS: events, p.BYE: bye}
