"""What requests show of jobs, hosts and users: database rows made public, plus what only the
live core knows (why a job waits, which host is claimed for it). Shared by user and admin handlers.
"""

from hq.jobview import iso, job_json
from hq.model import HELD, PENDING, STATES

MAX_REASONS = 200   # why-waiting costs a look at every host: only for short job lists


def jobs_json(core, rows):
    """Public dicts of job rows, in id order, with live reasons when the list is short."""
    jobs = [job_json(r) for r in sorted(rows, key=lambda r: r["id"])]
    if len(jobs) <= MAX_REASONS:
        live_reasons(core, jobs)
    return jobs


def live_reasons(core, jobs):
    """Fill in why each held or pending job waits, from the server's live state."""
    memo = {}           # jobs of one shape, user and priority wait for the same reason
    for j in jobs:
        live = core.jobs.get(j["id"])
        if live is not None and live.state in (HELD, PENDING):
            j["reason"] = core.waiting_reason(live, core.settings.outside_load, memo)
            claimed = core.claims.get(live.id)
            if claimed:
                j["reserved_host"] = claimed


def host_json(core, host, jobs=0, viewer_is_admin=True, viewer=None):
    """A host as lscluster shows it; a user who is not an admin sees only their own agent."""
    agents = sorted(host.agents) if viewer_is_admin else sorted({viewer} & set(host.agents))
    return {"name": host.name, "address": host.address, "state": host.state,
            "status": host.status, "in_config": host.in_config, "cores": host.cores,
            "slots_used": host.slots_used, "max_slots": host.slots, "jobs": jobs,
            "groups": list(host.groups), "load1": host.load1, "load5": host.load5,
            "load15": host.load15, "foreign_load": host.foreign_load,
            "cpu_percent": host.cpu_percent, "mem_available": host.mem_available,
            "memory_total": host.memory_total, "os": host.os, "agents": agents,
            "reserved_for": sorted(j for j, h in core.claims.items() if h == host.name),
            "heartbeat_age": round(core.now - host.last_seen, 1) if host.last_seen else None,
            "last_seen": iso(host.last_seen), "status_reason": host.status_reason,
            "facts_note": host.facts_note}


def user_json(core, name, counts):
    user = core.users[name]
    return {"name": name, "roles": sorted(user["roles"]), "enabled": user["enabled"],
            "slots_used": core.user_slots.get(name, 0),
            "agents": sorted(h.name for h in core.hosts.values() if name in h.agents),
            "counts": {s: counts.get((name, s), 0) for s in STATES}}
