"""Simulated hq users for tools/simcluster.py: each is a DEALER with the user's own CURVE key, as
the user's user-server would hold, that submits (streamed batches, single jobs), cancels, queries.

The admin's connection measures the round trip of `hq-admin status` (ADMIN status) under load.
"""

import collections
import random

import zmq

from hq import protocol as p, security

CHUNK = 5000                 # lines per SUBMIT, as hq-submit's largest chunks
WINDOW = 2                   # chunks in flight, as Client.submit_stream
RATE_TICK_S = 0.2            # a streamed input that pauses sends what it has (lines.py)
SINGLES_WINDOW = 4
ENV = {f"SIM_VAR_{i}": "x" * 40 for i in range(30)}   # about 2 KB, like a login environment


class Connection:
    """A DEALER to hq-server acting for one key's user; replies are matched to requests."""

    def __init__(self, context, server, keys, name):
        self.name = name
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        security.make_client_socket(self.socket, *keys)
        self.socket.connect(server)
        self.waiting = {}            # req -> (sent, kind, callback)
        self.counter = 0
        self.timeouts = 0

    def request(self, kind, body, now, callback=None):
        self.counter += 1
        body["req"] = self.counter
        self.socket.send_multipart(p.encode(kind, body))
        self.waiting[self.counter] = (now, kind, callback)
        return self.counter

    def receive(self, now):
        while self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            kind, body = p.decode(self.socket.recv_multipart(zmq.NOBLOCK))
            sent = self.waiting.pop(body.get("req"), None)
            if sent is not None and sent[2] is not None:
                sent[2](kind, body, now - sent[0])

    def expire(self, now, timeout):
        """Forget requests unanswered for `timeout` seconds (a server restart loses them)."""
        for req, (sent, kind, callback) in list(self.waiting.items()):
            if now - sent > timeout:
                del self.waiting[req]
                self.timeouts += 1
                if callback is not None:
                    callback(None, {"code": "TIMEOUT"}, now - sent)

    def close(self):
        self.socket.close(linger=0)


