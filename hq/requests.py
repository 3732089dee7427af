"""Handlers of user requests (SUBMIT, STATUS, LIST, DETAILS, CANCEL, ADMIN) in hq-server.

Each takes (server, user, body) and returns the reply fields, or raises HQError.
"""

import logging
import os
import struct

from zmq.utils import z85

from hq import protocol as p
from hq.errors import BAD_REQUEST, PERMISSION_DENIED, UNKNOWN_HOST, UNKNOWN_JOB, HQError
from hq.jobview import event_json, iso, job_json
from hq.model import ACTIVE, HELD, INACTIVE, PENDING, STATES, TERMINAL, UP
from hq.submissions import submit

log = logging.getLogger("hq.requests")

READ_ONLY_ADMIN = {"info", "status", "lscluster"}


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
    limit = p.field(body, "limit", int, 0)
    batch = p.field(body, "batch", int, None)
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
    if p.field(body, "events", bool, True) and len(jobs) <= 1000:
        events = {}
        for e in server.store.job_events([j["id"] for j in jobs]):
            events.setdefault(e["job_id"], []).append(event_json(e))
        for j in jobs:
            j["events"] = events.get(j["id"], [])
            j["attempts"] = attempts_of(j["events"])
    return {"jobs": jobs}


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
    server.parking.unpark(user, ids)
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


def admin(server, user, body):
    command = p.field(body, "command", str)
    arg = p.field(body, "arg", str, "")
    if command not in READ_ONLY_ADMIN and "ADMIN" not in server.state.users[user]["roles"]:
        raise HQError(PERMISSION_DENIED, f"'{command}' needs the ADMIN role; user {user} lacks it")
    if command == "adduser":
        return _adduser(server, arg, p.field(body, "key", str))
    handler = ADMIN_COMMANDS.get(command)
    if handler is None:
        raise HQError(BAD_REQUEST, f"unknown admin command {command!r}")
    return handler(server, arg)


def _adduser(server, name, key):
    """Register `key` (z85 CURVE public key) for user `name` (added with USER if unknown)."""
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise HQError(BAD_REQUEST, f"bad user name {name[:64]!r}")
    if len(key) != 40 or not _is_z85(key):
        raise HQError(BAD_REQUEST, "key must be a 40-character z85 CURVE public key")
    server.store.set_user_key(name, key)
    info = server.state.users.setdefault(name, {"roles": {"USER"}, "enabled": True})
    info["key"] = key
    server.refresh_keys()
    log.info("user %s registered with key %s...", name, key[:8])
    return {"user": name, "key": key, "roles": sorted(info["roles"])}


def _is_z85(text):
    try:
        return len(z85.decode(text.encode("ascii"))) == 32
    except (ValueError, UnicodeEncodeError, KeyError, IndexError, struct.error):
        return False


def _info(server, arg):
    state = server.state
    return {"server": server.address, "pid": os.getpid(), "database": server.store.describe(),
            "cluster": ACTIVE if state.cluster_active else INACTIVE,
            "hosts": len(state.hosts), "users": len(state.users),
            "live_jobs": len(state.jobs), "pending_jobs": len(state.pending),
            "started": server.started}


def _status(server, arg):
    counts = server.store.count_states()
    info = _info(server, arg)
    info["counts"] = {s: counts.get(s, 0) for s in STATES}
    return info


def _lscluster(server, arg):
    now = server.now
    hosts = []
    for h in sorted(server.state.hosts.values(), key=lambda h: h.name):
        hosts.append({
            "name": h.name, "address": h.address, "state": h.state, "status": h.status,
            "cores": h.cores, "slots_used": h.slots_used, "max_slots": h.slots,
            "groups": list(h.groups), "load1": h.load1, "mem_available": h.mem_available,
            "memory_total": h.memory_total, "os": h.os, "agents": sorted(h.agents),
            "heartbeat_age": round(now - h.last_seen, 1) if h.last_seen else None,
            "last_seen": iso(h.last_seen), "status_reason": h.status_reason})
    return {"cluster": ACTIVE if server.state.cluster_active else INACTIVE, "hosts": hosts}


def _host_state(state):
    def change(server, name):
        host = server.state.hosts.get(name)
        if host is None:
            raise HQError(UNKNOWN_HOST, f"no host {name!r} in the cluster")
        server.state.set_host_state(host, state)
        return {"host": name, "state": state}
    return change


def _cluster_state(state):
    def change(server, arg):
        server.state.set_cluster_state(state)
        return {"cluster": state}
    return change


def _shutdown(server, arg):
    server.running = False
    return {"shutdown": True}


ADMIN_COMMANDS = {
    "info": _info, "status": _status, "lscluster": _lscluster,
    "activatehost": _host_state(ACTIVE), "deactivatehost": _host_state(INACTIVE),
    "activate": _cluster_state(ACTIVE), "deactivate": _cluster_state(INACTIVE),
    "shutdown": _shutdown,
}

USER_REQUESTS = {
    p.UNREACHABLE: unreachable, p.SUBMIT: submit, p.STATUS: status, p.LIST: list_jobs, p.DETAILS: details,
    p.CANCEL: cancel, p.HOLD: hold, p.RELEASE: release, p.ADMIN: admin,
}
