"""Handlers of user requests (SUBMIT, STATUS, LIST, DETAILS, CANCEL, ADMIN) in hq-server.

Each takes (server, user, body) and returns the reply fields, or raises HQError.
"""

import logging
import os
import struct

from zmq.utils import z85

from hq import protocol as p
from hq.errors import (BAD_REQUEST, NO_HOST_FITS, PERMISSION_DENIED, UNKNOWN_HOST, UNKNOWN_JOB,
                       HQError)
from hq.jobview import event_json, iso, job_json
from hq.model import ACTIVE, HELD, INACTIVE, JOB_OPTIONS, PENDING, STATES, UP
from hq.scheduler import can_ever_run

log = logging.getLogger("hq.requests")

MAX_COMMAND = 1 << 20
MAX_ENV = 1 << 20
INT32_LIMIT = 1 << 31                 # INT columns
SHORT_TEXT, LONG_TEXT = 255, 65535    # VARCHAR(255) columns; path and text columns
SHORT_OPTIONS = {"name", "host_req", "group_req", "exclude_hosts", "shell"}
READ_ONLY_ADMIN = {"info", "status", "lscluster"}


def validate_spec(raw, index, settings):
    """A job spec from a SUBMIT, checked field by field; returns a clean dict."""
    if not isinstance(raw, dict):
        raise HQError(BAD_REQUEST, f"job {index}: must be an object")
    where = f"job {index}"
    command = raw.get("command")
    if not isinstance(command, str) or not command.strip():
        raise HQError(BAD_REQUEST, f"{where}: command must be a non-empty string")
    if len(command) > MAX_COMMAND or "\0" in command:
        raise HQError(BAD_REQUEST, f"{where}: command too long or contains NUL")
    spec = {"command": command}
    for name, default in JOB_OPTIONS.items():
        value = raw.get(name, default)
        if name == "retries" and name not in raw:
            value = settings.default_retries
        if isinstance(default, int):
            limit = p.INT_LIMIT if name == "memory" else INT32_LIMIT
            if not p.is_int(value, 0, limit):
                raise HQError(BAD_REQUEST, f"{where}: {name} must be a whole number from 0 "
                              f"to {limit - 1}")
        elif not isinstance(value, str) or "\0" in value:
            raise HQError(BAD_REQUEST, f"{where}: {name} must be a string")
        elif len(value) > (SHORT_TEXT if name in SHORT_OPTIONS else LONG_TEXT):
            raise HQError(BAD_REQUEST, f"{where}: {name} is too long")
        spec[name] = value
    if spec["cores"] < 1:
        raise HQError(BAD_REQUEST, f"{where}: cores must be at least 1")
    cwd = raw.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not os.path.isabs(cwd)
                            or len(cwd) > LONG_TEXT or "\0" in cwd):
        raise HQError(BAD_REQUEST, f"{where}: cwd must be an absolute path")
    spec["cwd"] = cwd
    return spec


def submit(server, user, body):
    """Validate and stage a batch; the reply is sent once the batch is committed."""
    specs = p.field(body, "jobs", list)
    if not specs:
        raise HQError(BAD_REQUEST, "no jobs in submission")
    env = p.field(body, "env", dict, {})
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in env.items()):
        raise HQError(BAD_REQUEST, "env must map strings to strings")
    if sum(len(k) + len(v) for k, v in env.items()) > MAX_ENV:
        raise HQError(BAD_REQUEST, f"env is larger than {MAX_ENV} characters")
    cwd = p.field(body, "cwd", str, "/",
                  check=lambda d: os.path.isabs(d) and len(d) <= LONG_TEXT and "\0" not in d)
    hold = p.field(body, "hold", bool, False)
    clean = [validate_spec(raw, i + 1, server.settings) for i, raw in enumerate(specs)]
    hosts = list(server.state.hosts.values())
    if hosts and all(h.slots for h in hosts):
        for i, spec in enumerate(clean):
            if not can_ever_run(_probe(spec), hosts):
                raise HQError(NO_HOST_FITS, f"job {i + 1}: no host can ever run it "
                              f"({spec['cores']} cores"
                              + (f", host {spec['host_req']}" if spec["host_req"] else "")
                              + (f", group {spec['group_req']}" if spec["group_req"] else "")
                              + ")")
    return server.stage_submission(user, clean, env, cwd, hold)


class _probe:
    """A job-like view of a spec for `can_ever_run`."""
    def __init__(self, spec):
        self.__dict__.update(spec)


def status(server, user, body):
    counts = server.store.count_states(user)
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


def cancel(server, user, body):
    return _change_jobs(server, user, p.int_list(body, "ids"), "cancel")


def hold(server, user, body):
    return _change_jobs(server, user, p.int_list(body, "ids"), "hold")


def release(server, user, body):
    return _change_jobs(server, user, p.int_list(body, "ids"), "release")


def _change_jobs(server, user, ids, action):
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
