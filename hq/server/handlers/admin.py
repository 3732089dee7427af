"""Handlers of hq-admin commands in hq-server (ADMIN requests): look at and steer the cluster.

Each takes (server, user, body) and returns the reply fields, or raises HQError.
"""

import logging
import os
import struct

from zmq.utils import z85

from hq import config, protocol as p
from hq.server.handlers import reservations
from hq.errors import BAD_REQUEST, PERMISSION_DENIED, UNKNOWN_HOST, UNKNOWN_USER, HQError
from hq.jobview import iso, job_json
from hq.model import ACTIVE, DISPATCHED, INACTIVE, RUNNING, STATES, Host

log = logging.getLogger("hq.server.handlers.admin")

READ_ONLY = {"info", "status", "lscluster", "lsusers", "lsuser", "jobs", "hostinfo",
             "reservations"}
METRIC_COLUMNS = ("load1", "load5", "load15", "cpu_percent", "mem_available", "nprocs",
                  "foreign_load")


def admin(server, user, body):
    command = p.field(body, "command", str)
    if command not in READ_ONLY and "ADMIN" not in server.state.users[user]["roles"]:
        raise HQError(PERMISSION_DENIED, f"'{command}' needs the ADMIN role; user {user} lacks it")
    handler = COMMANDS.get(command)
    if handler is None:
        raise HQError(BAD_REQUEST, f"unknown admin command {command!r}")
    return handler(server, p.field(body, "arg", str, ""), body)


def _host(server, name):
    host = server.state.hosts.get(name)
    if host is None:
        raise HQError(UNKNOWN_HOST, f"no host {name!r} in the cluster (see 'hq-admin lscluster')")
    return host


def _user(server, name):
    user = server.state.users.get(name)
    if user is None:
        raise HQError(UNKNOWN_USER, f"no user {name!r} (see 'hq-admin lsusers')")
    return user


def _info(server, arg, body):
    state = server.state
    return {"server": server.address, "pid": os.getpid(), "database": server.store.describe(),
            "cluster": ACTIVE if state.cluster_active else INACTIVE,
            "hosts": len(state.hosts), "users": len(state.users),
            "live_jobs": len(state.jobs), "pending_jobs": len(state.pending),
            "reserved_hosts": len(state.reservations),
            "largest_pass": server.largest_pass, "started": server.started}


def _status(server, arg, body):
    counts = server.store.count_states()
    info = _info(server, arg, body)
    info["counts"] = {s: counts.get(s, 0) for s in STATES}
    return info


def _jobs_by_host(server):
    return {name: len(held) for name, held in server.state.on_host.items()}


def host_json(server, host, jobs=0):
    return {"name": host.name, "address": host.address, "state": host.state,
            "status": host.status, "in_config": host.in_config, "cores": host.cores,
            "slots_used": host.slots_used, "max_slots": host.slots, "jobs": jobs,
            "groups": list(host.groups), "load1": host.load1, "load5": host.load5,
            "load15": host.load15, "foreign_load": host.foreign_load,
            "cpu_percent": host.cpu_percent, "mem_available": host.mem_available,
            "memory_total": host.memory_total, "os": host.os, "agents": sorted(host.agents),
            "reserved_for": sorted(j for j, h in server.state.reservations.items()
                                   if h == host.name),
            "heartbeat_age": round(server.now - host.last_seen, 1) if host.last_seen else None,
            "last_seen": iso(host.last_seen), "status_reason": host.status_reason}


def _lscluster(server, arg, body):
    jobs = _jobs_by_host(server)
    hosts = [host_json(server, h, jobs.get(h.name, 0))
             for h in sorted(server.state.hosts.values(), key=lambda h: h.name)]
    return {"cluster": ACTIVE if server.state.cluster_active else INACTIVE, "hosts": hosts}


def _hostinfo(server, arg, body):
    host = _host(server, arg)
    running = [job for job in server.state.jobs.values()
               if job.host == host.name and job.state in (DISPATCHED, RUNNING)]
    rows = server.store.get_jobs(sorted(j.id for j in running))
    samples = server.store.recent_metrics(host.name, p.field(body, "limit", int, 10,
                                                             check=lambda v: 0 < v <= 10000))
    return {"host": host_json(server, host, len(running)),
            "metrics": [dict({c: r[c] for c in METRIC_COLUMNS}, time=iso(r["time"]))
                        for r in samples],
            "jobs": [job_json(r) for r in rows]}


