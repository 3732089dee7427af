"""Parking: a user's pending and held jobs beyond `limit` live jobs stay in the database only,
so hq-server's memory is bounded however many lines are piped in; they are loaded in id order
as the user's jobs in memory run down (or at once when a request names them)."""

import collections
import logging

from hq.model import HELD, PENDING, TERMINAL

log = logging.getLogger("hq.server.parking")

WAITING = (PENDING, HELD)
RESTART_LOAD = 5000     # waiting jobs of a user a restarted server loads before serving ...
REFILL_ROWS = 5000      # ... and parked jobs it loads per tick afterwards, all users together


class Parking:
    def __init__(self, core, store, limit):
        self.core = core
        self.store = store
        self.limit = limit
        self.parked = {}                      # user -> first job id that may be parked
        self.live = collections.Counter()     # user -> live jobs in memory
        self.lean_until = 0.0     # after a restart: refill only users about to run short
        core.listeners.append(self.on_transition)

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
        """Load parked jobs of users whose jobs in memory have run down to half the limit, at
        most REFILL_ROWS a tick (a tick must stay short: agents wait for their replies). While
        a restarted server's agents come back, only users with restart_load() jobs in memory
        or fewer: refilling 10 users to half the limit took most of the loop for 17 s, while
        10,000 agents had to register before their leases ran out."""
        budget = REFILL_ROWS
        low = self.restart_load() if now < self.lean_until else self.limit - self.limit // 2
        for user, first in list(self.parked.items()):
            room = min(self.limit - self.live[user], budget)
            if self.live[user] > low or room <= 0:
                continue
            budget -= room
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
                  and i not in self.core.jobs]
        if wanted:
            self.activate([r for r in self.store.get_jobs(wanted, user)
                           if r["state"] in WAITING], now)

    def activate(self, rows, now):
        """Make parked jobs live, as a restarted server does (dependencies included)."""
        self.loaded(self.core.make_live(rows, self.store, now))

    def cancel_batch(self, user, batch, now):
        """Cancel the parked jobs of a batch in the database (with this turn's commit)."""
        first = self.parked.get(user)
        if first is not None:
            self.core.writes.parked_cancels.append((user, batch, first, now))
            self.core.tally.stale = True        # rows the core does not count one by one

    def count_parked(self, user, batch):
        """How many jobs of a batch wait in the database only."""
        return self.store.count_parked(user, batch, self.parked.get(user))

    def restart_load(self):
        """How many waiting jobs per user a restarted server loads before it serves: the rest
        is loaded by `refill`, tick after tick (1 M waiting jobs would take a minute)."""
        return min(self.limit, RESTART_LOAD)

    def after_load(self):
        """Count what a restarted server loaded; users with `restart_load()` waiting jobs
        loaded may have more in the database."""
        waiting = collections.defaultdict(list)
        for job in self.core.jobs.values():
            if job.state in WAITING:
                waiting[job.user].append(job.id)
        self.loaded(self.core.jobs.values())
        for user, ids in waiting.items():
            if len(ids) >= self.restart_load():
                self.parked[user] = max(ids) + 1
