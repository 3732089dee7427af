"""Hosts and the agents on them: the only writer of host facts, liveness and the agent maps.

Liveness is per agent (one per user per host): a silent agent is gone on its own, its user's
attempts there wait a grace for a successor to adopt them; a host is down when all its agents are.
The host's reporting agent heartbeats every heartbeat_s with the metrics (IDLE_EVERY times less
often while no hq job is held on the host); the other users' agents only prove they live, every
OTHERS_EVERY heartbeats (10 users on 1,000 hosts: 2,000 heartbeats a second instead of 5,000).
"""

import logging
import time
from dataclasses import dataclass

from hq import protocol as p
from hq.model import ACTIVE, DOWN, UNKNOWN, UP, Host

log = logging.getLogger("hq.fleet")

INT32_LIMIT = 1 << 31
METRIC_FIELDS = ("load1", "load5", "load15", "cpu_percent", "mem_available", "nprocs",
                 "foreign_load")
SILENT_HEARTBEATS = 3
OTHERS_EVERY = 3            # a host's other agents heartbeat this many times less often
IDLE_EVERY = 2              # and its reporter, while the host holds no hq job (an idle agent
                            # then costs its host half as much; its metrics are 2 beats old)
HOST_ROW_EVERY_S = 30.0     # a host's row (metrics, last_seen) is written at most this often:
                            # heartbeats alone then commit nothing (no fsync per turn)


@dataclass(slots=True)
class Agent:
    """One user's agent on one host, as the server knows it."""
    identity: bytes
    user: str
    host: str
    registered: float
    last_seen: float
    deadline: float = 0.0   # gone if not heard from by then: 3 of its heartbeat intervals after
                            # the last message, never earlier than an interval it was told


def is_admin(core, user):
    return "ADMIN" in core.users.get(user, {}).get("roles", ())


# -- registration and departure ------------------------------------------------------------------
def agent_registered(core, identity, user, host, facts, now):
    """An agent of `user` on `host` registered (a successor replaces its predecessor)."""
    old = host.agents.get(user)
    if old is not None and old != identity:
        core.agents.pop(old, None)
    agent = core.agents[identity] = Agent(identity, user, host.name, now, now,
                                          now + SILENT_HEARTBEATS * core.settings.heartbeat_s)
    host.agents[user] = identity
    core.gone.pop((user, host.name), None)
    core.changed = True
    _take_facts(core, host, user, facts)
    if not host.reporter or host.reporter not in host.agents or (
            is_admin(core, user) and not is_admin(core, host.reporter)):
        host.reporter = user
    host.status_reason = ""
    core.writes.update_host(host.name, cores=host.cores, memory_total=host.memory_total,
                            os=host.os, status=UP, status_reason="")
    return agent


def _take_facts(core, host, user, facts):
    """Cores, memory and OS come from the first agent that reports them (since this server
    started), or from an admin's agent; any other different report, even of the first
    reporter's user, is logged and shown, never believed (a user cannot grow a shared host)."""
    cores, memory, os_name = facts
    if not host.cores or not host.facts_from or is_admin(core, user):
        host.cores, host.memory_total, host.os = cores, memory, os_name
        host.facts_from, host.facts_note = user, ""
        return
    if (cores, memory) != (host.cores, host.memory_total):
        host.facts_note = (f"agent of {user} reports {cores} cores, {memory >> 20} MB; kept "
                           f"{host.cores} cores, {host.memory_total >> 20} MB from {host.facts_from}")
        log.warning("host %s: %s", host.name, host.facts_note)


def agent_forgotten(core, agent):
    """Forget an agent (it left, was stopped or went silent)."""
    core.agents.pop(agent.identity, None)
    host = core.hosts.get(agent.host)
    if host is None:
        return
    if host.agents.get(agent.user) == agent.identity:
        del host.agents[agent.user]
    if host.reporter == agent.user:
        host.reporter = _next_reporter(core, host)
    core.changed = True


def _next_reporter(core, host):
    users = sorted(host.agents, key=lambda u: (not is_admin(core, u),
                                               _registered(core, host.agents[u])))
    return users[0] if users else ""


def _registered(core, identity):
    agent = core.agents.get(identity)
    return agent.registered if agent else 0.0


def agent_left(core, agent, why):
    """An agent exits at its own or the server's wish (BYE, cleanup): nothing is lost."""
    agent_forgotten(core, agent)
    core.spawn_asked.pop((agent.user, agent.host), None)   # new work may start it at once
    host = core.hosts[agent.host]
    if not host.agents:
        host.status, host.status_reason = UNKNOWN, why
        core.writes.update_host(host.name, status=UNKNOWN, status_reason=why)


