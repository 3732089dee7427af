"""Parking: a user's pending and held jobs beyond `limit` live jobs stay in the database only,
so hq-server's memory is bounded however many lines are piped in; they are loaded in id order
as the user's jobs in memory run down (or at once when a request names them)."""

import collections
import logging

from hq.model import HELD, PENDING, TERMINAL, Job
from hq.server.core import dependencies

log = logging.getLogger("hq.server.parking")

WAITING = (PENDING, HELD)


class Parking:
    def __init__(self, state, store, limit):
        self.state = state
        self.store = store
        self.limit = limit
        self.parked = {}                      # user -> first job id that may be parked
        self.live = collections.Counter()     # user -> live jobs in memory
        state.listeners.append(self.on_transition)

    def on_transition(self, job, old, new, now):
        if new in TERMINAL:
            self.live[job.user] -= 1

    def loaded(self, jobs):
        """Count jobs made live in memory (at start or by `admit`)."""
        for job in jobs:
            self.live[job.user] += 1

    def admit(self, jobs):
        """Of a committed chunk, the jobs to keep in memory; the others stay parked."""
        if not jobs:
            return jobs
        user = jobs[0].user
        room = 0 if user in self.parked else max(0, self.limit - self.live[user])
        if room < len(jobs):
            first = jobs[room].id
            self.parked[user] = min(self.parked.get(user, first), first)
            log.info("%s has %d jobs in memory: jobs from %s wait in the database", user,
                     self.live[user] + room, first)
        self.loaded(jobs[:room])
        return jobs[:room]

    def refill(self, now, skip_batches=()):
        """Load parked jobs of users whose jobs in memory have run down to half the limit."""
        for user, first in list(self.parked.items()):
            room = self.limit - self.live[user]
            if room < self.limit // 2:
                continue
            rows = self.store.parked_jobs(user, first, room)
            if len(rows) < room:
                del self.parked[user]
            else:
                self.parked[user] = rows[-1]["id"] + 1
            self.activate([r for r in rows if r["batch"] not in skip_batches], now)

    def unpark(self, user, ids, now):
        """Load the parked jobs among `ids` now (a request is about to change them)."""
        first = self.parked.get(user)
        wanted = [i for i in ids if first is not None and i >= first
                  and i not in self.state.jobs]
        if wanted:
            self.activate([r for r in self.store.get_jobs(wanted, user)
                           if r["state"] in WAITING], now)

    def activate(self, rows, now):
        """Make parked jobs live, as a restarted server does (dependencies included)."""
        state = self.state
        rows = [r for r in rows if r["id"] not in state.jobs]
        if not rows:
            return
        missing = {r["batch"] for r in rows} - set(state.envs)
        if missing:
            state.envs.update(self.store.batch_envs(missing))
        jobs = [job_from_row(r) for r in rows]
        for job in jobs:
            state.jobs[job.id] = job
        self.loaded(jobs)
        ended = {d for job in jobs for d in dependencies(job) if d not in state.jobs}
        ended = {r["id"]: r["state"] for r in self.store.get_jobs(sorted(ended))} if ended else {}
        for job in jobs:
            state.watch_dependencies(job)
        for job in jobs:
            state.settle_dependencies(job, ended, now)
        state.changed = True

    def cancel_batch(self, user, batch, now):
        """Cancel the parked jobs of a batch in the database (with this turn's commit)."""
        first = self.parked.get(user)
        if first is not None:
            self.state.writes.parked_cancels.append((user, batch, first, now))


def job_from_row(row):
    job = Job(**{k: v for k, v in row.items() if k in Job.__dataclass_fields__ and k != "signal"})
    job.signal = row["term_signal"]
    return job


def after_load(parking, state):
    """Count what a restarted server loaded; users with `limit` waiting jobs loaded may have
    more in the database."""
    waiting = collections.defaultdict(list)
    for job in state.jobs.values():
        if job.state in WAITING:
            waiting[job.user].append(job.id)
    parking.loaded(state.jobs.values())
    for user, ids in waiting.items():
        if len(ids) >= parking.limit:
            parking.parked[user] = max(ids) + 1
