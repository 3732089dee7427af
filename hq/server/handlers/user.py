"""Handlers of user requests (SUBMIT, STATUS, LIST, DETAILS, CANCEL, ADMIN) in hq-server.

Each takes (server, user, body) and returns the reply fields, or raises HQError.
"""

import logging

from hq import protocol as p
from hq.server.handlers import admin
from hq.errors import BAD_REQUEST, UNKNOWN_HOST, UNKNOWN_JOB, HQError
from hq.jobview import event_json, job_json
from hq.model import HELD, PENDING, STATES, TERMINAL, UP
from hq.server.handlers.submit import submit

log = logging.getLogger("hq.server.handlers.user")

MAX_REASONS = 200   # why-waiting costs a look at every host: only for short job lists
INT32_LIMIT = 1 << 31                 # INT columns
SHORT_TEXT = 255                      # VARCHAR(255) columns


def status(server, user, body):
    batch = p.field(body, "batch", int, None)
    if batch is not None and server.store.batch_owner(batch) != user:
        raise HQError(UNKNOWN_JOB, f"no batch {batch} of user {user}")
    counts = server.store.count_states(user, batch)
    return {"counts": {state: counts.get(state, 0) for state in STATES}}


def list_jobs(server, user, body):
    states = p.field(body, "states", list, [])
    bad = [s for s in states if s not in STATES]
    if bad:
        raise HQError(BAD_REQUEST, f"unknown state {bad[0]!r}; states are {', '.join(STATES)}")
    limit = p.field(body, "limit", int, 0, check=lambda v: 0 <= v < INT32_LIMIT)
    batch = p.field(body, "batch", int, None)
    text = p.field(body, "text", str, "", check=lambda v: len(v) <= SHORT_TEXT and "\0" not in v)
    if text:
        rows = server.store.find_jobs(user, text, limit)
    else:
        rows = server.store.list_jobs(user, states, batch, limit, newest_first=bool(limit))
    rows.sort(key=lambda r: r["id"])
    return {"jobs": [job_json(r) for r in rows]}


def details(server, user, body):
    ids = p.int_list(body, "ids")
    if p.field(body, "finished_only", bool, False):
        return _finished_details(server, user, ids)
    if not ids:
        rows = server.store.list_jobs(user)
    else:
        rows = server.store.get_jobs(ids, user)
        missing = sorted(set(ids) - {r["id"] for r in rows})
        if missing:
            raise HQError(UNKNOWN_JOB, f"no job {', '.join(map(str, missing))} of user {user}")
    jobs = [job_json(r) for r in rows]
    if len(jobs) <= MAX_REASONS:
        live_reasons(server, jobs)
    if p.field(body, "events", bool, True) and len(jobs) <= 1000:
        events = {}
        for e in server.store.job_events([j["id"] for j in jobs]):
            events.setdefault(e["job_id"], []).append(event_json(e))
        for j in jobs:
            j["events"] = events.get(j["id"], [])
            j["attempts"] = attempts_of(j["events"])
    return {"jobs": jobs}


def live_reasons(server, jobs):
    """Fill in why each held or pending job waits, from the server's live state."""
    for j in jobs:
        live = server.state.jobs.get(j["id"])
        if live is not None and live.state in (HELD, PENDING):
            j["reason"] = server.state.waiting_reason(live, server.settings.outside_load)
            reserved = server.state.reservations.get(live.id)
            if reserved:
                j["reserved_host"] = reserved


def attempts_of(events):
    """Each attempt of a job from its events: host, dispatched, started, ended, outcome, why."""
    attempts = {}
    for e in events:
        if e["attempt"] < 1 or e["state"] == "stale":
            continue
        a = attempts.setdefault(e["attempt"], {"attempt": e["attempt"], "host": e["host"],
                                               "dispatched": None, "started": None,
                                               "ended": None, "outcome": None, "why": ""})
        if e["state"] == "dispatched":
            a["dispatched"] = e["time"]
        elif e["state"] == "running":
            a["started"] = e["time"]
        elif a["ended"] is None:
            a["ended"], a["outcome"], a["why"] = e["time"], e["state"], e["detail"] or ""
    return [attempts[n] for n in sorted(attempts)]


