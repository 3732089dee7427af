"""Waiting for jobs to end, woken by the user-server's pushes: hq-server sends ENDED after the
commit that recorded an end, the user-server hands it to clients that sent WATCH.

Polling is only the fallback: while the connection is lost (then WATCH again once it is
back), on the ZeroMQ path (whose socket cannot tell that the user-server has gone; pushes
still wake it), and with an older user-server that does not know WATCH. A RECHECK (the
user-server's link to hq-server was made again, say after a server restart) makes the
client look at everything again, so no end is missed.
"""

import collections
import time

from hq import protocol as p
from hq.errors import TIMEOUT, UNKNOWN_KIND, USER_SERVER_UNREACHABLE, HQError

CHUNK = 5000              # ids per DETAILS request
FALLBACK_MAX_S = 1.0      # polling interval grows to this while there are no pushes
PROGRESS_EVERY_S = 1.0    # a shown progress refreshes its running/pending counts this often
BATCH_GAP_S = 0.05        # wait --batch looks at its counts at most this often
LEASE_S = 60.0            # a ZeroMQ client's WATCH lasts this long unless renewed
ALL = None                # look at every job waited for


class Wakeups:
    """When to look again: `next(wanted)` blocks until a push names a wanted job (returns
    those ids) or everything must be looked at again (returns ALL); TIMEOUT past the end."""

    def __init__(self, client, timeout, poll_s, progress=False, batch=None):
        self.client = client
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.poll_s = poll_s
        self.progress = progress
        self.batch = batch
        self.pushing = False
        self.supported = True
        self.watched_at = 0.0
        self.next_full = time.monotonic() + PROGRESS_EVERY_S
        self.last = False      # the deadline passed: the caller looks a last time, then stops

    def watch(self):
        """Ask for pushes when not yet (or no longer) watching, or when the lease of a
        ZeroMQ watch is half gone: sent ahead of the look it precedes, answered with it."""
        now = time.monotonic()
        renew = self.client.transport != "stream" and now - self.watched_at > LEASE_S / 2
        if not self.supported or (self.pushing and not renew):
            return None
        try:
            req = self.client.send(p.WATCH, lease_s=LEASE_S)
        except HQError:
            return None
        self.watched_at = now
        return req

    def watched(self, req):
        """Take the answer to a WATCH sent before a look (after that look's answer)."""
        if req is None:
            return
        try:
            self.client.receive(req)
            self.pushing = True
        except HQError as exc:
            self.pushing = False
            if exc.code == UNKNOWN_KIND:      # an older user-server: polling it is
                self.supported = False

    def next(self, wanted):
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            if self.last:
                raise HQError(TIMEOUT, "deadline")
            self.last = True
            return ALL
        if not self.pushing or self.client.transport != "stream":
            return self._fallback(wanted, now)
        return self._pushed(wanted, now)

    def _until(self, now, *times):
        ends = [t for t in (self.deadline, *times) if t is not None]
        return max(0.0, min(ends) - now) if ends else None

    def _pushed(self, wanted, now):
        """Block on pushes (no polling) until one names a wanted job."""
        while True:
            wait = self._until(now, self.next_full if self.progress else None)
            try:
                pushes = self.client.pushes(wait)
            except HQError as exc:
                if exc.code != USER_SERVER_UNREACHABLE:
                    raise
                self.pushing = False       # the next look reconnects (and WATCHes again)
                return ALL
            hits = self.hits(pushes, wanted)
            now = time.monotonic()
            if hits is ALL or hits or (self.deadline is not None and now >= self.deadline):
                return hits or ALL
            if self.progress and now >= self.next_full:
                self.next_full = now + PROGRESS_EVERY_S
                return ALL

    def _fallback(self, wanted, now):
        """Poll after a growing pause; a push that comes meanwhile wakes it early."""
        wait = self._until(now, now + self.poll_s)
        self.poll_s = min(FALLBACK_MAX_S, self.poll_s * 1.5)
        try:
            hits = self.hits(self.client.pushes(wait) if self.pushing else _sleep(wait),
                             wanted)
        except HQError as exc:
            if exc.code != USER_SERVER_UNREACHABLE:
                raise
            self.pushing = False
            return ALL
        return hits or ALL

    def hits(self, pushes, wanted):
        """ALL on a RECHECK, else the wanted ids among the ended ones (or of the batch)."""
        hits = set()
        for kind, body in pushes:
            if kind == p.RECHECK:
                return ALL
            for entry in body.get("jobs", ()):
                if self.batch is not None:
                    if len(entry) > 3 and entry[3] == self.batch:
                        return ALL
                elif entry and entry[0] in wanted:
                    hits.add(entry[0])
        return hits


def _sleep(seconds):
    time.sleep(seconds)
    return []


def as_completed(client, ids, timeout=None, progress=None, poll_s=0.02):
    """Each job (its JSON form) as it ends; see hq.Client.as_completed."""
    remaining = dict.fromkeys(int(i) for i in ids)
    ended, live = collections.Counter(), collections.Counter()
    wake = Wakeups(client, timeout, poll_s, progress is not None)
    look = ALL
    while remaining:
        watch = wake.watch()
        finished, seen_live = finished_among(client, list(remaining) if look is ALL
                                             else [i for i in look if i in remaining])
        wake.watched(watch)
        if look is ALL:
            live = seen_live
        for job in finished:
            if remaining.pop(job["id"], ...) is not ...:
                ended[job["state"]] += 1
                if look is not ALL:
                    _one_less(live)
        if progress is not None:
            progress(dict(ended + live))
        yield from finished
        if not remaining:
            return
        try:
            look = wake.next(remaining)
        except HQError as exc:
            if exc.code != TIMEOUT:
                raise
            raise HQError(TIMEOUT, f"{len(remaining)} of {len(remaining) + sum(ended.values())}"
                          f" jobs still not ended after {timeout:g}s") from None


def finished_among(client, ids):
    """(JSON forms of the ended jobs among `ids`, Counter of the others' states)."""
    live, finished = collections.Counter(), []
    for start in range(0, len(ids), CHUNK):
        reply = client.request(p.DETAILS, ids=ids[start:start + CHUNK], finished_only=True)
        finished += reply["jobs"]
        live.update(reply["live"])
    return finished, live


def _one_less(live):
    """A job seen ended by a push was counted live at the last full look: count it no more."""
    for state in ("running", "dispatched", "pending", "held"):
        if live[state] > 0:
            live[state] -= 1
            return


def wait_batch(client, batch, timeout=None, progress=None, poll_s=0.02):
    """Counts by state once every job of a batch has ended; see hq.Client.wait_batch."""
    from hq.model import LIVE
    wake = Wakeups(client, timeout, poll_s, progress is not None, batch=batch)
    while True:
        watch = wake.watch()
        started = time.monotonic()
        counts = client.status(batch)
        # a look counts the batch's rows: pushes may come every turn, looks stay at most a
        # tenth of the time (and 20 a second)
        not_before = time.monotonic() + max(BATCH_GAP_S, 9 * (time.monotonic() - started))
        wake.watched(watch)
        if progress is not None:
            progress(counts)
        if not any(counts.get(state) for state in LIVE):
            return counts
        try:
            wake.next(())
        except HQError as exc:
            if exc.code != TIMEOUT:
                raise
            raise HQError(TIMEOUT, f"{sum(counts.get(s, 0) for s in LIVE)} jobs of batch "
                          f"{batch} still not ended after {timeout:g}s") from None
        time.sleep(max(0.0, not_before - time.monotonic()))
