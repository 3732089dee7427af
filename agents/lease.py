"""The agent's lease (fencing): the server grants `lease_s` in its REGISTER reply (and in each
HEARTBEAT reply, for the interval that heartbeat declared); each OK to a REGISTER or HEARTBEAT
extends it to `lease_s` after that request left (monotonic clock). What the server answered
also paces the agent: when to reconnect (relink_delay) and to resend reports (resend_at)."""

import random
import time
from collections import OrderedDict

RENEWING = ("register", "heartbeat")
MIN_LEASE_S, MAX_LEASE_S = 0.1, 86400.0
MIN_SURPLUS_S = 1.0     # less than this to spare: the agent connects again at once
RESEND_S, RESEND_MAX_S = 5.0, 60.0      # unacknowledged reports go again after (resend_at)


class Lease:
    """While it holds, the server has heard from us recently enough that it cannot have
    requeued our jobs; once it has expired, our jobs may run elsewhere: the agent kills them.

    The server hears a request after it left and counts the agent gone only 3 heartbeats
    after the last one it heard, then waits requeue_grace_s: so an OK to a request sent at t
    means no requeue before t + 3 heartbeats + grace, and the server grants less than that.
    Each renewing request carries a number `n` that the server repeats in its OK, so an answer
    renews from the time its own request left, even when the connection lost some requests or
    replies on the way (the agent keeps its connection across a server restart). A server that
    repeats no number (an older one) answers in order: the oldest request is the one answered.
    A request lost on the way only makes the lease end earlier."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lease_s = None        # granted by the server (None: it grants none: no fencing)
        self.base_s = None         # what a REGISTER grants (the host's reporter keeps that)
        self.until = None          # when the lease ends (clock time)
        self.next_n = 0
        self.numbered = False      # the server repeats request numbers
        self.answered_n = 0        # the newest request it answered (when it numbers them)
        self.sent = {req: OrderedDict() for req in RENEWING}   # n -> send time, oldest first

    def new_connection(self):
        """The requests in flight went with the old socket: no reply will come for them."""
        for pending in self.sent.values():
            pending.clear()

    def request_sent(self, req):
        """Note a request as it leaves; returns the number it carries."""
        self.next_n += 1
        self.sent[req][self.next_n] = self.clock()
        return self.next_n

    def withdraw(self, req, n):
        """A request that could not be sent after all."""
        self.sent[req].pop(n, None)

    def answered(self, req, ok, body=None):
        """A reply (OK or ERROR) to a renewing request; an OK renews the lease. A REGISTER OK
        says how long leases are (none: the server fences nobody)."""
        sent = self._match(req, ok, body or {})
        if sent is None or not ok:
            return
        granted = (body or {}).get("lease_s")
        valid = isinstance(granted, (int, float)) and not isinstance(granted, bool) \
            and MIN_LEASE_S <= granted <= MAX_LEASE_S
        if req == "register":       # a new record at the server: the lease starts anew
            self.lease_s = self.base_s = granted if valid else None
            self.until = None if self.lease_s is None else sent + self.lease_s
            return
        if valid:                   # granted for the interval that heartbeat declared
            self.lease_s = granted
        if self.lease_s is not None:
            self.until = max(self.until or sent, sent + self.lease_s)

    def _match(self, req, ok, body):
        """The send time of the request this reply answers (None: no such request)."""
        pending = self.sent.get(req)
        if not pending:
            return None
        n = body.get("n")
        if ok and isinstance(n, int) and not isinstance(n, bool):
            self.numbered = True
            if n not in pending:
                return None
            if body.get("behind") is not True:      # (renewed ahead of its turn: not read
                self.answered_n = max(self.answered_n, n)   # in order with our reports)
            while True:                 # older requests of this kind went unanswered
                first, sent = pending.popitem(last=False)
                if first == n:
                    return sent
        if self.numbered and not ok:    # an ERROR names no request: it cannot be matched
            return None
        return pending.popitem(last=False)[1]

    def expired(self, now=None):
        return self.until is not None and (now or self.clock()) >= self.until

    def remaining(self, now=None):
        """Seconds until the lease ends (None: no lease)."""
        return None if self.until is None else self.until - (now or self.clock())

    def relink_delay(self, now=None):
        """After the connection was lost: how long to wait before connecting again. A lease
        with more time left than a REGISTER grants (an agent heartbeating less often than its
        host's reporter) gives way to the leases that end sooner: it waits a random time in
        the later half of that surplus, and still has a fresh lease's time to get back. After a
        restart the server registers first the agents that would kill their jobs first (10,000
        agents took 10 s to connect again to a restarted server on 2 cores: the reporters'
        11 s leases ended before some of them were back)."""
        remaining = self.remaining(now)
        if remaining is None or self.base_s is None:
            return 0.0
        surplus = remaining - self.base_s
        return random.uniform(surplus / 2, surplus) if surplus >= MIN_SURPLUS_S else 0.0

    def resend_at(self, sent, mark):
        """When reports sent at `sent` (any clock), after request number `mark` (`next_n` then),
        go again if still unacknowledged: RESEND_S after they left once the server has answered
        a request sent after them (it handles an agent's messages in order, so they or their
        answer were lost), else RESEND_MAX_S: a server that is only behind is not sent them
        twice (resent every 5 s, 10,000 agents' reports multiplied a server's backlog until it
        answered no heartbeat within the lease). A server that numbers nothing: RESEND_S."""
        if not self.numbered or self.answered_n > mark:
            return sent + RESEND_S
        return sent + RESEND_MAX_S