def agent_gone(core, agent, now, why):
    """An agent went silent (or cannot be reached): its user's attempts on the host wait for
    the grace; a new agent is asked for at once; the host is down if no agent is left."""
    agent_forgotten(core, agent)
    host = core.hosts[agent.host]
    if core.attempts_of(host.name, agent.user):
        core.gone[(agent.user, host.name)] = now
    log.warning("agent of %s on %s gone: %s", agent.user, host.name, why)
    request_agents(core, only_user=agent.user, force=True)
    if not host.agents and host.status == UP:
        host_down(core, host, why)


def host_down(core, host, why):
    host.status, host.status_reason = DOWN, why
    core.writes.update_host(host.name, status=DOWN, status_reason=why)
    log.warning("host %s down: %s", host.name, why)


def host_unreachable(core, host, user, reason):
    """The user-server could not start the user's agent on a host: lscluster says why."""
    reason = f"{user}: {reason}"[:255]
    if host.status != UP:
        host.status_reason = reason
        core.writes.update_host(host.name, status_reason=reason)
    log.warning("host %s unreachable for %s", host.name, reason)


def restart_window(core):
    """How long after a restart the agents have to come back: the silence of the longest
    interval (the interval each kept is not known)."""
    return SILENT_HEARTBEATS * OTHERS_EVERY * core.settings.heartbeat_s


def expect_agents(core, now):
    """After a restart: each user with attempts on a host has the silence of its agent's
    longest interval (from now: the interval it kept is not known) for an agent to come back,
    then the grace, as if its agent had just gone silent: its lease holds that long."""
    timeout = restart_window(core)
    for host_name, keys in core.on_host.items():
        for user in {core.attempts[key].user for key in keys}:
            core.gone[(user, host_name)] = now + timeout
        host = core.hosts.get(host_name)
        if host is not None and keys:
            host.status, host.last_seen = UP, now


# -- heartbeats ------------------------------------------------------------------------------------
def interval(core, agent):
    """How often `agent` should heartbeat: the host's reporter every heartbeat_s (IDLE_EVERY
    times less often while no job is held there), the others OTHERS_EVERY times less often."""
    every = core.settings.heartbeat_s
    if core.hosts[agent.host].reporter != agent.user:
        return OTHERS_EVERY * every
    return every if core.on_host.get(agent.host) else IDLE_EVERY * every


def declared(core, body):
    """The heartbeat interval an agent says it keeps (an agent that does not say keeps
    heartbeat_s), within what the server may ask of it."""
    every = body.get("every")
    low = core.settings.heartbeat_s
    if not p.is_number(every):
        return low
    return min(max(every, low), OTHERS_EVERY * low)


def heard(core, agent, now, every):
    """A message of `agent`, which heartbeats every `every` seconds from now on: its
    deadline moves to 3 such intervals from now (never back: an interval it was told before
    may still be the one it keeps, and its lease was granted for it)."""
    agent.last_seen = now
    agent.deadline = max(agent.deadline, now + SILENT_HEARTBEATS * every)


def lease_for(core, every):
    """The lease an agent heartbeating every `every` seconds is granted: the configured one
    (for heartbeat_s) plus the longer silence the server waits before counting it gone."""
    return core.settings.agent_lease_s + SILENT_HEARTBEATS * (every - core.settings.heartbeat_s)


def host_seen(core, agent, body, now):
    """An agent is alive; the host's reporting agent also brings the host's metrics."""
    agent.last_seen = now
    host = core.hosts[agent.host]
    host.last_seen = now
    back = host.status != UP
    if back:
        host.status = UP
        core.changed = True
    if host.reporter and host.reporter != agent.user:
        return
    for name in METRIC_FIELDS:
        value = body.get(name)
        if p.is_number(value) and 0 <= value < INT32_LIMIT ** 2:
            setattr(host, name, value)
    if "foreign_load" in body and host.foreign_load > 0:
        host.foreign_load = max(0.0, host.foreign_load - _others_slots(core, host, agent.user))
    if back or now - core.host_rows.get(host.name, 0.0) >= HOST_ROW_EVERY_S:
        core.host_rows[host.name] = now
        core.writes.update_host(host.name, last_seen=now, status=UP,
                                **{n: getattr(host, n) for n in METRIC_FIELDS if n != "nprocs"})
    _sample_metrics(core, host, body, now)


def _others_slots(core, host, user):
    """Slots of other users' hq jobs on the host: the agent of `user` may not read their
    processes' environment, so it counted them as outside load."""
    return sum(a.cores for a in core.attempts_of(host.name) if a.user != user)


