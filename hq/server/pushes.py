"""ENDED pushes: the jobs of each user that ended in a turn go, in one message after the
commit that recorded them, to that user's user-server, which wakes the clients waiting for them.

A listener on the core's transitions collects terminal ones; `queue()` at the end of the turn
puts one ENDED per user into the outbox, which the loop sends only after a successful commit.
"""

from collections import defaultdict

from hq import protocol as p
from hq.model import TERMINAL


class Pushes:
    def __init__(self, core):
        self.core = core
        self.ended = defaultdict(list)    # user -> [[id, state, exit_code, batch], ...]

    def on_transition(self, job, old, new, now):
        if new in TERMINAL:
            self.ended[job.user].append([job.id, new, job.exit_code, job.batch])

    def queue(self):
        """One ENDED per user with a user-server for this turn's ends (sent after the commit;
        a user-server that is not there learns of them from its clients' RECHECK look)."""
        for user, jobs in self.ended.items():
            identity = self.core.user_servers.get(user)
            if identity is not None:
                self.core.outbox.send(identity, p.ENDED, {"jobs": jobs})
        self.ended.clear()


def attach(core):
    pushes = Pushes(core)
    core.listeners.append(pushes.on_transition)
    return pushes
