"""Jobs by user and state for status requests, kept as jobs change: a status never scans the jobs
table (at 1,000,000 jobs one `GROUP BY state` held the loop a few hundred ms a request).

The core's transitions (a listener) and its accepted submissions change the counts; what changes
rows the core does not see one by one (a cancelled parked batch, the retention sweep, another
process's `hq-dbadmin --prune-before`) is caught by counting the database again after a commit:
at once when the loop knows of such a change, else every RECOUNT_S.
"""

import collections

RECOUNT_S = 600.0


class Tally:
    def __init__(self):
        self.counts = collections.Counter()     # (user, state) -> jobs
        self.stale = True                       # count the database again after the commit
        self.counted_at = 0.0

    def on_transition(self, job, old, new, now):
        self.counts[(job.user, old)] -= 1
        self.counts[(job.user, new)] += 1

    def accepted(self, jobs):
        """New jobs are in the database (live or parked), each in its first state."""
        for job in jobs:
            self.counts[(job.user, job.state)] += 1

    def due(self, now):
        return self.stale or now - self.counted_at >= RECOUNT_S

    def recount(self, store, now):
        """Count the database (right after a commit: it then holds every change the core made)."""
        self.counts = collections.Counter(store.count_by_user())
        self.stale, self.counted_at = False, now

    def states(self, user=None):
        """{state: jobs} of one user or of everybody."""
        totals = collections.Counter()
        for (owner, state), count in self.counts.items():
            if user is None or owner == user:
                totals[state] += count
        return totals
