"""Handlers of user requests (SUBMIT, STATUS, LIST, DETAILS, CANCEL, ADMIN) in hq-server.

Each takes (server, user, body) and returns the reply fields, or raises HQError.
"""

import logging
import os

from hq import admin, protocol as p, reservations
from hq.errors import (BAD_REQUEST, NO_HOST_FITS, UNKNOWN_HOST, UNKNOWN_JOB,
                       HQError)
from hq.jobview import event_json, job_json
from hq.model import HELD, JOB_OPTIONS, PENDING, STATES, UP
from hq.scheduler import can_ever_run

log = logging.getLogger("hq.requests")

MAX_COMMAND = 1 << 20
MAX_REASONS = 200   # why-waiting costs a look at every host: only for short job lists
MAX_ENV = 1 << 20
INT32_LIMIT = 1 << 31                 # INT columns
SHORT_TEXT, LONG_TEXT = 255, 65535    # VARCHAR(255) columns; path and text columns
SHORT_OPTIONS = {"name", "host_req", "group_req", "exclude_hosts", "shell", "reservation"}


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
            low = -(INT32_LIMIT - 1) if name == "priority" else 0
            limit = p.INT_LIMIT if name == "memory" else INT32_LIMIT
            if not p.is_int(value, low, limit):
                raise HQError(BAD_REQUEST, f"{where}: {name} must be a whole number from {low} "
                              f"to {limit - 1}")
        elif not isinstance(value, str) or "\0" in value:
            raise HQError(BAD_REQUEST, f"{where}: {name} must be a string")
        elif len(value) > (SHORT_TEXT if name in SHORT_OPTIONS else LONG_TEXT):
            raise HQError(BAD_REQUEST, f"{where}: {name} is too long")
        spec[name] = value
    if spec["cores"] < 1:
        raise HQError(BAD_REQUEST, f"{where}: cores must be at least 1")
    deps = [d.strip() for d in spec["depends_on"].split(",") if d.strip()]
    if not all(d.isdigit() and 0 < int(d) < 1 << 62 for d in deps):
        raise HQError(BAD_REQUEST, f"{where}: depends_on must be job ids separated by commas")
    spec["depends_on"] = ",".join(str(int(d)) for d in deps)
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
    _check_fits(server, clean)
    ended = _ended_dependencies(server, clean)
    return server.stage_submission(user, clean, env, cwd, hold, ended)


def _check_fits(server, specs):
    """Refuse a job that no host can ever run (too many cores, unknown host or group)."""
    hosts = [h for h in server.state.hosts.values() if h.in_config]
    shapes = {}
    for i, spec in enumerate(specs):
        key = tuple(spec[k] for k in ("cores", "memory", "host_req", "group_req",
                                       "exclude_hosts"))
        if key in shapes:
            continue
        shapes[key] = True
        probe = _probe(spec)
        if spec["reservation"]:
            reserved = reservations.check_code(server, spec["reservation"])
            if spec["cores"] > max(reserved.values()):
                raise HQError(NO_HOST_FITS, f"job {i + 1}: reservation {spec['reservation']} "
                              f"has at most {max(reserved.values())} slots on one host")
        known = server.state.hosts.get(spec["host_req"])
        if spec["host_req"] and (known is None or not known.in_config):
            raise HQError(UNKNOWN_HOST, f"job {i + 1}: no host {spec['host_req']!r} in the "
                          "cluster (see 'hq-admin lscluster')")
        if spec["group_req"] and not any(spec["group_req"] in h.groups for h in hosts):
            raise HQError(NO_HOST_FITS, f"job {i + 1}: no host in group {spec['group_req']!r}")
        known = [h for h in hosts if h.slots]
        if hosts and len(known) == len(hosts) and not can_ever_run(probe, known):
            raise HQError(NO_HOST_FITS, f"job {i + 1}: no host can ever run it "
                          f"({spec['cores']} cores"
                          + (f", {spec['memory'] >> 20} MB" if spec["memory"] else "")
                          + (f", host {spec['host_req']}" if spec["host_req"] else "")
                          + (f", group {spec['group_req']}" if spec["group_req"] else "")
                          + "; see 'hq-admin lscluster')")


def _ended_dependencies(server, specs):
    """States of the --after jobs that are no longer live; HQError for unknown ids."""
    wanted = {int(d) for spec in specs for d in spec["depends_on"].split(",") if d}
    gone = sorted(d for d in wanted if d not in server.state.jobs)
    if not gone:
        return {}
    ended = {r["id"]: r["state"] for r in server.store.get_jobs(gone)}
    missing = [d for d in gone if d not in ended]
    if missing:
        raise HQError(UNKNOWN_JOB, f"--after: no job {', '.join(map(str, missing))}")
    return ended


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
