"""hq-exec-server: the agent of one user on one host. Registers, heartbeats psutil metrics,
runs the jobs the server assigns, reports their start and end, kills on request.

Usage:
  hq-exec-server [--server=ADDR] [--host-name=NAME] [--user=USER] [--heartbeat=S]
                 [--orphan=S] [--log-file=FILE] [--log-level=LEVEL] [--pidfile=FILE]
                 [--server-key=Z85] [--key-file=FILE] [--idle=S] [--state-dir=DIR]
  hq-exec-server (-h | --help)

Options:
  --server=ADDR      hq-server address (default: HQ_SERVER, else tcp://localhost:10101);
                     several (an active server and its standby): comma separated.
  --host-name=NAME   Name of this host in cluster.tab (default: the short host name).
  --user=USER        User whose jobs this agent runs (default: the current user).
  --heartbeat=S      Seconds between heartbeats [default: 2].
  --orphan=S         Exit after this many seconds without the server and without jobs
                     [default: 600].
  --log-file=FILE    Log here instead of standard error.
  --log-level=LEVEL  DEBUG, INFO, WARNING or ERROR [default: INFO].
  --pidfile=FILE     Write the process id here (removed at exit).
  --server-key=Z85   hq-server's CURVE public key: connect with CURVE (default: plain TCP,
                     which a server with [security] curve on refuses).
  --key-file=FILE    The user's CURVE secret key file (default: $HQ_HOME/keys/user.key_secret).
  --idle=S           Ask the server to let this agent exit after S seconds without jobs
                     (0: never) [default: 0].
  --state-dir=DIR    Where each running job is recorded, so that an agent started after this
                     one crashed adopts its jobs (default: $HQ_HOME/run/jobs-HOST).
"""

import errno
import getpass
import logging
import os
import random
import signal
import socket
import sys
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from agents import metrics, scripts
from agents.jobfiles import JobFiles, default_directory, safe_database_id
from agents.lease import RENEWING, Lease
from agents.runner import Runner
from hq import logs, protocol as p, security
from hq.errors import HQError

log = logging.getLogger("hq.agent")

BACKOFF_START_S, BACKOFF_MAX_S = 1.0, 32.0
TRY_S = 1.5             # several server addresses: how long one gets to answer a REGISTER
NOT_ACTIVE_PAUSE_S = 0.5    # a standby said NOT_ACTIVE: the next address is tried after this
BYE_AGAIN_S = 5.0       # an unanswered BYE (an idle agent asking to leave) goes again after this
REPORT_INTERVAL_S = 0.005  # a busy agent reports at most this often (its events share a message),
                           # one report in flight while the server records (flush_events)
ADOPTED_POLL_S = 0.2
RECONNECT_MAX_MS = 2000   # libzmq's reconnection to a server that is down backs off from 0.1 s
                          # to this (10,000 agents retrying every 0.1 s made 100,000 connection
                          # attempts a second at a restarting server's host)
DEAD_TCP_MS = 15000       # unacknowledged data this long: the connection is dead (a host gone
                          # without a FIN or RST); libzmq then reconnects
CONNECT_TIMEOUT_MS = 5000  # a connection attempt that gets no answer is given up after this


LINK_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED


