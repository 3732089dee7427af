"""Placement: pending jobs x hosts -> assignments, a pure function (no sockets, database or
clock); see "Scheduling" in docs/architecture.md for the queues, order and claims (hosts held for starving wide jobs)."""

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

from hq.model import ACTIVE, UP

RESERVE_AFTER_S = 300.0


def job_shape(job):
    """What a job demands of a host: jobs with equal shapes fit the same hosts."""
    return (job.cores, job.memory, job.host_req, job.group_req, job.exclude_hosts,
            job.reservation)


class JobQueue:
    """Pending jobs of one (priority, user, shape), taken in job id order. New jobs come with
    rising ids and are appended to `jobs`; a job added below the newest id (requeued, released)
    waits in `older`, merged in by `ordered`. (Re-sorting the whole queue for each such job
    cost 86 % of the loop when 10,000 agents' jobs were requeued beside 1 M waiting.)"""
    __slots__ = ("key", "jobs", "older", "older_ids")

    def __init__(self, key):
        self.key = key
        self.jobs = OrderedDict()       # id -> job, ids rising; O(1) removal anywhere, O(1) head
        self.older = {}                 # id -> job added below the newest id of `jobs`
        self.older_ids = []             # `older`'s ids sorted (None: to be sorted again)

    def add(self, job):
        if job.id in self.jobs:
            self.jobs[job.id] = job
        elif job.id in self.older:
            self.older[job.id] = job
        elif self.jobs and job.id < next(reversed(self.jobs)):
            self.older[job.id] = job
            self.older_ids = None
        else:
            self.jobs[job.id] = job

    def pop(self, job_id):
        job = self.jobs.pop(job_id, None)
        return self.older.pop(job_id) if job is None else job

    def get(self, job_id):
        job = self.jobs.get(job_id)
        return self.older[job_id] if job is None else job

    def __len__(self):
        return len(self.jobs) + len(self.older)

    def values(self):
        """Every job, in no particular order."""
        yield from self.jobs.values()
        yield from self.older.values()

    def ordered(self):
        """An iterator over the jobs in id order (the queue must not change meanwhile)."""
        if not self.older:
            return iter(self.jobs.values())
        self.tidy()
        older = self.older
        return heapq.merge((older[i] for i in self.older_ids if i in older),
                           self.jobs.values(), key=_job_id)

    def tidy(self):
        """Sort the ids of `older` (O(k log k) for its k jobs) and drop those that left."""
        if self.older_ids is None or len(self.older_ids) > 2 * len(self.older) + 16:
            self.older_ids = sorted(self.older)


def _job_id(job):
    return job.id


class PendingIndex:
    """The pending jobs, grouped into queues by (priority, user, shape)."""

    def __init__(self):
        self.queues = {}                # (priority, user, shape) -> JobQueue
        self.key_of = {}                # job id -> queue key

    def add(self, job):
        key = (job.priority, job.user, job_shape(job))
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = JobQueue(key)
        queue.add(job)
        self.key_of[job.id] = key

    def remove(self, job_id):
        """Take a job out; returns it, or None when it was not pending."""
        key = self.key_of.pop(job_id, None)
        if key is None:
            return None
        queue = self.queues[key]
        job = queue.pop(job_id)
        if not len(queue):
            del self.queues[key]
        return job

    def get(self, job_id):
        key = self.key_of.get(job_id)
        return None if key is None else self.queues[key].get(job_id)

    def tidy(self):
        """Sort the older jobs of queues that took some (call between passes)."""
        for queue in self.queues.values():
            queue.tidy()

    def users(self):
        return {key[1] for key in self.queues}

    def ahead_of(self, job):
        """Pending jobs of a higher priority than `job` (cost: one step per queue)."""
        return sum(len(q) for key, q in self.queues.items() if key[0] > job.priority)

    def values(self):
        for queue in self.queues.values():
            yield from queue.values()

    def __len__(self):
        return len(self.key_of)

    def __contains__(self, job_id):
        return job_id in self.key_of


# -- hosts -------------------------------------------------------------------------------------
def host_fits(job, host, user=None):
    """Whether `host` could ever take `job` (ignoring slots in use right now); with `user`, also
    whether that user has an agent there."""
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
    return user is None or user in host.agents


def can_ever_run(job, hosts):
    return any(host_fits(job, h) for h in hosts if h.slots)


def usable(host):
    return host.state == ACTIVE and host.status == UP and host.in_config and bool(host.agents)


def held_back(host):
    """Reserved slots (hq-reservation) that no job of their code uses yet."""
    return sum(max(0, slots - host.reserved_used.get(code, 0))
               for code, slots in host.reserved.items()) if host.reserved else 0


def offer(host, outside_load=True, reserved=True):
    """Slots a host offers now: max slots minus slots in use, minus the cores busy with work
    from outside hq beyond the cores hq does not claim (max slots below the core count), minus
    unused reserved slots (kept for jobs of their code) unless `reserved` is False."""
    free = host.slots - host.slots_used - (held_back(host) if reserved else 0)
    if outside_load and host.cores and host.foreign_load > 0:
        spare = max(0, host.cores - host.slots)
        free -= max(0, int(host.foreign_load - spare + 0.5))
    return max(0, free)


