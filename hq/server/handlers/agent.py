"""Handlers of agent messages: REGISTER, HEARTBEAT, EVENTS, BYE. Each takes (core, peer, body);
an agent acts for its CURVE key's user and only ever touches that user's jobs on its own host.
"""

import logging

from hq import protocol as p
from hq.errors import BAD_REQUEST, UNKNOWN_HOST, UNKNOWN_USER, HQError
from hq.model import DISPATCHED, RUNNING
from hq.server import fleet

log = logging.getLogger("hq.agents")

UNKNOWN_AGENT = "UNKNOWN_AGENT"   # heartbeat/events from an agent that must register again
INT32_LIMIT = 1 << 31
OS_TEXT = 255
AWAIT_RESULT_S = 10.0     # a requeued job waits this long for its returning agent's report


def register(core, peer, body):
    host_name = p.field(body, "host", str)
    host = core.hosts.get(host_name)
    if host is None:
        raise HQError(UNKNOWN_HOST, f"host {host_name[:64]!r} is not in cluster.tab")
    if peer.user not in core.users:
        raise HQError(UNKNOWN_USER, f"user {peer.user!r} is unknown")
    facts = (p.field(body, "cores", int, host.cores or 1, check=lambda v: 0 < v < INT32_LIMIT),
             p.field(body, "memory_total", int, host.memory_total, check=lambda v: v >= 0),
             p.field(body, "os", str, host.os or "")[:OS_TEXT])
    same_database = body.get("database_id") in (None, core.database_id)
    agent = fleet.agent_registered(core, peer.identity, peer.user, host, facts, core.now)
    fleet.host_seen(core, agent, body, core.now)
    log.info("agent of %s registered on host %s (%d cores)", peer.user, host_name, host.cores)
    if same_database:       # an agent's records of another database are its own to drop
        _kill_unwanted(core, peer, host, p.field(body, "running", list, []))
        for entry in p.field(body, "reported", list, []):    # ends it reports next: a retry
            core.await_result(*_pair(entry), host.name, core.now + AWAIT_RESULT_S)  # waits
    return {"heartbeat_s": core.settings.heartbeat_s, "database_id": core.database_id,
            "lease_s": core.settings.agent_lease_s, "metrics": host.reporter == peer.user,
            **p.request_number(body)}


def _kill_unwanted(core, peer, host, running):
    """Kill what the agent runs that is no longer wanted; accept the rest."""
    stale = []
    for entry in running:
        job_id, attempt = _pair(entry)
        job = core.jobs.get(job_id)
        wanted = (job is not None and job.user == peer.user and job.attempt == attempt
                  and job.host == host.name and job.state in (DISPATCHED, RUNNING))
        if not wanted:
            stale.append([job_id, attempt])
    if stale:
        core.outbox.send(peer.identity, p.KILL, {"jobs": stale})


def _pair(entry):
    if (not isinstance(entry, list) or len(entry) != 2
            or not all(p.is_int(v) for v in entry)):
        raise HQError(BAD_REQUEST, "running entries must be [job id, attempt]")
    return entry[0], entry[1]


def _agent(core, peer):
    agent = core.agents.get(peer.identity)
    if agent is None:
        raise HQError(UNKNOWN_AGENT, "agent not registered (server restarted?): register again")
    if agent.user != peer.user:
        raise HQError(UNKNOWN_AGENT, "agent connection changed user: register again")
    return agent


def heartbeat(core, peer, body):
    """Liveness, the agent's jobs, and (from the host's reporter) its metrics. The reply says
    how often to heartbeat from now on, with the lease for the interval this one declared."""
    agent = _agent(core, peer)
    fleet.host_seen(core, agent, body, core.now)
    reply = renew(core, peer, body)
    known = {_pair(e) for key in ("running", "reported") for e in p.field(body, key, list, [])}
    core.reconcile(agent.host, agent.user, known, core.now, 2 * core.settings.heartbeat_s + 1)
    return reply


def renew(core, peer, body):
    """A heartbeat's liveness and lease: its reply. Also alone for a heartbeat held behind
    its agent's earlier messages (intake.py), whose jobs are reconciled when its turn comes.
    While commits fail the reply says `recording: false`: an agent keeps one report in flight
    until it is acknowledged, and acknowledgements wait for a commit."""
    agent = _agent(core, peer)
    said, every = fleet.declared(core, body), fleet.interval(core, agent)
    fleet.heard(core, agent, core.now, max(said, every))
    reply = {"metrics": core.hosts[agent.host].reporter == agent.user, "every": every,
             "lease_s": fleet.lease_for(core, said), **p.request_number(body)}
    if not core.db_ok:      # acknowledgements wait for a commit: report without them
        reply["recording"] = False
    return reply


def events(core, peer, body):
    agent = _agent(core, peer)
    fleet.heard(core, agent, core.now, core.settings.heartbeat_s)
    reports = [p.Report.parse(event) for event in p.field(body, "events", list)]
    for report in reports:
        if not _ours(core, agent, report.job, report.attempt):
            log.warning("agent of %s on %s reported job %s attempt %s that is not its own: "
                        "ignored", agent.user, agent.host, report.job, report.attempt)
        elif report.type == "started":
            if not core.job_started(report.job, report.attempt, report.time or core.now,
                                    report.pid, core.now) and not _running(core, report):
                core.outbox.send(peer.identity, p.KILL, {"jobs": [[report.job,
                                                                   report.attempt]]})
        elif (report.reason or "").startswith(p.FENCED):
            core.attempt_fenced(report, agent.host, core.now)
        else:
            core.job_finished(report, core.now, agent.host)
            if report.started is not None and report.time is not None:
                core.ahead.finished(agent.host, report.time - report.started)
    return {"seq": body.get("seq")}


def _running(core, report):
    """The attempt already runs: this `started` was sent again (its acknowledgement was lost,
    e.g. to a server restart) and must not kill what it reports."""
    job = core.jobs.get(report.job)
    return job is not None and job.attempt == report.attempt and job.state == RUNNING


def _ours(core, agent, job_id, attempt):
    """A report may only touch a job of the agent's user that was sent to the agent's host (a
    report of an earlier attempt, or of one requeued from there, is kept as stale at most)."""
    job = core.jobs.get(job_id)
    if job is not None:
        return job.user == agent.user and (job.host == agent.host or attempt < job.attempt
                                           or core.requeued.get(job_id) == (attempt, agent.host))
    held = core.attempts.get((job_id, attempt))
    return held is None or (held.host == agent.host and held.user == agent.user)


def bye(core, peer, body):
    """An idle agent asks to exit: yes (and it is forgotten) unless work is assigned to it."""
    agent = _agent(core, peer)
    if core.attempts_of(agent.host, agent.user):
        return {"bye": False}
    fleet.agent_left(core, agent, "no agent: idle")
    log.info("agent of %s on %s exits: idle", agent.user, agent.host)
    return {"bye": True}
