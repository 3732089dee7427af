"""Handlers of a user's requests about their own jobs and agents: STATUS, LIST, DETAILS, CANCEL,
HOLD, RELEASE, AGENTS, UNREACHABLE, HELLO, PING. Each takes (core, peer, body).

Listings are paged: at most `limit` jobs a reply (default 1,000, at most 2,000) and a cursor.
"""

import logging

from hq import protocol as p
from hq.errors import BAD_REQUEST, UNKNOWN_HOST, UNKNOWN_JOB, HQError
from hq.jobview import add_scripts, event_json, job_json
from hq.model import HELD, PENDING, STATES, TERMINAL
from hq.server import fleet
from hq.server.handlers.states import job_states
from hq.server.handlers.views import jobs_json

log = logging.getLogger("hq.requests")

DEFAULT_LIMIT = 1000
MAX_LIMIT = 2000            # jobs in one reply at most: a page holds the loop only briefly
MAX_IDS = 10000             # job ids one request may name
MAX_EVENTS_JOBS = 1000
SHORT_TEXT = 255


def ping(core, peer, body):
    return {"pong": True}


def hello(core, peer, body):
    core.user_servers[peer.user] = peer.identity
    log.info("user-server of %s connected", peer.user)
    return {"heartbeat_s": core.settings.heartbeat_s, "database_id": core.database_id}


def status(core, peer, body):
    if body.get("ids") is not None:          # the states of these jobs (workflow engines)
        return job_states(core, peer.user, body)
    batch = p.field(body, "batch", int, None)
    if batch is not None:
        own_batch(core, peer.user, batch)
    counts = core.tally.states(peer.user) if batch is None else \
        core.store.count_states(batch=batch)   # own_batch: the user's; jobs_batch_state alone
    return {"counts": {state: counts.get(state, 0) for state in STATES}}


def own_batch(core, user, batch):
    if core.store.batch_owner(batch) != user:
        raise HQError(UNKNOWN_JOB, f"no batch {batch} of user {user}")


def page(body):
    """(limit, newest_first, cursor) of a listing request: the newest jobs first when a limit
    is given (the N newest), else in id order from the start; `after`/`before` continue."""
    states = p.field(body, "states", list, [])
    bad = [s for s in states if s not in STATES]
    if bad:
        raise HQError(BAD_REQUEST, f"unknown state {str(bad[0])[:40]!r}; states are "
                      f"{', '.join(STATES)}")
    asked = p.field(body, "limit", int, 0, check=lambda v: v >= 0)
    newest_first = bool(asked) or p.field(body, "before", int, None) is not None
    cursor = p.field(body, "before" if newest_first else "after", int, None)
    return states, min(asked or DEFAULT_LIMIT, MAX_LIMIT), newest_first, cursor


def listing(core, owner, body, batch=None):
    """One page of jobs (of `owner`, or everybody's for None): {jobs, more, next}."""
    states, limit, newest_first, cursor = page(body)
    text = p.field(body, "text", str, "", check=lambda v: len(v) <= SHORT_TEXT and "\0" not in v)
    if text:
        rows = core.store.find_jobs(owner, text, limit + 1, before=cursor)
    else:
        rows = core.store.list_jobs(owner, states, batch, limit + 1, newest_first=newest_first,
                                    cursor=cursor)
    more = len(rows) > limit
    rows = rows[:limit]
    reply = {"jobs": jobs_json(core, rows), "more": more}
    if more:
        reply["next"] = {"before" if newest_first or text else "after": rows[-1]["id"]}
    return reply


def list_jobs(core, peer, body):
    batch = p.field(body, "batch", int, None)
    if batch is not None:
        own_batch(core, peer.user, batch)
    return listing(core, peer.user, body, batch)


def details(core, peer, body):
    ids = p.int_list(body, "ids")
    if p.field(body, "finished_only", bool, False):
        return _finished_details(core, peer.user, ids)
    if not ids:
        return listing(core, peer.user, body)
    if len(ids) > MAX_IDS:
        raise HQError(BAD_REQUEST, f"at most {MAX_IDS} ids in one request")
    rows = core.store.get_jobs(ids, peer.user)
    missing = sorted(set(ids) - {r["id"] for r in rows})
    if missing:
        raise HQError(UNKNOWN_JOB, f"no job {', '.join(map(str, missing[:20]))} of user "
                      f"{peer.user}")
    jobs = jobs_json(core, rows)
    add_scripts(jobs, sorted(rows, key=lambda r: r["id"]))
    if p.field(body, "events", bool, True) and len(jobs) <= MAX_EVENTS_JOBS:
        events = {}
        for e in core.store.job_events([j["id"] for j in jobs]):
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