class SimUser:
    """One user's load: `jobs` jobs as one streamed batch (all at once, or `rate` a second)
    plus a share of single-job submissions, one held batch cancelled, and periodic queries."""

    def __init__(self, connection, jobs, singles, cancels, rate, query_every, out_dir):
        self.conn = connection
        self.singles_left = min(singles, jobs)
        self.stream_left = jobs - self.singles_left
        self.cancels = cancels
        self.rate = rate                         # jobs a second of this user (0: backlog)
        self.query_every = query_every
        self.defaults = {"stdout": f"{out_dir}/%j.out", "stderr": f"{out_dir}/%j.err"}
        self.batch = None
        self.chunks_in_flight = 0
        self.singles_in_flight = 0
        self.sent_jobs = 0
        self.accepted = 0
        self.refused = []
        self.cancel_batch = None
        self.cancelled = 0
        self.recent = collections.deque(maxlen=2000)
        self.query_rtts = []
        self.started_at = None
        self.next_query = 0.0
        self.next_rate_tick = 0.0
        self.queries = 0

    @property
    def submitted_all(self):
        return not self.stream_left and not self.singles_left and not self.chunks_in_flight \
            and not self.singles_in_flight

    def step(self, now):
        if self.started_at is None:
            self.started_at = now
            self.next_query = now + self.query_every
        self.submit_stream(now)
        self.submit_singles(now)
        if self.query_every and now >= self.next_query and self.recent:
            self.next_query = now + self.query_every
            self.query(now)

    # -- submitting ---------------------------------------------------------------------------
    def submit_stream(self, now):
        while self.stream_left and self.chunks_in_flight < WINDOW and (
                self.batch is not None or not self.chunks_in_flight):
            size = min(CHUNK, self.stream_left)
            if self.rate:
                if now < self.next_rate_tick:
                    return
                self.next_rate_tick = now + RATE_TICK_S
                due = int(self.rate * (now - self.started_at)) + 1 - self.sent_jobs
                size = min(size, max(0, due))
                if not size:
                    return
            jobs = [f"sim {self.conn.name} {self.sent_jobs + i}" for i in range(size)]
            self.sent_jobs += size
            self.stream_left -= size
            self.chunks_in_flight += 1
            body = {"jobs": jobs, "defaults": self.defaults, "env": ENV, "cwd": "/tmp",
                    "hold": False, "umask": 0o022, "batch": self.batch}
            self.conn.request(p.SUBMIT, body, now, self.chunk_accepted)

    def chunk_accepted(self, kind, body, rtt):
        self.chunks_in_flight -= 1
        if kind != p.OK:
            self.refused.append(body)
            return
        self.batch = body["batch"]
        self.took(body["ids"])

    def submit_singles(self, now):
        """One job a SUBMIT (its own batch), once the stream has begun."""
        while self.singles_left and self.singles_in_flight < SINGLES_WINDOW and (
                self.batch is not None or not self.stream_left):
            if self.rate and random.random() > 0.1:
                return
            self.singles_left -= 1
            self.singles_in_flight += 1
            self.sent_jobs += 1
            body = {"jobs": [f"sim {self.conn.name} single {self.singles_left}"],
                    "defaults": self.defaults, "env": ENV, "cwd": "/tmp", "umask": 0o022}
            self.conn.request(p.SUBMIT, body, now, self.single_accepted)
            if self.cancels and self.cancel_batch is None:
                self.cancel_batch = 0            # asked for below, once
                self.submit_held(now)

    def single_accepted(self, kind, body, rtt):
        self.singles_in_flight -= 1
        if kind != p.OK:
            self.refused.append(body)
            return
        self.took(body["ids"])

    def took(self, ids):
        self.accepted += len(ids)
        self.recent.extend(ids[-200:])

    # -- cancelling: a held batch, half cancelled by ids, then the whole batch ---------------
    def submit_held(self, now):
        body = {"jobs": [f"sim {self.conn.name} held {i}" for i in range(self.cancels)],
                "defaults": self.defaults, "env": ENV, "cwd": "/tmp", "hold": True}
        self.conn.request(p.SUBMIT, body, now, lambda k, b, rtt: self.cancel_held(k, b, now))

    def cancel_held(self, kind, body, now):
        if kind != p.OK:
            self.refused.append(body)
            return
        self.cancel_batch = body["batch"]
        half = body["ids"][:len(body["ids"]) // 2]
        self.conn.request(p.CANCEL, {"ids": half}, now, self.counted)
        self.conn.request(p.CANCEL, {"batch": self.cancel_batch}, now, self.counted)

    def counted(self, kind, body, rtt):
        if kind == p.OK:
            self.cancelled += len(body.get("changed", []))

    # -- queries, as `hq-client details/list/status/wait` make -------------------------------
    def query(self, now):
        ids = list(self.recent)
        kind = self.queries % 4
        self.queries += 1
        if kind == 0:
            body = {"ids": random.sample(ids, min(20, len(ids))), "events": True}
            self.conn.request(p.DETAILS, body, now, self.timed)
        elif kind == 1:
            self.conn.request(p.DETAILS, {"ids": ids[-1000:], "finished_only": True}, now,
                              self.timed)
        elif kind == 2:
            self.conn.request(p.LIST, {"limit": 100}, now, self.timed)
        elif self.batch is not None:
            self.conn.request(p.STATUS, {"batch": self.batch}, now, self.timed)

    def timed(self, kind, body, rtt):
        if kind is not None:
            self.query_rtts.append(rtt)


class StatusProbe:
    """`hq-admin status` (ADMIN status) every `interval` seconds, one at a time; round trips."""

    def __init__(self, connection, interval):
        self.conn = connection
        self.interval = interval
        self.next_at = 0.0
        self.in_flight = False
        self.rtts = []
        self.lost = 0
        self.last = {}                # the newest answer (info: placement_s, placed, ...)

    def step(self, now):
        if self.in_flight or now < self.next_at:
            return
        self.in_flight = True
        self.next_at = now + self.interval
        self.conn.request(p.ADMIN, {"command": "status", "arg": ""}, now, self.answered)

    def answered(self, kind, body, rtt):
        self.in_flight = False
        if kind is None:
            self.lost += 1
            return
        self.rtts.append(rtt)
        self.last = body