def _host_state(state):
    def change(server, name, body):
        server.state.set_host_state(_host(server, name), state)
        return {"host": name, "state": state}
    return change


def _cluster_state(state):
    def change(server, arg, body):
        server.state.set_cluster_state(state)
        return {"cluster": state}
    return change


def _shutdown(server, arg, body):
    server.running = False
    return {"shutdown": True}


# -- users ------------------------------------------------------------------------------------
def user_json(server, name, counts):
    user = server.state.users[name]
    return {"name": name, "roles": sorted(user["roles"]), "enabled": user["enabled"],
            "slots_used": server.state.user_slots.get(name, 0),
            "agents": sorted(h.name for h in server.state.hosts.values() if name in h.agents),
            "counts": {s: counts.get((name, s), 0) for s in STATES}}


def _lsusers(server, arg, body):
    counts = server.store.count_by_user()
    return {"users": [user_json(server, n, counts) for n in sorted(server.state.users)]}


def _lsuser(server, arg, body):
    _user(server, arg)
    return {"user": user_json(server, arg, server.store.count_by_user(arg))}


def _user_enabled(enabled):
    def change(server, name, body):
        _user(server, name)
        server.state.set_user_enabled(name, enabled)
        return {"user": name, "enabled": enabled}
    return change


# -- jobs of every user -------------------------------------------------------------------------
def _jobs(server, arg, body):
    from hq.server.handlers.user import MAX_REASONS, live_reasons
    owner = p.field(body, "for_user", str, "") or None
    if owner is not None:
        _user(server, owner)
    states = p.field(body, "states", list, [])
    bad = [s for s in states if s not in STATES]
    if bad:
        raise HQError(BAD_REQUEST, f"unknown state {bad[0]!r}; states are {', '.join(STATES)}")
    limit = p.field(body, "limit", int, 0, check=lambda v: 0 <= v < 1 << 31)
    rows = server.store.list_jobs(owner, states, None, limit, newest_first=bool(limit))
    rows.sort(key=lambda r: r["id"])
    jobs = [job_json(r) for r in rows]
    if len(jobs) <= MAX_REASONS:
        live_reasons(server, jobs)
    return {"jobs": jobs}


# -- reload -------------------------------------------------------------------------------------
def _reload(server, arg, body):
    """Re-read cluster.tab and users: new hosts appear, removed hosts drain (no new work)."""
    etc = server.settings.etc
    entries = config.load_cluster(etc)
    users = config.load_users(etc) + [(config.current_user(), ["USER", "ADMIN"])]
    server.store.add_hosts(entries)
    server.store.add_users(users)
    state = server.state
    listed = set()
    for entry in entries:
        listed.add(entry.name)
        host = state.hosts.get(entry.name)
        if host is None:
            host = state.hosts[entry.name] = Host(name=entry.name, state=entry.state)
        host.address, host.max_slots = entry.address, entry.max_slots
        host.groups, host.in_config = tuple(entry.groups), True
    removed = sorted(name for name, host in state.hosts.items()
                     if name not in listed and host.in_config)
    for name in removed:
        state.hosts[name].in_config = False
    state.changed = True
    for name, roles in users:
        known = state.users.setdefault(name, {"roles": set(roles), "enabled": True})
        if known["roles"] != set(roles) and name != config.current_user():
            known["roles"] = set(roles)
            server.store.set_user_roles(name, roles)
    return {"hosts": len(entries), "removed": removed, "users": len(state.users)}


def _adduser(server, name, body):
    """Register a z85 CURVE public key (body `key`) for user `name` (added with USER if new)."""
    key = p.field(body, "key", str)
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


COMMANDS = {
    "info": _info, "status": _status, "lscluster": _lscluster, "hostinfo": _hostinfo,
    "activatehost": _host_state(ACTIVE), "deactivatehost": _host_state(INACTIVE),
    "activate": _cluster_state(ACTIVE), "deactivate": _cluster_state(INACTIVE),
    "lsusers": _lsusers, "lsuser": _lsuser, "enableuser": _user_enabled(True),
    "disableuser": _user_enabled(False), "jobs": _jobs, "reload": _reload,
    "shutdown": _shutdown, "adduser": _adduser, **reservations.COMMANDS,
}