def _sample_metrics(core, host, body, now):
    if now - core.last_sample.get(host.name, 0) < core.settings.metrics_interval_s:
        return
    core.last_sample[host.name] = now
    nprocs = body.get("nprocs")
    core.writes.metrics.append((host.name, now, host.load1, host.load5, host.load15,
                                host.cpu_percent, host.mem_available,
                                nprocs if p.is_int(nprocs, 0, 1 << 31) else None,
                                host.foreign_load))


# -- periodic -------------------------------------------------------------------------------------
def check_liveness(core, now):
    """Agents silent for 3 heartbeats are gone (counted up to when the loop last found its
    socket empty: a loop behind its messages has not yet read what they sent); attempts whose
    agent stayed away for the grace are requeued or lost (never while commits fail: the
    decision must be recorded first)."""
    heard_since = core.heard_since(now)
    silent = heard_since - SILENT_HEARTBEATS * core.settings.heartbeat_s
    for agent in [a for a in core.agents.values() if a.deadline < heard_since]:
        agent_gone(core, agent, now, f"silent since {time.ctime(agent.last_seen)}")
    for host in core.hosts.values():      # up after a restart, and no agent came back
        if host.status == UP and not host.agents and (host.last_seen or 0) < silent:
            host_down(core, host, f"silent since {time.ctime(host.last_seen or 0)}")
    grace = core.settings.requeue_grace_s
    for (user, host_name), since in list(core.gone.items()):
        if host_name in core.hosts and core.hosts[host_name].agents.get(user):
            del core.gone[(user, host_name)]
            continue
        if now - since < grace:
            if now >= since:
                request_agents(core, only_user=user)      # and again during the grace
            continue
        if not core.db_ok:
            continue
        del core.gone[(user, host_name)]
        host = core.hosts.get(host_name)
        why = f"host {host_name} {host.status_reason}" if host else f"host {host_name} removed"
        for held in core.attempts_of(host_name, user):
            core.attempt_gone(held.job_id, held.number, now, why)


def request_agents(core, only_user=None, force=False):
    """Ask users' user-servers to start agents on active hosts where their jobs could run
    (users with pending jobs, or `only_user`); returns the host names asked for."""
    asked_for = []
    retry = core.settings.spawn_retry_s
    for user in [only_user] if only_user else sorted(core.pending.users()):
        identity = core.user_servers.get(user)
        if identity is None:
            continue
        hosts = [h for h in core.hosts.values()
                 if h.state == ACTIVE and h.in_config and user not in h.agents
                 and (force or core.now - core.spawn_asked.get((user, h.name), -retry) >= retry)]
        if not hosts:
            continue
        core.outbox.send(identity, p.SPAWN, {"hosts": [{"name": h.name, "address": h.address}
                                                       for h in hosts]})
        log.info("asking user-server of %s to start agents on %s", user,
                 ", ".join(h.name for h in hosts))
        for h in hosts:
            core.spawn_asked[(user, h.name)] = core.now
        asked_for += [h.name for h in hosts]
    return asked_for


def stop_agent(core, host, user):
    """Tell a user's idle agent to exit and forget it (cleanup)."""
    agent = core.agents.get(host.agents.get(user))
    if agent is None:
        return
    core.outbox.send(agent.identity, p.STOP, {})
    agent_left(core, agent, "agents stopped")
    log.info("agent of %s on %s asked to stop", user, host.name)


def undeliverable(core, identity, now):
    """A message could not be routed to `identity`: that agent or user-server is gone."""
    agent = core.agents.get(identity)
    if agent is not None:
        agent_gone(core, agent, now, "cannot be reached")
        key = (agent.user, agent.host)
        if key in core.gone:    # the grace counts from when silence would have made it gone:
            core.gone[key] = max(now, agent.deadline)    # the agent's lease (fencing) holds
                                                         # until then
    for user, known in list(core.user_servers.items()):
        if known == identity:
            del core.user_servers[user]     # its successor will say HELLO


# -- administration --------------------------------------------------------------------------------
def set_host_state(core, host, state):
    """hq-admin activatehost/deactivatehost: an inactive host gets no new work."""
    host.state = state
    core.changed = True
    core.writes.update_host(host.name, state=state)


def configure_hosts(core, entries):
    """cluster.tab was read again: new hosts appear, removed hosts drain; returns the removed."""
    listed = set()
    for entry in entries:
        listed.add(entry.name)
        host = core.hosts.get(entry.name)
        if host is None:
            host = core.hosts[entry.name] = Host(name=entry.name, state=entry.state)
        host.address, host.max_slots = entry.address, entry.max_slots
        host.groups, host.in_config = tuple(entry.groups), True
    removed = sorted(name for name, host in core.hosts.items()
                     if name not in listed and host.in_config)
    for name in removed:
        core.hosts[name].in_config = False
    core.changed = True
    return removed
