"""Simulated hq agents for tools/simcluster.py: many (user, host) agents in one process, each its
own DEALER with CURVE speaking the agent protocol as agents/exec_server.py does, without processes.

Usage: simagents.py CONFIG.json. Commands (silence, pause, mark, stop) come as JSON lines on
stdin; one JSON line of counters a second goes to stdout; at the end, the ids of the jobs started.
"""

import array
import heapq
import json
import os
import random
import resource
import select
import sys
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from agents.exec_server import LINK_EVENTS, tune_connection  # noqa: E402
from agents.lease import RENEWING, RESEND_S, Lease  # noqa: E402
from hq import protocol as p, security  # noqa: E402

REPORT_INTERVAL_S = 0.005
BACKOFF_START_S, BACKOFF_MAX_S = 1.0, 32.0
STATS_EVERY_S = 0.25
HEARTBEAT, FLUSH, END, RESEND, CONNECT, RESUME, RELINK = range(7)
GIB = 1 << 30


def durations(spec):
    """A function drawing a job's run time from SPEC: '0', '5' (fixed) or '1-60' (uniform)."""
    low, _, high = spec.partition("-")
    low, high = float(low), float(high or low)
    if low < 0 or high < low:
        raise ValueError(f"bad duration {spec!r}: N or LOW-HIGH seconds")
    return (lambda: low) if low == high else (lambda: random.uniform(low, high))


def raise_open_files(wanted):
    """Raise the soft limit of open files towards `wanted` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class SimAgent:
    """One user's agent on one host: its socket, the jobs it holds and its unacked reports."""
    __slots__ = ("user", "host", "identity", "socket", "fd", "link", "link_fd", "link_lost",
                 "registered", "last_heard",
                 "backoff", "reconnect_at", "waiting", "running", "cores_used", "slots",
                 "outgoing", "unacked", "seq", "last_report", "flush_due", "silent",
                 "gave_up", "next_heartbeat", "reports", "every", "lease", "relink_at", "recording")

    def __init__(self, user, host, worker):
        self.user, self.host = user, host
        self.identity = f"agent:{user}@{host}:sim{worker}".encode()
        self.socket, self.fd = None, None
        self.link, self.link_fd, self.link_lost = None, None, False   # the socket's monitor
        self.relink_at = None          # giving way after losing the connection (as exec_server)
        self.registered = False
        self.last_heard = 0.0
        self.backoff = BACKOFF_START_S
        self.reconnect_at = None
        self.waiting = {}          # (job, attempt) -> (cores, duration), in order of arrival
        self.running = {}          # (job, attempt) -> (cores, started)
        self.cores_used = 0
        self.slots = 0
        self.outgoing = []         # events not yet sent
        self.unacked = {}          # seq -> [sent time, events, lease.next_n then]
        self.seq = 0
        self.last_report = 0.0
        self.flush_due = False
        self.recording = True      # false once the server says its commits fail (to an ack)
        self.silent = False        # a simulated dead host: sends nothing, hears nothing
        self.gave_up = False
        self.next_heartbeat = 0.0
        self.reports = True        # the server wants the host's metrics from this agent
        self.every = None          # its heartbeat interval (None: the installation's)
        self.lease = Lease(time.time)   # fencing, as exec_server: jobs stop when it ends

    def pairs(self):
        return [list(k) for k in (*self.running, *self.waiting)]

    def reported(self):
        return [[e["job"], e["attempt"]] for _, events, _ in self.unacked.values()
                for e in events if e["type"] == "finished"] + \
            [[e["job"], e["attempt"]] for e in self.outgoing if e["type"] == "finished"]


