"""While the database fails, a thread probes it so that hq-server's loop never blocks on it:
the loop tries to commit again only once a probe has reached the database.

A store that can be reached again cheaply (SQLite: a local file) is not probed; the loop just
retries after a backoff. For MySQL a probe is a fresh connection and `SELECT 1`.
"""

import logging
import threading
import time

log = logging.getLogger("hq.server")

FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0
PROBE_EVERY_S = 0.25     # the probe's longest pause between two connection attempts
SLOW_FAILURE_S = 0.5     # a failed commit that took longer (a hung database, not a refusal) ...
SUBMIT_TRY_S = 1.0       # ... lets a submission try the database itself only this much later


class DatabaseProbe:
    """`failed()` after a failing commit; `ready(now, submission)` says whether to try
    committing again. A submission tries at once (it is refused if that fails); after a slow
    failure, at most every SUBMIT_TRY_S, so that between two such tries agents hear from us."""

    def __init__(self, store):
        self.store = store
        self.remote = hasattr(store, "reachable")
        self.backoff = FIRST_BACKOFF_S
        self.retry_at = 0.0
        self.submit_at = 0.0
        self.reached = threading.Event()
        self.thread = None
        self.stop = threading.Event()

    def failed(self, now, took=0.0):
        """A commit failed after `took` seconds: back off, and (MySQL) probe from a thread
        until the database answers."""
        self.retry_at = now + self.backoff
        self.submit_at = now + (SUBMIT_TRY_S if took > SLOW_FAILURE_S else 0.0)
        self.backoff = min(MAX_BACKOFF_S, self.backoff * 2)
        if not self.remote:
            return
        self.reached.clear()
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._probe, name="db-probe", daemon=True)
            self.thread.start()

    def ready(self, now, submission=False):
        """Whether the loop may try the database again now (`submission`: to record one)."""
        if self.remote:
            return self.reached.is_set() or (submission and now >= self.submit_at)
        return submission or now >= self.retry_at

    def recovered(self):
        """A commit succeeded: the next failure starts with a short backoff again."""
        self.backoff = FIRST_BACKOFF_S

    def _probe(self):
        delay = FIRST_BACKOFF_S
        while not self.stop.is_set():
            started = time.monotonic()
            if self.store.reachable():
                log.info("database reachable again (probe took %.2fs)",
                         time.monotonic() - started)
                self.reached.set()
                return
            self.stop.wait(delay)
            delay = min(PROBE_EVERY_S, delay * 2)

    def close(self):
        self.stop.set()
