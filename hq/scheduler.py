"""Placement: pending jobs x hosts -> assignments. A pure function: no sockets, database or clock.

Order: higher priority first, then the user with fewer slots in use (fair share), then job id.
"""

import heapq

from hq.model import ACTIVE, UP


def host_fits(job, host, user):
    """Whether `host` could ever take `job` (ignoring slots in use right now)."""
    if job.host_req and host.name != job.host_req:
        return False
    if job.group_req and job.group_req not in host.groups:
        return False
    if job.exclude_hosts and host.name in job.exclude_hosts.split(","):
        return False
    if job.cores > host.slots:
        return False
    if job.memory and host.memory_total and job.memory > host.memory_total:
        return False
    return user in host.agents if user is not None else True


def can_ever_run(job, hosts):
    return any(host_fits(job, h, None) for h in hosts if h.slots)


def _order(pending_jobs, user_slots):
    """Jobs in placement order: priority, then fair share (re-evaluated as slots are given)."""
    by_priority = {}
    for job in pending_jobs:
        by_priority.setdefault(job.priority, {}).setdefault(job.user, []).append(job)
    for priority in sorted(by_priority, reverse=True):
        queues = by_priority[priority]
        heap = []
        for user, jobs in queues.items():
            jobs.sort(key=lambda j: j.id)
            heapq.heappush(heap, (user_slots.get(user, 0), jobs[0].id, user, 0))
        while heap:
            used, _, user, index = heapq.heappop(heap)
            job = queues[user][index]
            placed = yield job
            if placed:
                used += job.cores
                user_slots[user] = used
            if index + 1 < len(queues[user]):
                heapq.heappush(heap, (used, queues[user][index + 1].id, user, index + 1))


def place(pending_jobs, hosts, user_slots=None, cluster_active=True):
    """Assignments [(job, host_name)] for jobs that fit now. Does not modify its inputs."""
    if not cluster_active:
        return []
    usable = [h for h in hosts if h.state == ACTIVE and h.status == UP and h.agents]
    free = {h.name: h.free_slots for h in usable}
    mem = {h.name: h.mem_available for h in usable}
    total_free = sum(free.values())
    user_slots = dict(user_slots or {})
    assignments = []
    order = _order(pending_jobs, user_slots)
    job = next(order, None)
    while job is not None and total_free > 0:
        best = None
        for h in usable:
            if free[h.name] >= job.cores and host_fits(job, h, job.user) and (
                    not job.memory or mem[h.name] >= job.memory):
                if best is None or free[h.name] > free[best.name]:
                    best = h
        if best is not None:
            free[best.name] -= job.cores
            mem[best.name] -= job.memory
            total_free -= job.cores
            assignments.append((job, best.name))
        try:
            job = order.send(best is not None)
        except StopIteration:
            job = None
    return assignments