def memory_free(host):
    """Memory a new job may claim: reported available, and never more than the total minus
    what hq jobs placed there asked for (the report lags behind a just-started job)."""
    if not host.memory_total:
        return 1 << 62
    return max(0, min(host.mem_available or host.memory_total,
                      host.memory_total - host.mem_reserved))


class HostPool:
    """Free slots and memory of usable hosts during one pass, in buckets by free slots."""

    def __init__(self, hosts, claimed, outside_load):
        self.hosts = {h.name: h for h in hosts if usable(h)}
        self.base = {name: offer(h, outside_load, False) for name, h in self.hosts.items()}
        self.held = {name: held_back(h) for name, h in self.hosts.items()}
        self.free = {name: max(0, self.base[name] - self.held[name]) for name in self.hosts}
        self.code_free = {(name, code): max(0, slots - h.reserved_used.get(code, 0))
                          for name, h in self.hosts.items() for code, slots in h.reserved.items()}
        self.memory = {name: memory_free(h) for name, h in self.hosts.items()}
        self.claimed = claimed             # host name -> the starving job that claimed it
        self.claiming_users = set()        # users with a job holding a claim
        self.total_free = sum(self.free.values()) + sum(self.code_free.values())
        self.scopes = {}                   # None (all) or group -> [ {name: None} per free count ]
        self.top = max(self.free.values(), default=0)

    def _buckets(self, scope):
        buckets = self.scopes.get(scope)
        if buckets is None:
            buckets = [dict() for _ in range(self.top + 1)]
            for name in sorted(self.hosts):
                if scope is None or scope in self.hosts[name].groups:
                    buckets[self.free[name]][name] = None
            self.scopes[scope] = buckets
        return buckets

    def _ok(self, job, name):
        host = self.hosts[name]
        holder = self.claimed.get(name)
        return ((holder is None or holder == job.id) and self.free[name] >= job.cores
                and (not job.memory or self.memory[name] >= job.memory)
                and host_fits(job, host, job.user))

    def _code_ok(self, job, name):
        return (self.code_free.get((name, job.reservation), 0) >= job.cores
                and self.base[name] >= job.cores
                and (not job.memory or self.memory[name] >= job.memory)
                and host_fits(job, self.hosts[name], job.user))

    def find(self, job, claimed_host=None):
        """The best host for `job` now, or None."""
        if job.reservation:         # only the slots of its reservation, fullest host first
            fits = [n for n in sorted(self.hosts) if (n, job.reservation) in self.code_free
                    and self._code_ok(job, n)]
            return min(fits, key=lambda n: self.code_free[(n, job.reservation)], default=None)
        if claimed_host is not None and claimed_host in self.hosts \
                and self._ok(job, claimed_host):
            return claimed_host
        if job.host_req:
            return job.host_req if job.host_req in self.hosts and self._ok(job, job.host_req) \
                else None
        buckets = self._buckets(job.group_req or None)
        for count in range(job.cores, self.top + 1):
            for name in buckets[count]:
                if self._ok(job, name):
                    return name
        return None

    def claim(self, job, claims):
        """Claim for a wide job that waited too long the host that could take it with the
        most free slots now (it fills up soonest): nothing else starts there meanwhile.
        One claim per user, and at most a tenth of the hosts, so claimed hosts stay few
        (a user's next wide job gets its host once the first one runs)."""
        if job.user in self.claiming_users or len(claims) >= max(1, len(self.hosts) // 10):
            return
        best = None
        for name, host in self.hosts.items():
            if name not in self.claimed and host_fits(job, host, job.user) and (
                    best is None or (self.free[name], name) > (self.free[best], best)):
                best = name
        if best is not None:
            self.claimed[best] = job.id
            self.claiming_users.add(job.user)
            claims[job.id] = best

    def take(self, job, name):
        old = self.free[name]
        self.base[name] -= job.cores
        if job.reservation:
            self.code_free[(name, job.reservation)] -= job.cores
            self.held[name] -= job.cores
        new = max(0, self.base[name] - self.held[name])
        self.free[name] = new
        self.memory[name] -= job.memory
        self.total_free -= job.cores + old - new if job.reservation else job.cores
        if new == old:
            return
        host = self.hosts[name]
        for scope, buckets in self.scopes.items():
            if scope is None or scope in host.groups:
                del buckets[old][name]
                buckets[new][name] = None


@dataclass
class Placement:
    """The outcome of one pass."""
    assignments: list = field(default_factory=list)   # [(job, host name)]
    claims: dict = field(default_factory=dict)        # job id -> host claimed for it
    examined: int = 0                                 # jobs looked at (placed or not)


def place(index, hosts, user_slots=None, now=0.0, claims=None, disabled_users=(),
          cluster_active=True, reserve_after_s=RESERVE_AFTER_S, outside_load=True, limit=None):
    """One placement pass. Does not modify its inputs; the caller dispatches the assignments
    and keeps `claims` (hosts held for starving wide jobs) for the next pass."""
    hosts = list(hosts)
    claims = {j: h for j, h in (claims or {}).items()
              if j in index and index.get(j).user not in disabled_users}
    result = Placement(claims=claims)
    if not cluster_active or not len(index):
        return result
    pool = HostPool(hosts, {h: j for j, h in claims.items()}, outside_load)
    pool.claiming_users = {index.get(j).user for j in claims}
    used = dict(user_slots or {})
    overdue = now - reserve_after_s
    levels = {}
    for key, queue in index.queues.items():
        if key[1] not in disabled_users:
            levels.setdefault(key[0], []).append(queue)
    for priority in sorted(levels, reverse=True):
        if pool.total_free <= 0 or (limit and len(result.assignments) >= limit):
            break
        _place_level(levels[priority], pool, used, result, overdue, limit)
    for job, _ in result.assignments:
        claims.pop(job.id, None)
    return result


def _place_level(queues, pool, used, result, overdue, limit):
    """Fair share among the users' queues of one priority: the user with fewer slots in use
    goes next; a queue whose head finds no host sits out the rest of the pass."""
    heap, cursors = [], {}
    for queue in queues:
        jobs = queue.ordered()
        head = next(jobs)
        cursors[queue.key] = (jobs, head)
        heap.append((used.get(queue.key[1], 0), head.id, queue.key))
    heapq.heapify(heap)
    while heap and pool.total_free > 0 and not (limit and len(result.assignments) >= limit):
        slots, head_id, key = heapq.heappop(heap)
        user = key[1]
        if slots != used.get(user, 0):            # the user got slots since: re-queue
            heapq.heappush(heap, (used.get(user, 0), head_id, key))
            continue
        jobs, job = cursors[key]
        result.examined += 1
        name = pool.find(job, result.claims.get(job.id))
        if name is None:
            if job.cores > 1 and job.submitted <= overdue and job.id not in result.claims:
                pool.claim(job, result.claims)
            continue
        pool.take(job, name)
        result.assignments.append((job, name))
        used[user] = used.get(user, 0) + job.cores
        following = next(jobs, None)
        if following is not None:
            cursors[key] = (jobs, following)
            heapq.heappush(heap, (used[user], following.id, key))



# -- why a job waits ------------------------------------------------------------------------
def explain(job, hosts, index, claims, outside_load=True):
    """Why a pending job (free of held/dependency/user/cluster reasons) is not running now."""
    hosts = list(hosts)
    fitting = [h for h in hosts if host_fits(job, h) and h.in_config]
    if not fitting:
        return "no host fits"
    active = [h for h in fitting if h.state == ACTIVE and h.status == UP]
    if not active:
        names = ", ".join(sorted(h.name for h in fitting)[:5])
        return f"host inactive: every host that fits is inactive or down ({names})"
    with_agent = [h for h in active if job.user in h.agents]
    if not with_agent:
        return "starting agents: no agent of yours runs on a host that fits yet"
    if job.reservation:
        room = [max(0, h.reserved.get(job.reservation, 0)
                    - h.reserved_used.get(job.reservation, 0)) for h in with_agent]
        if not any(job.reservation in h.reserved for h in hosts):
            return f"no host fits: reservation {job.reservation} no longer exists"
        return (f"resources: reservation {job.reservation} has {max(room, default=0)} free "
                f"slots on one host, the job needs {job.cores}")
    mine = claims.get(job.id)
    if mine:
        return f"resources: host {mine} is reserved for this job until {job.cores} slots free"
    held = {h: j for j, h in claims.items()}
    free = [h for h in with_agent if offer(h, outside_load) >= job.cores
            and (not job.memory or memory_free(h) >= job.memory)]
    if free and all(h.name in held for h in free):
        return f"resources: host {free[0].name} is reserved for job {held[free[0].name]}"
    ahead = index.ahead_of(job)
    if ahead:
        return f"priority: {ahead} pending jobs have a higher priority"
    if free:
        return "priority: jobs ahead of it in fair-share order take the free slots"
    return missing(job, with_agent, outside_load)


def missing(job, hosts, outside_load):
    """What a pending job lacks on the hosts that could run it, named: memory when hosts have
    its slots free, else slots (with what outside load and reservations keep of them)."""
    slotted = [h for h in hosts if offer(h, outside_load) >= job.cores]
    if slotted:
        most = max(memory_free(h) for h in slotted)
        return (f"resources: needs {job.memory >> 20} MB of memory; hosts with {job.cores} "
                f"free slots have at most {most >> 20} MB free")
    best = max(hosts, key=lambda h: offer(h, outside_load))
    notes = []
    outside = offer(best, False) - offer(best, outside_load)
    if outside:
        notes.append(f"{outside} taken by outside load")
    if held_back(best):
        notes.append(f"{held_back(best)} held for reservations")
    where = f" ({', '.join(notes)} on {best.name})" if notes else ""
    return (f"resources: needs {job.cores} slots; hosts that fit have at most "
            f"{offer(best, outside_load)} free{where}")