def _finished_details(core, user, ids):
    """Jobs among `ids` that have ended, and counts by state of those still live (from
    memory: cheap enough to poll while waiting for many jobs)."""
    live, ended = {}, []
    for job_id in ids:
        job = core.jobs.get(job_id)
        if job is not None and job.user == user:
            live[job.state] = live.get(job.state, 0) + 1
        else:
            ended.append(job_id)
    rows = core.store.get_jobs(ended, user) if ended else []
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


def cancel(core, peer, body):
    batch = p.field(body, "batch", int, None)
    if batch is None:
        return _change_jobs(core, peer.user, p.int_list(body, "ids"), "cancel")
    own_batch(core, peer.user, batch)
    core.broken_batches.add(batch)     # chunks still on their way are refused
    core.cancelled_batches.add(batch)  # and a chunk committed in this turn is cancelled
    live = [job for job in core.jobs.values() if job.batch == batch]
    for job in live:
        core.cancel(job, core.now)
    parked = core.parking.count_parked(peer.user, batch)
    core.parking.cancel_batch(peer.user, batch, core.now)
    return {"changed": [job.id for job in live], "unchanged": {}, "parked": parked}


def hold(core, peer, body):
    return _change_jobs(core, peer.user, p.int_list(body, "ids"), "hold")


def release(core, peer, body):
    return _change_jobs(core, peer.user, p.int_list(body, "ids"), "release")


def _change_jobs(core, user, ids, action):
    if len(ids) > MAX_IDS:
        raise HQError(BAD_REQUEST, f"at most {MAX_IDS} ids in one request")
    core.parking.unpark(user, ids, core.now)
    # only jobs not live in memory are read: a change to live jobs needs no database (during
    # an outage it is kept and committed later)
    dead = [i for i in ids if not _live_of(core, i, user)]
    rows = {r["id"]: r for r in core.store.get_jobs(dead, user)} if dead else {}
    missing = [i for i in dead if i not in rows]
    if missing:
        raise HQError(UNKNOWN_JOB, f"no job {', '.join(map(str, missing[:20]))} of user {user}")
    changed, unchanged = [], {}
    for job_id in ids:
        job = _live_of(core, job_id, user)
        if job is None:
            unchanged[str(job_id)] = f"already {rows[job_id]['state']}"
        elif action == "cancel":
            core.cancel(job, core.now)
            changed.append(job_id)
        elif action == "hold" and job.state == PENDING:
            core.hold(job, core.now)
            changed.append(job_id)
        elif action == "release" and job.state == HELD:
            core.unhold(job, core.now)
            changed.append(job_id)
        else:
            unchanged[str(job_id)] = f"is {job.state}"
    return {"changed": changed, "unchanged": unchanged}


def _live_of(core, job_id, user):
    job = core.jobs.get(job_id)
    return job if job is not None and job.user == user else None


def unreachable(core, peer, body):
    """The user-server could not start the user's agent on a host: lscluster says why."""
    name = p.field(body, "host", str)
    host = core.hosts.get(name)
    if host is None:
        raise HQError(UNKNOWN_HOST, f"no host {name[:64]!r} in the cluster")
    fleet.host_unreachable(core, host, peer.user, p.field(body, "reason", str))
    return {}


def agents(core, peer, body):
    """lss (list), invokeservers (start on every active host), cleanup (stop idle agents)."""
    action = p.field(body, "action", str, "list")
    user = peer.user
    mine = sorted((h for h in core.hosts.values() if user in h.agents), key=lambda h: h.name)
    busy = {h.name for h in mine if core.attempts_of(h.name, user)}
    if action == "list":
        return {"agents": [{"host": h.name, "status": h.status, "state": h.state,
                            "busy": h.name in busy} for h in mine]}
    if action == "start":
        return {"asked": fleet.request_agents(core, only_user=user, force=True)}
    if action == "stop":
        stopped = [h.name for h in mine if h.name not in busy]
        for name in stopped:
            fleet.stop_agent(core, core.hosts[name], user)
        return {"stopped": stopped, "busy": sorted(busy)}
    raise HQError(BAD_REQUEST, f"unknown agents action {action[:40]!r}: list, start or stop")
