"""Handlers of hq-admin commands (ADMIN requests): look at and steer the cluster. Each command
takes (core, peer, arg, body); what concerns other users' jobs and the users list needs ADMIN.
"""

import logging
import os
import struct

from zmq.utils import z85

from hq import config, protocol as p
from hq.errors import BAD_REQUEST, PERMISSION_DENIED, UNKNOWN_HOST, UNKNOWN_USER, HQError
from hq.jobview import iso
from hq.model import ACTIVE, DISPATCHED, INACTIVE, RUNNING, STATES
from hq.server import fleet
from hq.server.handlers import reservations
from hq.server.handlers.user import listing
from hq.server.handlers.views import host_json, jobs_json, user_json

log = logging.getLogger("hq.admin")

FOR_EVERYONE = {"info", "status", "lscluster", "hostinfo", "lsuser", "reservations"}
READ_ONLY = FOR_EVERYONE | {"lsusers", "jobs"}
METRIC_COLUMNS = ("load1", "load5", "load15", "cpu_percent", "mem_available", "nprocs",
                  "foreign_load")


def is_admin(core, user):
    return "ADMIN" in core.users[user]["roles"]


def is_read_only(body):
    return body.get("command") in READ_ONLY


def admin(core, peer, body):
    command = p.field(body, "command", str)
    handler = COMMANDS.get(command)
    if handler is None:
        raise HQError(BAD_REQUEST, f"unknown admin command {command[:40]!r}")
    if command not in FOR_EVERYONE and not is_admin(core, peer.user):
        raise HQError(PERMISSION_DENIED, f"'{command}' needs the ADMIN role; user {peer.user} "
                      "lacks it")
    return handler(core, peer, p.field(body, "arg", str, ""), body)


def _host(core, name):
    host = core.hosts.get(name)
    if host is None:
        raise HQError(UNKNOWN_HOST, f"no host {name[:64]!r} in the cluster (see 'hq-admin "
                      "lscluster')")
    return host


def _user(core, name):
    user = core.users.get(name)
    if user is None:
        raise HQError(UNKNOWN_USER, f"no user {name[:64]!r} (see 'hq-admin lsusers')")
    return user


def _info(core, peer, arg, body):
    return {"server": core.address, "pid": os.getpid(), "database": core.store.describe(),
            "database_id": core.database_id,
            "cluster": ACTIVE if core.cluster_active else INACTIVE,
            "hosts": len(core.hosts), "users": len(core.users),
            "live_jobs": len(core.jobs), "pending_jobs": len(core.pending),
            "reserved_hosts": len(core.claims),
            "largest_pass": core.largest_pass, "started": iso(core.started),
            "placement_s": round(core.placement_s, 6), "placed": core.placed}


def _status(core, peer, arg, body):
    counts = core.tally.states()
    info = _info(core, peer, arg, body)
    info["counts"] = {s: counts.get(s, 0) for s in STATES}
    return info


def _lscluster(core, peer, arg, body):
    jobs = {name: len(held) for name, held in core.on_host.items()}
    admin_view = is_admin(core, peer.user)
    hosts = [host_json(core, h, jobs.get(h.name, 0), admin_view, peer.user)
             for h in sorted(core.hosts.values(), key=lambda h: h.name)]
    return {"cluster": ACTIVE if core.cluster_active else INACTIVE, "hosts": hosts}


def _hostinfo(core, peer, arg, body):
    """A host, its recent metrics and its jobs (only the viewer's own, unless an admin)."""
    host = _host(core, arg)
    admin_view = is_admin(core, peer.user)
    running = [job for job in core.jobs.values()
               if job.host == host.name and job.state in (DISPATCHED, RUNNING)]
    shown = [j.id for j in running if admin_view or j.user == peer.user]
    samples = core.store.recent_metrics(host.name, p.field(body, "limit", int, 10,
                                                           check=lambda v: 0 < v <= 10000))
    return {"host": host_json(core, host, len(running), admin_view, peer.user),
            "metrics": [dict({c: r[c] for c in METRIC_COLUMNS}, time=iso(r["time"]))
                        for r in samples],
            "jobs": jobs_json(core, core.store.get_jobs(sorted(shown)))}


def _host_state(state):
    def change(core, peer, name, body):
        fleet.set_host_state(core, _host(core, name), state)
        return {"host": name, "state": state}
    return change


def _cluster_state(state):
    def change(core, peer, arg, body):
        core.set_cluster_state(state)
        return {"cluster": state}
    return change


def _shutdown(core, peer, arg, body):
    core.running = False
    return {"shutdown": True}


def _lsusers(core, peer, arg, body):
    counts = core.store.count_by_user()
    return {"users": [user_json(core, n, counts) for n in sorted(core.users)]}


def _lsuser(core, peer, arg, body):
    name = arg or peer.user
    if name != peer.user and not is_admin(core, peer.user):
        raise HQError(PERMISSION_DENIED, f"only an admin may look at user {name[:64]!r}")
    _user(core, name)
    return {"user": user_json(core, name, core.store.count_by_user(name))}


def _user_enabled(enabled):
    def change(core, peer, name, body):
        user = _user(core, name)
        others = [n for n, u in core.users.items()
                  if n != name and u["enabled"] and "ADMIN" in u["roles"]]
        if not enabled and "ADMIN" in user["roles"] and not others:
            raise HQError(PERMISSION_DENIED, f"{name} is the last enabled admin: enable or "
                          "add another admin first")
        core.set_user_enabled(name, enabled)
        return {"user": name, "enabled": enabled}
    return change


def _jobs(core, peer, arg, body):
    """Jobs of every user (or of `for_user`), one page at a time."""
    owner = p.field(body, "for_user", str, "") or None
    if owner is not None:
        _user(core, owner)
    return listing(core, owner, body)


def _reload(core, peer, arg, body):
    """Re-read cluster.tab and users: new hosts appear, removed hosts drain (no new work)."""
    etc = core.settings.etc
    entries = config.load_cluster(etc)
    users = config.load_users(etc) + [(config.current_user(), ["USER", "ADMIN"])]
    core.store.add_hosts(entries)
    core.store.add_users(users)
    removed = fleet.configure_hosts(core, entries)
    core.users_configured(users, keep_roles_of=config.current_user())
    return {"hosts": len(entries), "removed": removed, "users": len(core.users)}


def _adduser(core, peer, name, body):
    """Register a z85 CURVE public key (body `key`) for user `name` (added with USER if new)."""
    key = p.field(body, "key", str)
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise HQError(BAD_REQUEST, f"bad user name {name[:64]!r}")
    if len(key) != 40 or not _is_z85(key):
        raise HQError(BAD_REQUEST, "key must be a 40-character z85 CURVE public key")
    core.store.set_user_key(name, key)
    roles = core.user_key_added(name, key)
    log.info("user %s registered with key %s...", name, key[:8])
    return {"user": name, "key": key, "roles": sorted(roles)}


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