class Worker:
    """The agents of one simulator process, on one epoll loop with one heap of timers."""

    def __init__(self, config):
        self.config = config
        self.number = config["worker"]
        self.heartbeat_s = config["heartbeat_s"]
        self.slots = config["slots"]
        self.duration = durations(config["duration"])
        self.server = config["server"]
        raise_open_files(8 * len(config["agents"]) + 256)
        self.context = zmq.Context()            # closed sockets linger until reaped:
        self.context.set(zmq.MAX_SOCKETS, 6 * len(config["agents"]) + 64)   # room for them
                                                        # (and their monitors)
        server_key = config["server_key"].encode()
        self.keys = {user: (server_key, *security.load_keypair(path))
                     for user, path in config["keys"].items()}
        self.agents = [SimAgent(user, host, self.number) for user, host in config["agents"]]
        self.by_fd = {}
        self.by_link = {}       # monitor socket fd -> agent
        self.epoll = select.epoll()
        self.timers = []
        self.tick = 0
        self.dirty = set()
        self.database_id = None
        self.started_ids = array.array("q")
        self.counts = dict(registers=0, runs=0, started=0, finished=0, done_acked=0,
                           acked=0, reregisters=0, link_registers=0, gave_way=0, fenced=0, kills=0,
                           resent=0, heartbeats=0, events_sent=0, refused=0)
        self.mark = {"at": None, "first_run": None, "first_ok": None, "registered": 0}
        self.paused_held = []      # [job, attempt] its paused agents held when cut off
        self.silenced_held = []    # [job, attempt] its silenced agents held
        self.running = True
        self.commands = b""

    # -- timers ------------------------------------------------------------------------------
    def later(self, when, kind, agent, arg=None):
        self.tick += 1
        heapq.heappush(self.timers, (when, self.tick, kind, agent, arg))

    def run_timers(self, now):
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, kind, agent, arg = heapq.heappop(timers)
            if kind == HEARTBEAT:
                self.heartbeat(agent, now)
            elif kind == FLUSH:
                agent.flush_due = False
                self.flush(agent, now)
            elif kind == END:
                self.end(agent, arg, now)
            elif kind == RESEND:
                self.resend(agent, now)
            elif kind == CONNECT:
                self.connect(agent, now)
            elif kind == RELINK:
                self.relink(agent, now)
            elif kind == RESUME:
                agent.silent = False
                self.connect(agent, now)

    # -- connection --------------------------------------------------------------------------
    def connect(self, agent, now):
        """A new connection (same routing id: the server's ROUTER_HANDOVER), then REGISTER:
        at start, and when a paused agent comes back."""
        sock = self.context.socket(zmq.DEALER)
        tune_connection(sock)                                             # as exec_server
        sock.setsockopt(zmq.ROUTING_ID, agent.identity)
        security.make_client_socket(sock, *self.keys[agent.user])
        sock.connect(self.server)
        agent.socket, agent.fd = sock, sock.getsockopt(zmq.FD)
        self.by_fd[agent.fd] = agent
        self.epoll.register(agent.fd, select.EPOLLIN)
        agent.link = sock.get_monitor_socket(LINK_EVENTS)                # as exec_server
        agent.link_fd, agent.link_lost = agent.link.getsockopt(zmq.FD), False
        agent.relink_at = None
        self.by_link[agent.link_fd] = agent
        self.epoll.register(agent.link_fd, select.EPOLLIN)
        self.link_events(agent, now)    # (a zmq FD signals changes: read what came before)
        agent.last_heard = now
        agent.registered = False
        self.register(agent, now)
        if agent.next_heartbeat <= now:
            agent.next_heartbeat = now + self.heartbeat_s
            self.later(agent.next_heartbeat, HEARTBEAT, agent)

    def register(self, agent, now):
        agent.registered = False
        if agent.every is not None:      # REGISTER's reply sets the installation's interval
            agent.every = None
            if agent.next_heartbeat > now + self.heartbeat_s:
                agent.next_heartbeat = now + self.heartbeat_s
                self.later(agent.next_heartbeat, HEARTBEAT, agent)
        slots = self.slots
        body = {"req": "register", "user": agent.user, "host": agent.host,
                "running": agent.pairs(), "reported": agent.reported(), "cores": slots,
                "memory_total": 4 * GIB * slots, "os": "Linux 6.1.0-sim x86_64",
                **self.metrics(agent)}
        if self.database_id is not None:
            body["database_id"] = self.database_id
        body["n"] = agent.lease.request_sent("register")
        self.send(agent, p.REGISTER, body)
        for seq in agent.unacked:             # resend what the old connection may have lost
            agent.unacked[seq][0] = 0.0
        if agent.unacked:
            self.later(now, RESEND, agent)

    def metrics(self, agent):
        used = agent.cores_used
        slots = self.slots
        return {"load1": round(used * 0.95 + random.random() * 0.1, 2),
                "load5": round(used * 0.9, 2), "load15": round(used * 0.85, 2),
                "cpu_percent": round(100.0 * used / slots, 1),
                "mem_available": (4 * slots - used) * GIB - random.randrange(1 << 20),
                "nprocs": 120 + 2 * used, "foreign_load": 0.0}

    def send(self, agent, kind, body):
        try:
            agent.socket.send_multipart(p.encode(kind, body), zmq.NOBLOCK)
        except zmq.Again:
            pass                        # not connected yet: as the real agent, send later
        self.dirty.add(agent)

    def heartbeat(self, agent, now):
        if agent.gave_up or now < agent.next_heartbeat:    # a timer its interval replaced
            return
        every = agent.every or self.heartbeat_s
        agent.next_heartbeat = now + every
        self.later(agent.next_heartbeat, HEARTBEAT, agent)
        if agent.silent:                 # a dead host: nothing happens there any more
            return
        self.check_lease(agent, now)
        if not agent.registered:         # as exec_server: nothing until REGISTER is answered
            self.check_server(agent, now)
            return
        self.counts["heartbeats"] += 1
        body = {"req": "heartbeat", "running": agent.pairs(), "reported": agent.reported(),
                "every": every, "n": agent.lease.request_sent("heartbeat")}
        if agent.reports:
            body.update(self.metrics(agent))
        self.send(agent, p.HEARTBEAT, body)
        self.check_server(agent, now)

    def check_server(self, agent, now):
        """Paranoid Pirate, as exec_server: REGISTER again (same connection) with backoff when
        the server is silent (not while giving way)."""
        if agent.relink_at is not None \
                or now - agent.last_heard <= 3 * (agent.every or self.heartbeat_s):
            return
        if agent.reconnect_at is None:
            agent.reconnect_at = now + agent.backoff * random.uniform(0.5, 1.5)
        elif now >= agent.reconnect_at:
            agent.reconnect_at = None
            agent.backoff = min(BACKOFF_MAX_S, agent.backoff * 2)
            self.counts["reregisters"] += 1
            agent.registered = False
            self.register(agent, now)       # it has 3 heartbeats for an answer
            agent.last_heard = now

    def link_events(self, agent, now):
        """As exec_server: a lost connection stops everything; once it is back, REGISTER."""
        while agent.link.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = recv_monitor_message(agent.link, zmq.NOBLOCK)["event"]
            if agent.silent:
                continue
            if event == zmq.EVENT_DISCONNECTED and not agent.link_lost:
                agent.link_lost, agent.registered = True, False
                self.give_way(agent, agent.lease.relink_delay(now), now)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED and agent.link_lost \
                    and agent.relink_at is None:
                agent.link_lost = False
                self.counts["link_registers"] += 1
                self.register(agent, now)
                agent.last_heard = now

    def give_way(self, agent, delay, now):
        """As exec_server: off the server's address for `delay` s (leases ending sooner first)."""
        if delay:
            agent.socket.disconnect(self.server)
            agent.relink_at = now + delay
            self.counts["gave_way"] += 1
            self.later(agent.relink_at, RELINK, agent)

    def relink(self, agent, now):
        if agent.relink_at is not None and agent.socket is not None:
            agent.relink_at = None
            agent.socket.connect(self.server)
            agent.last_heard = now

    def close_link(self, agent):
        self.epoll.unregister(agent.link_fd)
        del self.by_link[agent.link_fd]
        agent.socket.disable_monitor()
        agent.link.close(linger=0)
        agent.link = agent.link_fd = None

    # -- messages from the server ------------------------------------------------------------
    def drain(self, agent, now):
        sock = agent.socket
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = sock.recv_multipart(zmq.NOBLOCK)
            if agent.silent:
                continue
            agent.last_heard = now
            agent.backoff = BACKOFF_START_S
            agent.reconnect_at = None
            try:
                kind, body = p.decode(frames, kinds={p.OK, p.ERROR, p.RUN, p.KILL, p.STOP})
            except Exception:
                continue
            self.on_message(agent, kind, body, now)

    def on_message(self, agent, kind, body, now):
        if kind == p.RUN:
            self.on_run(agent, body, now)
        elif kind == p.KILL:
            self.on_kill(agent, body, now)
        elif kind == p.OK:
            self.on_ok(agent, body, now)
        elif kind == p.ERROR:
            if body.get("req") in RENEWING:
                agent.lease.answered(body["req"], False)
            if body.get("code") == "UNKNOWN_AGENT" and agent.registered:  # a restarted
                agent.registered = False                                    # server: once
                self.register(agent, now)
            elif body.get("req") == "register":
                agent.gave_up = True           # exec_server exits when REGISTER is refused
                self.counts["refused"] += 1

    def on_ok(self, agent, body, now):
        req = body.get("req")
        if isinstance(body.get("metrics"), bool):
            agent.reports = body["metrics"]
        if req == "heartbeat" and isinstance(body.get("every"), (int, float)):
            agent.every = body["every"]
        if req in RENEWING:
            agent.lease.answered(req, True, body)
        if req == "heartbeat" and body.get("recording") is False or req == "unrecorded":
            agent.recording = False         # read, but its commits fail: report on
        if req == "events":
            agent.recording = True
            events = agent.unacked.pop(body.get("seq"), (None, ()))[1]
            for event in events:
                if event["type"] == "finished":
                    self.counts["acked"] += 1
                    if event.get("exit_code") == 0:
                        self.counts["done_acked"] += 1
        if agent.outgoing and not agent.flush_due and self.may_report(agent):
            agent.flush_due = True              # what came while one was in flight goes now
            self.later(max(now, agent.last_report + REPORT_INTERVAL_S), FLUSH, agent)
        if req == "register":
            self.database_id = body.get("database_id", self.database_id)
            if not agent.registered:
                agent.registered = True
                self.counts["registers"] += 1
                if self.mark["at"] is not None:
                    self.mark["registered"] += 1
                    self.mark["first_ok"] = self.mark["first_ok"] or now
                self.flush(agent, now)           # what waited for the answer goes now
                if agent.unacked:
                    self.later(now, RESEND, agent)

    def on_run(self, agent, body, now):
        self.counts["runs"] += 1
        if self.mark["at"] is not None and self.mark["first_run"] is None:
            self.mark["first_run"] = now
        agent.slots = body.get("slots") or agent.slots
        for spec in body.get("jobs", []):
            key = (spec["id"], spec["attempt"])
            if key not in agent.waiting and key not in agent.running:
                agent.waiting[key] = (spec.get("cores", 1), self.duration())
        self.start_waiting(agent, now)

    def on_kill(self, agent, body, now):
        for job, attempt in body.get("jobs", []):
            key = (job, attempt)
            self.counts["kills"] += 1
            if agent.waiting.pop(key, None) is not None:
                self.report(agent, {"type": "finished", "job": job, "attempt": attempt,
                                    "time": now, "exit_code": None, "signal": None,
                                    "reason": "cancelled before it started"}, now)
            elif key in agent.running:
                self.end(agent, key, now, signal=15)

    # -- jobs --------------------------------------------------------------------------------
    def start_waiting(self, agent, now):
        """Give free slots to waiting jobs in order (never more cores than the host's slots)."""
        while agent.waiting:
            key = next(iter(agent.waiting))
            cores, duration = agent.waiting[key]
            if agent.slots and agent.cores_used and agent.cores_used + cores > agent.slots:
                break
            del agent.waiting[key]
            agent.running[key] = (cores, now)
            agent.cores_used += cores
            self.started_ids.append(key[0])
            self.counts["started"] += 1
            self.report(agent, {"type": "started", "job": key[0], "attempt": key[1],
                                "time": now, "pid": 100000 + len(self.started_ids) % 900000},
                        now)
            if duration <= 0:
                self.end(agent, key, now, refill=False)     # the loop refills: no recursion
            else:
                self.later(now + duration, END, agent, key)

    def check_lease(self, agent, now):
        """As exec_server: once the lease has ended the server may run these jobs elsewhere,
        so they stop (killed, waiting ones dropped) and are reported fenced. (Looked at each
        heartbeat timer: up to one interval later than the real agent.)"""
        if not agent.lease.expired(now) or not (agent.running or agent.waiting):
            return
        reason = "fenced: no answer from hq-server within the lease"
        self.counts["fenced"] += len(agent.running) + len(agent.waiting)
        for job, attempt in list(agent.waiting):
            self.report(agent, {"type": "finished", "job": job, "attempt": attempt,
                                "time": now, "exit_code": None, "signal": None,
                                "reason": reason}, now)
        agent.waiting.clear()
        for key in list(agent.running):
            self.end(agent, key, now, signal=9, refill=False, reason=reason)

    def end(self, agent, key, now, signal=None, refill=True, reason="cancelled"):
        if agent.silent:                # paused: its jobs end after it is back (or never)
            if key in agent.running:
                self.later(now + 0.5, END, agent, key)
            return
        held = agent.running.pop(key, None)
        if held is None:
            return
        cores, started = held
        agent.cores_used -= cores
        self.counts["finished"] += 1
        event = {"type": "finished", "job": key[0], "attempt": key[1], "time": now,
                 "started": started, "max_rss": 8 << 20,
                 "exit_code": None if signal else 0, "signal": signal}
        if signal:
            event["reason"] = reason
        self.report(agent, event, now)
        if refill:
            self.start_waiting(agent, now)

    def report(self, agent, event, now):
        agent.outgoing.append(event)
        if not agent.flush_due:
            agent.flush_due = True
            self.later(max(now, agent.last_report + REPORT_INTERVAL_S), FLUSH, agent)

    def flush(self, agent, now):
        """As exec_server: no report goes until the server has answered REGISTER (a server
        that does not know the agent refuses it, and the refusal is no sign of life)."""
        if not agent.outgoing or agent.silent or not agent.registered \
                or not self.may_report(agent):
            return
        agent.last_report = now
        agent.seq += 1
        agent.unacked[agent.seq] = [now, agent.outgoing, agent.lease.next_n]
        self.counts["events_sent"] += len(agent.outgoing)
        self.send(agent, p.EVENTS, {"req": "events", "seq": agent.seq, "events": agent.outgoing})
        agent.outgoing = []
        self.later(now + RESEND_S, RESEND, agent)

    @staticmethod
    def may_report(agent):
        """As exec_server: one report in flight, unless the server says it cannot record."""
        return not agent.unacked or not agent.recording

    def resend(self, agent, now):
        if agent.silent or not agent.registered:
            return
        lease = agent.lease
        for seq, entry in agent.unacked.items():
            if now >= lease.resend_at(entry[0], entry[2]):     # as exec_server
                entry[0], entry[2] = now, lease.next_n
                self.counts["resent"] += 1
                self.send(agent, p.EVENTS, {"req": "events", "seq": seq, "events": entry[1]})
        if agent.unacked:
            self.later(max(now + 0.5, min(lease.resend_at(e[0], e[2])
                                          for e in agent.unacked.values())), RESEND, agent)

    # -- commands from simcluster.py ---------------------------------------------------------
    def read_commands(self, now):
        data = os.read(0, 65536)
        if not data:
            self.running = False
            return
        self.commands += data
        *lines, self.commands = self.commands.split(b"\n")
        for line in lines:
            if line.strip():
                self.command(json.loads(line), now)

    def command(self, cmd, now):
        what = cmd["cmd"]
        hosts = set(cmd.get("hosts", ()))
        chosen = [a for a in self.agents if a.host in hosts]
        if what == "stop":
            self.running = False
        elif what == "mark":
            self.mark = {"at": now, "first_run": None, "first_ok": None, "registered": 0}
        elif what == "silence":           # the host dies: its connection just goes quiet
            for agent in chosen:
                agent.silent = True
                self.silenced_held += agent.pairs()
        elif what == "pause":             # the agent's connection is cut, then it reconnects
            for agent in chosen:
                agent.silent = True
                self.paused_held += agent.pairs()
                self.epoll.unregister(agent.fd)
                del self.by_fd[agent.fd]
                self.close_link(agent)
                agent.socket.close(linger=0)
                agent.socket = agent.fd = None
                self.later(now + cmd["seconds"], RESUME, agent)

    def stats(self, now):
        held = sum(1 for a in self.agents if a.registered and not a.silent and not a.gave_up
                   and now - a.last_heard <= 3 * (a.every or self.heartbeat_s))
        line = dict(self.counts, worker=self.number, time=now, held=held,
                    agents=len(self.agents), gave_up=sum(a.gave_up for a in self.agents),
                    holding=sum(len(a.running) + len(a.waiting) for a in self.agents),
                    mark=self.mark, paused_held=self.paused_held,
                    silenced_held=self.silenced_held)
        os.write(1, (json.dumps(line) + "\n").encode())

    # -- loop --------------------------------------------------------------------------------
    def serve(self):
        os.set_blocking(0, False)
        self.epoll.register(0, select.EPOLLIN)
        start = time.time()
        for index, agent in enumerate(self.agents):
            self.later(start + index / self.config["connect_rate"], CONNECT, agent)
        next_stats = start
        while self.running:
            now = time.time()
            delay = (self.timers[0][0] - now) if self.timers else 1.0
            for fd, _ in self.epoll.poll(max(0.0, min(delay, next_stats - now, 1.0))):
                now = time.time()
                if fd == 0:
                    self.read_commands(now)
                elif fd in self.by_fd:
                    self.drain(self.by_fd[fd], now)
                elif fd in self.by_link:
                    self.link_events(self.by_link[fd], now)
            now = time.time()
            self.run_timers(now)
            while self.dirty:
                dirty, self.dirty = self.dirty, set()
                for agent in dirty:
                    if agent.socket is not None:
                        self.drain(agent, now)
            if now >= next_stats:
                self.stats(now)
                next_stats = now + STATS_EVERY_S
        self.finish()

    def finish(self):
        self.stats(time.time())
        with open(self.config["started_file"], "wb") as handle:
            self.started_ids.tofile(handle)
        for agent in self.agents:
            if agent.socket is not None:
                self.close_link(agent)
                agent.socket.close(linger=0)
        self.context.term()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as handle:
        config = json.load(handle)
    random.seed(config.get("seed", 0))
    Worker(config).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