def tune_connection(sock):
    """How an agent's socket keeps its connection: libzmq reconnects on its own, backing off
    to about RECONNECT_MAX_MS, so a restarted server gets its agents back on the same sockets.
    Both intervals are jittered: the agents of a killed server all lose it at once, and in
    step they came back in bursts of 10,000 that overflowed its listening queue (the kernel
    dropped them, and TCP tried again only 1, 3, 7 s later)."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, random.randint(100, 500))
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, random.randint(RECONNECT_MAX_MS // 2,
                                                          RECONNECT_MAX_MS * 3 // 2))
    sock.setsockopt(zmq.TCP_MAXRT, DEAD_TCP_MS)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)


class Agent:
    def __init__(self, server, host_name, user, heartbeat_s, orphan_s, curve_keys=None,
                 idle_s=0.0, state_dir=None):
        self.servers = [s.strip() for s in server.split(",") if s.strip()] or [server]
        self.server = self.servers[0]
        self.silent_tries = 0     # addresses tried in a row that did not answer at all
        self.idle_s = idle_s
        self.last_busy = time.time()     # last time a job ran here or was assigned
        self.bye_sent = None             # when an idle agent asked to leave (BYE)
        self.curve_keys = curve_keys     # (server public, our public, our secret) or None
        self.host_name = host_name
        self.user = user
        self.heartbeat_s = heartbeat_s
        self.orphan_s = orphan_s
        self.runner = Runner(host_name, JobFiles(state_dir or default_directory(host_name)))
        self.context = zmq.Context.instance()
        self.socket = None
        self.link = None          # the socket's monitor: its connection lost and made again
        self.link_lost = False    # lost, and not back yet
        self.relink_at = None     # lost, and giving way until then (Lease.relink_delay)
        self.facts = metrics.facts()
        self.sampler = metrics.Sampler()
        self.reports_metrics = True   # the server names one agent a host to bring its metrics
        self.unacked = {}         # seq -> (sent time, events, lease.next_n then)
        self.outgoing = []        # events not yet sent
        self.seq = 0
        self.registered = False   # the server answered our last REGISTER: events may go
        self.last_report = 0.0
        self.server_recording = True  # false once the server says its commits fail, until
                                      # it acknowledges a report again
        self.running = True
        self.last_heard = time.time()     # paces reconnection (moved on by each attempt)
        self.last_contact = time.time()   # the last message from the server (orphan check)
        self.next_heartbeat = 0.0
        self.backoff = BACKOFF_START_S
        self.reconnect_at = None
        self.lease = Lease()      # fencing: jobs are killed once the server cannot vouch for us

    # -- connection -------------------------------------------------------------------------
    def connect(self):
        if self.socket is not None:
            self.socket.disable_monitor()
            self.link.close(linger=0)
            self.socket.close(linger=0)
        self.socket = self.context.socket(zmq.DEALER)
        tune_connection(self.socket)
        self.link = self.socket.get_monitor_socket(LINK_EVENTS)
        self.link_lost, self.relink_at = False, None
        self.socket.setsockopt(zmq.ROUTING_ID,
                               f"agent:{self.user}@{self.host_name}:{os.getpid()}".encode())
        if self.curve_keys:
            security.make_client_socket(self.socket, *self.curve_keys)
        self.socket.connect(self.server)
        self.lease.new_connection()
        self.register()
        self.last_heard = time.time()

    def link_events(self):
        """The connection to the server was lost (a restart, a reset): nothing more goes
        until it is back, and then a REGISTER first, so that a restarted server hears it
        before anything it would refuse (heartbeats and reports queued while it was away)."""
        while True:
            try:
                event = recv_monitor_message(self.link, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_DISCONNECTED and not self.link_lost:
                log.warning("connection to %s lost: registering again once it is back",
                            self.server)
                self.link_lost, self.registered = True, False
                self.give_way(self.lease.relink_delay())
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED and self.link_lost \
                    and self.relink_at is None:         # (not one from before give_way)
                log.info("connection to %s back: registering again", self.server)
                self.link_lost = False      # (a REGISTER sent while it was down may be lost)
                self.register()
                self.last_heard = time.time()

    def give_way(self, delay):
        """Stay off the server's address for `delay` seconds (libzmq would reconnect at once):
        the agents whose leases end sooner go first."""
        if not delay:
            return
        try:
            self.socket.disconnect(self.server)
        except zmq.ZMQError as exc:
            log.debug("disconnect from %s: %s", self.server, exc)
            return
        self.relink_at = time.time() + delay
        log.info("connecting to %s again in %.1fs: agents whose leases end sooner go first "
                 "(ours holds %.1fs more)", self.server, delay, self.lease.remaining())

    def relink(self, now):
        """The end of give_way: connect again; the handshake brings a REGISTER."""
        if self.relink_at is not None and now >= self.relink_at:
            self.relink_at = None
            self.socket.connect(self.server)
            self.last_heard = now

    def reported_pairs(self):
        """[job, attempt] of finished reports the server has not acknowledged yet (of the
        current database)."""
        ours = self.runner.ours
        return [[e["job"], e["attempt"]] for _, events, _ in self.unacked.values() for e in events
                if e["type"] == "finished" and ours(e.get("database_id"))] + [
                    [e["job"], e["attempt"]] for e in self.outgoing
                    if ours(e.get("database_id"))]

    def register(self):
        """(Re)register; no report goes until the server answers (it may have another
        database by now: see on_registered)."""
        body = {"req": "register", "user": self.user, "host": self.host_name,
                "database_id": self.runner.database_id,
                "running": self.runner.running_pairs(), "reported": self.reported_pairs(),
                **self.facts, **self.sampler.sample(self.runner.adopted)}
        self.registered = False
        self.send_renewing(p.REGISTER, body)
        for seq in list(self.unacked):   # resend reports the old connection may have lost
            self.unacked[seq] = (0.0, *self.unacked[seq][1:])

    def on_registered(self, body):
        """The server's answer to REGISTER: its heartbeat interval and database. Reports and
        records of another database are dropped (its job ids mean other jobs here)."""
        self.registered = True
        heartbeat_s = body.get("heartbeat_s")
        if p.is_number(heartbeat_s) and 0.01 <= heartbeat_s <= 3600:
            if heartbeat_s != self.heartbeat_s:
                log.info("heartbeat every %ss, as the server says", heartbeat_s)
                self.next_heartbeat = min(self.next_heartbeat, time.time() + heartbeat_s)
            self.heartbeat_s = heartbeat_s
        database_id = safe_database_id(body.get("database_id"))
        if database_id is None:
            if body.get("database_id") is not None:
                log.warning("unusable database id from the server ignored: %.80r",
                            body.get("database_id"))
            return          # a server that does not say: everything counts as its own
        previous = self.runner.database_id
        dropped = self.runner.switch_database(database_id)
        dropped |= self.drop_reports(previous, database_id)
        for pair in dropped:
            self.runner.forget(*pair)

    def drop_reports(self, previous, database_id):
        """Take back the reports not yet acknowledged that belong to another database than
        `database_id` (adopted jobs' reports say theirs; the others are of `previous`): the
        (job, attempt) pairs dropped."""
        dropped = set()

        def keep(event):
            owner = event["database_id"] if "database_id" in event else previous
            if not owner or owner == database_id:
                return True
            dropped.add((event["job"], event["attempt"]))
            log.warning("%s report of job %s attempt %s dropped: recorded under database %s, "
                        "the server's is %s", event["type"], event["job"], event["attempt"],
                        owner, database_id)
            return False
        self.outgoing = [e for e in self.outgoing if keep(e)]
        for seq, (sent, events, mark) in list(self.unacked.items()):
            events = [e for e in events if keep(e)]
            if events:
                self.unacked[seq] = (sent, events, mark)
            else:
                del self.unacked[seq]
        return dropped

    def send(self, kind, body):
        """Send or drop (no connection yet); True if sent."""
        try:
            self.socket.send_multipart(p.encode(kind, body), zmq.NOBLOCK)
            return True
        except zmq.Again:
            log.debug("send of %s deferred: server not connected", kind.decode())
            return False

    def send_renewing(self, kind, body):
        """Send a REGISTER or HEARTBEAT numbered for the lease (the server repeats `n`)."""
        req = body["req"]
        body["n"] = n = self.lease.request_sent(req)
        if not self.send(kind, body):
            self.lease.withdraw(req, n)

    # -- loop ------------------------------------------------------------------------------
    def serve_forever(self):
        wakeup = self.watch_children()
        self.runner.leftovers.start()
        self.outgoing.extend(self.runner.adopt())
        self.connect()
        poller, polled = None, None
        while self.running:
            if polled is not self.socket:       # a new socket after reconnecting
                poller, polled = zmq.Poller(), self.socket
                poller.register(self.socket, zmq.POLLIN)
                poller.register(self.link, zmq.POLLIN)
                poller.register(wakeup, zmq.POLLIN)
            ready = dict(poller.poll(self.poll_timeout_ms()))
            if wakeup in ready:
                _drain(wakeup)
            if self.link in ready:
                self.link_events()
            if self.socket in ready:
                self.read_messages()
            now = time.time()
            self.relink(now)
            self.runner.enforce(now)
            self.start_and_reap()
            self.flush_events(now)
            if now >= self.next_heartbeat:
                self.heartbeat(now)
            self.check_server(now)
            self.check_lease()
            self.check_idle(now)
        self.runner.kill_all()

    def start_and_reap(self):
        """Reap ended children and give their slots on; again while children end during the
        starts (a start waits for its child's exec: the next slot is handed over at once)."""
        ended = True
        while ended:
            ended = self.runner.reap()
            self.outgoing.extend(ended)
            self.outgoing.extend(self.runner.start_waiting())

    def watch_children(self):
        """A pipe that becomes readable when a child ends (SIGCHLD through set_wakeup_fd):
        the loop sleeps in poll and still reaps at once."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        return read_end

    def check_idle(self, now):
        """After idle_s without jobs, ask the server (BYE) whether we may exit: it says no when
        it has just assigned us work, and forgets us when it says yes."""
        if self.runner.holds_jobs() or self.outgoing or self.unacked:
            self.last_busy = now
            return
        if not self.idle_s or now - self.last_busy < self.idle_s:
            return
        if self.bye_sent is None or now - self.bye_sent > BYE_AGAIN_S:
            self.bye_sent = now
            self.send(p.BYE, {"req": "bye"})

    def poll_timeout_ms(self):
        until = [self.next_heartbeat]
        deadline = self.runner.next_deadline()
        if deadline:
            until.append(deadline)
        if self.unacked and self.registered:
            until.append(min(self.lease.resend_at(sent, mark)
                             for sent, _, mark in self.unacked.values()))
        if self.outgoing and self.registered and self.may_report():
            until.append(self.last_report + REPORT_INTERVAL_S)
        if self.reconnect_at is not None:
            until.append(self.reconnect_at)
        if self.relink_at is not None:
            until.append(self.relink_at)
        if self.next_try() is not None:
            until.append(self.next_try() + 0.01)
        if self.runner.adopted:           # not our children: no SIGCHLD, so look often
            until.append(time.time() + ADOPTED_POLL_S)
        remaining = self.lease.remaining()
        if remaining is not None and self.runner.unfenced():
            until.append(time.time() + remaining)
        return max(0.0, min(until) - time.time()) * 1000

    def read_messages(self):
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.last_heard = self.last_contact = time.time()
            self.reconnect_at = None        # (a NOT_ACTIVE below sets it again)
            self.backoff = BACKOFF_START_S
            self.silent_tries = 0
            try:
                kind, body = p.decode(frames, kinds={p.OK, p.ERROR, p.RUN, p.KILL, p.STOP})
            except Exception as exc:
                log.warning("bad message from server ignored: %s", exc)
                continue
            try:
                self.on_message(kind, body)
            except Exception as exc:     # a malformed message must not stop the agent
                log.error("%s from the server not handled: %s: %s", kind.decode(),
                          type(exc).__name__, exc)
                log.debug("the message: %.500r", body, exc_info=True)

    def on_message(self, kind, body):
        if not self.running:
            return
        if kind == p.STOP:
            if self.runner.holds_jobs():
                log.warning("asked to stop while running jobs: staying")
            else:
                log.info("asked to stop by the server (cleanup): exiting")
                self.running = False
        elif kind == p.RUN:
            self.last_busy = time.time()
            envs = body.get("envs", {})
            if not isinstance(envs, dict):
                envs = {}
            database_id = safe_database_id(body.get("database_id"))
            for spec in body.get("jobs", []):
                scripts.attach(spec, body.get("scripts"))
                batch = spec.get("batch") if isinstance(spec, dict) else None
                refused = self.runner.assign(spec, envs.get(str(batch), {}), body.get("slots", 0),
                                             database_id)
                if refused:
                    self.outgoing.append(refused)
        elif kind == p.KILL:
            for job_id, attempt in body.get("jobs", []):
                event = self.runner.drop(job_id, attempt)
                if event:
                    self.outgoing.append(event)
                else:
                    self.runner.kill(job_id, attempt)
        elif kind == p.OK and body.get("req") == "unrecorded":
            self.server_recording = False   # read, but its commits fail: report on
        elif kind == p.OK and body.get("req") == "events":
            self.server_recording = True
            events = self.unacked.pop(body.get("seq"), (None, ()))[1]
            for event in events:
                if event["type"] == "finished":
                    self.runner.forget(event["job"], event["attempt"])
        elif kind == p.OK and body.get("req") == "register":
            self.lease.answered("register", True, body)
            self.on_registered(body)
            self.metrics_wanted(body)
        elif kind == p.OK and body.get("req") == "heartbeat":
            self.lease.answered("heartbeat", True, body)
            if body.get("recording") is False:   # (until an acknowledgement comes)
                self.server_recording = False
            self.metrics_wanted(body)
            self.interval_told(body.get("every"))
        elif kind == p.OK and body.get("req") == "bye":
            self.bye_sent = None
            if body.get("bye") is True:
                log.info("idle for %.0fs: the server let us go; exiting", self.idle_s)
                self.running = False
            else:
                self.last_busy = time.time()
        elif kind == p.ERROR:
            if body.get("req") in RENEWING:
                self.lease.answered(body.get("req"), False)
            if body.get("code") == "NOT_ACTIVE":
                if self.reconnect_at is None:
                    log.info("%s is a standby: trying the next address", self.server)
                    self.reconnect_at = time.time() + NOT_ACTIVE_PAUSE_S
            elif body.get("code") == "UNKNOWN_AGENT":
                if self.registered:     # once for a burst of them (a restarted server)
                    log.info("server does not know this agent: registering again")
                    self.register()
            else:
                log.error("server refused %s: %s [%s]", body.get("req"), body.get("message"),
                          body.get("code"))
                if body.get("req") == "register":
                    self.running = False

    def flush_events(self, now):
        """Send the events that came (one EVENTS) once the last report is acknowledged: one in
        flight, the events meanwhile go together in the next (`may_report`). Unacknowledged
        reports go again as `Lease.resend_at` says."""
        if not self.registered:
            return
        if self.outgoing and self.may_report() and now - self.last_report >= REPORT_INTERVAL_S:
            self.last_report = now
            self.seq += 1
            self.unacked[self.seq] = (now, self.outgoing, self.lease.next_n)
            self.send(p.EVENTS, {"req": "events", "seq": self.seq, "events": self.outgoing})
            self.outgoing = []
        for seq, (sent, events, mark) in list(self.unacked.items()):
            if now >= self.lease.resend_at(sent, mark):     # (not to a server only behind)
                self.unacked[seq] = (now, events, self.lease.next_n)
                self.send(p.EVENTS, {"req": "events", "seq": seq, "events": events})

    def may_report(self):
        """Whether a new report may go: the last one is acknowledged, or the server says it
        cannot record now (its acknowledgements wait for a commit; it still reads reports and
        frees the slots of jobs that ended). A report every 5 ms to a server behind queued
        dozens at its connection, which the server reads one per round of its 10,000: the
        heartbeats behind them went unanswered past the lease (MySQL, 1 M jobs, 10 users:
        15,000 to 85,000 jobs fenced in a run)."""
        return not self.unacked or not self.server_recording

    def heartbeat(self, now):
        """Liveness and our jobs; the host's metrics too if the server asks this agent for
        them (one agent a host gathers them, not every user's)."""
        self.next_heartbeat = now + self.heartbeat_s
        if not self.registered:     # the REGISTER is unanswered: the server does not know us
            return
        body = {"req": "heartbeat", "running": self.runner.running_pairs(),
                "reported": self.reported_pairs(), "every": self.heartbeat_s}
        if self.reports_metrics:
            body.update(self.sampler.sample(self.runner.adopted))
        self.send_renewing(p.HEARTBEAT, body)

    def interval_told(self, every):
        """A HEARTBEAT reply may set how often to heartbeat (the host's reporter every
        heartbeat_s, the other users' agents less often); each heartbeat says which it keeps."""
        if p.is_number(every) and 0.01 <= every <= 3600 and every != self.heartbeat_s:
            log.info("heartbeat every %ss, as the server says", every)
            self.heartbeat_s = every
            self.next_heartbeat = min(self.next_heartbeat, time.time() + every)

    def metrics_wanted(self, body):
        """REGISTER and HEARTBEAT replies may say whether the server wants this agent's
        metrics; a reply that does not say changes nothing (an older server wants them)."""
        wanted = body.get("metrics")
        if isinstance(wanted, bool) and wanted != self.reports_metrics:
            log.info("host metrics %s", "reported by this agent" if wanted
                     else "reported by another user's agent")
            self.reports_metrics = wanted

    def check_lease(self):
        """Fencing: once the lease has expired the server may requeue our jobs at any time, so
        none may run here any more: they are killed (and waiting ones dropped) at once, and
        reported as fenced when the server is back (it requeues them unless it already has)."""
        if self.lease.expired() and self.runner.unfenced():
            self.outgoing.extend(self.runner.fence(
                f"{p.FENCED}: no answer from hq-server within the lease ({self.lease.lease_s:g}s)"))

    def check_server(self, now):
        """Paranoid Pirate: REGISTER again with backoff when the server has gone silent. The
        socket stays: libzmq reconnects it by itself, and a new socket would only cost the
        server another handshake (10,000 of them after a restart) and lose what is queued."""
        silent = now - self.last_heard
        orphaned = now - self.last_contact
        if orphaned > self.orphan_s and not self.runner.holds_jobs():
            log.info("no server for %.0fs and no jobs: exiting", orphaned)
            self.running = False
        elif self.relink_at is not None:        # giving way: the lease holds till then
            return
        elif len(self.servers) > 1:
            self.follow_active(now, silent)
        elif silent > 3 * self.heartbeat_s:
            if self.reconnect_at is None:       # jittered: the agents of a restarted server
                delay = self.backoff * random.uniform(0.5, 1.5)     # do not all come at once
                self.reconnect_at = now + delay
                log.warning("server silent for %.1fs: registering again in %.1fs", silent, delay)
            elif now >= self.reconnect_at:      # (the REGISTER has 3 heartbeats for its
                self.reconnect_at = None        # answer, as a server busy with thousands
                self.backoff = min(BACKOFF_MAX_S, self.backoff * 2)  # of them may need)
                self.register()
                self.last_heard = now

    def follow_active(self, now, silent):
        """Several addresses (an active server and standbys): a silent server (3 heartbeats;
        a REGISTER unanswered for TRY_S) or a NOT_ACTIVE answer moves the agent to the next
        address at once; only a whole round of silent addresses waits (backoff)."""
        if self.reconnect_at is None and silent > (3 * self.heartbeat_s if self.registered
                                                   else TRY_S):
            self.silent_tries += 1
            delay = 0.0
            if self.silent_tries % len(self.servers) == 0:
                delay, self.backoff = self.backoff, min(BACKOFF_MAX_S, self.backoff * 2)
            log.warning("%s silent for %.1fs: trying the next address in %.0fs", self.server,
                        silent, delay)
            self.reconnect_at = now + delay
        if self.reconnect_at is not None and now >= self.reconnect_at:
            self.reconnect_at = None
            self.server = self.servers[(self.servers.index(self.server) + 1) % len(self.servers)]
            log.info("connecting to %s", self.server)
            self.connect()

    def next_try(self):
        """When follow_active must look again (an unanswered REGISTER's TRY_S)."""
        if len(self.servers) > 1 and not self.registered and self.reconnect_at is None:
            return self.last_heard + TRY_S
        return None


def _drain(fd):
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def write_pidfile(path):
    """Our pid into `path`, over what it holds (no new disk block needed when the file is
    there already, as the user-server writes it first). A full disk does not stop the agent:
    its jobs need it more than the pidfile does."""
    data = f"{os.getpid()}\n".encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
    except OSError as exc:
        log.error("cannot write the pidfile %s: %s", path, exc)


def curve_keys(args):
    """(server public, user public, user secret) when --server-key is given, else None."""
    if not args["--server-key"]:
        return None
    key_file = args["--key-file"] or security.cert_paths(
        os.path.abspath(os.path.expanduser(os.environ.get("HQ_HOME") or "~/.hq")),
        security.USER_CERT)[1]
    return (args["--server-key"].encode(), *security.load_keypair(key_file))


def main(argv=None):
    from docopt import docopt
    args = docopt(__doc__, argv=argv)
    logs.setup(args["--log-level"], args["--log-file"])
    server = args["--server"] or os.environ.get("HQ_SERVER") or "tcp://localhost:10101"
    host_name = args["--host-name"] or socket.gethostname().split(".")[0]
    from hq.proctitle import set_title
    set_title(f"hq-exec-server {args['--user'] or getpass.getuser()}@{host_name}")
    try:
        agent = Agent(server, host_name, args["--user"] or getpass.getuser(),
                      float(args["--heartbeat"]), float(args["--orphan"]), curve_keys(args),
                      float(args["--idle"]), args["--state-dir"])
    except (ValueError, HQError) as exc:
        print(f"hq-exec-server: {exc}", file=sys.stderr)
        return 2

    def stop(signum, frame):
        agent.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pidfile = args["--pidfile"]
    if pidfile:
        write_pidfile(pidfile)
    log.info("agent for %s on %s connecting to %s", agent.user, host_name, server)
    try:
        agent.serve_forever()
    finally:
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