def _finished_details(server, user, ids):
    """Jobs among `ids` that have ended, and counts by state of those still live (from
    memory: cheap enough to poll while waiting for many jobs)."""
    live = {}
    ended = []
    for job_id in ids:
        job = server.state.jobs.get(job_id)
        if job is not None and job.user == user:
            live[job.state] = live.get(job.state, 0) + 1
        else:
            ended.append(job_id)
    rows = server.store.get_jobs(ended, user) if ended else []
    missing = sorted(set(ended) - {r["id"] for r in rows})
    if missing:
        raise HQError(UNKNOWN_JOB, f"no job {', '.join(map(str, missing[:20]))} of user {user}")
    finished = []
    for row in rows:       # a job ended in this very turn is not committed yet: still live
        if row["state"] in TERMINAL:
            finished.append(job_json(row))
        else:
            live[row["state"]] = live.get(row["state"], 0) + 1
    return {"jobs": finished, "live": live}


def cancel(server, user, body):
    batch = p.field(body, "batch", int, None)
    if batch is None:
        return _change_jobs(server, user, p.int_list(body, "ids"), "cancel")
    if server.store.batch_owner(batch) != user:
        raise HQError(UNKNOWN_JOB, f"no batch {batch} of user {user}")
    server.broken_batches.add(batch)     # chunks still on their way are refused
    server.cancelled_batches.add(batch)  # and a chunk committed in this turn is cancelled
    live = [job for job in server.state.jobs.values() if job.batch == batch]
    for job in live:
        server.cancel_job(job)
    parked = server.store.count_parked(user, batch, server.parking.parked.get(user))
    server.parking.cancel_batch(user, batch, server.now)
    return {"changed": [job.id for job in live], "unchanged": {}, "parked": parked}




def hold(server, user, body):
    return _change_jobs(server, user, p.int_list(body, "ids"), "hold")


def release(server, user, body):
    return _change_jobs(server, user, p.int_list(body, "ids"), "release")


def _change_jobs(server, user, ids, action):
    server.parking.unpark(user, ids, server.now)
    rows = {r["id"]: r for r in server.store.get_jobs(ids, user)}
    missing = [i for i in ids if i not in rows and not _live_of(server, i, user)]
    if missing:
        raise HQError(UNKNOWN_JOB, f"no job {', '.join(map(str, missing))} of user {user}")
    changed, unchanged = [], {}
    for job_id in ids:
        job = _live_of(server, job_id, user)
        if job is None:
            unchanged[str(job_id)] = f"already {rows[job_id]['state']}"
        elif action == "cancel":
            server.cancel_job(job)
            changed.append(job_id)
        elif action == "hold" and job.state == PENDING:
            server.state.hold(job, server.now)
            changed.append(job_id)
        elif action == "release" and job.state == HELD:
            server.state.release_hold(job, server.now)
            changed.append(job_id)
        else:
            unchanged[str(job_id)] = f"is {job.state}"
    return {"changed": changed, "unchanged": unchanged}


def _live_of(server, job_id, user):
    job = server.state.jobs.get(job_id)
    return job if job is not None and job.user == user else None


def unreachable(server, user, body):
    """The user-server could not start the user's agent on a host: lscluster says why."""
    name = p.field(body, "host", str)
    host = server.state.hosts.get(name)
    if host is None:
        raise HQError(UNKNOWN_HOST, f"no host {name[:64]!r} in the cluster")
    reason = f"{user}: {p.field(body, 'reason', str)}"[:255]
    if host.status != UP:
        host.status_reason = reason
        server.state.writes.update_host(name, status_reason=reason)
    log.warning("host %s unreachable for %s", name, reason)
    return {}


def agents(server, user, body):
    """lss (list), invokeservers (start on every active host), cleanup (stop idle agents)."""
    action = p.field(body, "action", str, "list")
    state = server.state
    mine = sorted((h for h in state.hosts.values() if user in h.agents), key=lambda h: h.name)
    busy = {name for name, held in state.on_host.items()
            if any(state.attempts[key][2] == user for key in held)}
    if action == "list":
        return {"agents": [{"host": h.name, "status": h.status, "state": h.state,
                            "busy": h.name in busy} for h in mine]}
    if action == "start":
        return {"asked": server.request_agents(only_user=user, force=True)}
    if action == "stop":
        stopped = [h.name for h in mine if h.name not in busy]
        for name in stopped:
            server.stop_agent(state.hosts[name], user)
        return {"stopped": stopped, "busy": sorted(h.name for h in mine if h.name in busy)}
    raise HQError(BAD_REQUEST, f"unknown agents action {action!r}: list, start or stop")


USER_REQUESTS = {
    p.UNREACHABLE: unreachable, p.SUBMIT: submit, p.STATUS: status, p.LIST: list_jobs,
    p.DETAILS: details, p.CANCEL: cancel, p.HOLD: hold, p.RELEASE: release, p.ADMIN: admin.admin,
    p.AGENTS: agents,
}
