"""The agent's lease (fencing): the server grants `lease_s` in its REGISTER reply (and in each
HEARTBEAT reply, for the interval that heartbeat declared); each OK to a REGISTER or HEARTBEAT
extends it to `lease_s` after that request left (monotonic clock)."""

import time
from collections import deque

RENEWING = ("register", "heartbeat")
MIN_LEASE_S, MAX_LEASE_S = 0.1, 86400.0


class Lease:
    """While it holds, the server has heard from us recently enough that it cannot have
    requeued our jobs; once it has expired, our jobs may run elsewhere: the agent kills them.

    The server hears a request after it left and counts the agent gone only 3 heartbeats
    after the last one it heard, then waits requeue_grace_s: so an OK to a request sent at t
    means no requeue before t + 3 heartbeats + grace, and the server grants less than that.
    Replies to one kind come in the order of the requests (one connection), so the send times
    wait in a queue per kind; a request lost on the way only makes the lease end earlier."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lease_s = None        # granted by the server (None: it grants none: no fencing)
        self.until = None          # when the lease ends (clock time)
        self.sent = {req: deque() for req in RENEWING}

    def new_connection(self):
        """The requests in flight went with the old socket: no reply will come for them."""
        for queue in self.sent.values():
            queue.clear()

    def request_sent(self, req):
        self.sent[req].append(self.clock())

    def answered(self, req, ok, body=None):
        """A reply (OK or ERROR) to a renewing request; an OK renews the lease. A REGISTER OK
        says how long leases are (none: the server fences nobody)."""
        queue = self.sent.get(req)
        if not queue:
            return
        sent = queue.popleft()
        if not ok:
            return
        granted = (body or {}).get("lease_s")
        valid = isinstance(granted, (int, float)) and not isinstance(granted, bool) \
            and MIN_LEASE_S <= granted <= MAX_LEASE_S
        if req == "register":       # a new record at the server: the lease starts anew
            self.lease_s = granted if valid else None
            self.until = None if self.lease_s is None else sent + self.lease_s
            return
        if valid:                   # granted for the interval that heartbeat declared
            self.lease_s = granted
        if self.lease_s is not None:
            self.until = max(self.until or sent, sent + self.lease_s)

    def expired(self, now=None):
        return self.until is not None and (now or self.clock()) >= self.until

    def remaining(self, now=None):
        """Seconds until the lease ends (None: no lease)."""
        return None if self.until is None else self.until - (now or self.clock())
