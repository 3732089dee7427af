"""hq-server: the ROUTER broker. One loop turn reads a burst of messages, lets the handlers change
the core, schedules, commits all changes in one transaction (group commit), and only then sends.

Usage:
  hq-server [--port=N] [--bind=ADDR] [--metrics-port=N] [--log-level=LEVEL]
            [--log-file=FILE]
  hq-server (-h | --help)

Options:
  --port=N           TCP port (default: port of HQ_SERVER, else etc/hq.cfg, else 10101).
  --bind=ADDR        Address to listen on (default: [server] bind in etc/hq.cfg).
  --metrics-port=N   Serve Prometheus metrics on http://127.0.0.1:N/metrics (off by default).
  --log-level=LEVEL  DEBUG, INFO, WARNING or ERROR [default: INFO].
  --log-file=FILE    Log here instead of standard error.
"""

import logging
import os
import signal
import socket
import sys
import time

import zmq

from hq import config, logs, protocol as p, security
from hq.errors import CONFIG_ERROR, DATABASE_ERROR, INTERNAL, NOT_ACTIVE, HQError
from hq.server import dispatch, fleet, handlers, limits, pushes, standby, wire, zap
from hq.server.core import Core
from hq.server.dbprobe import DatabaseProbe
from hq.server.dbwait import DatabaseWait, WaitedStore
from hq.server.intake import Intake
from hq.server.parking import Parking
from hq.store import open_store

log = logging.getLogger("hq.server")

MAX_MESSAGES_PER_TURN = 2000
MAX_ROWS_PER_TURN = 2000    # a turn stops reading at this many rows to commit ...
MAX_READ_S = 0.05           # ... or after reading this long (a machine short of CPU)
PEER_QUEUE = 50             # messages queued each way per connection: beyond, what a peer does
                            # not read waits in wire.Sender (16 MB at most, then it loses them:
                            # a RUN or KILL, it is counted gone), and one that sends faster than
                            # the loop reads waits (TCP backpressure)
RETRY_S = 0.01              # what a peer's full queue refused is tried again this soon
CHEAP_READ_S = 0.05         # then heartbeats and reads are handled this much longer
BATCH_S = 0.005             # turns of a loop whose turns read BATCH_MESSAGES or more
BATCH_MESSAGES = 4          # start at most this often
LAZY_COMMIT_S = 1.0         # heartbeat rows alone are committed at most this often
TICK_S = 0.5
PRUNE_EVERY_S = 60.0
RETENTION_BATCH = 1000      # finished jobs deleted per transaction by [server] job_retention_days
ENV_PRUNE_TICKS = 20        # environments of finished batches are dropped every 10 s
SLOW_TURN_S = 1.0           # a turn that lasts longer is logged with the time of each stage


class Loop:
    """The socket, the turn, the group commit and the periodic work around one Core."""

    def __init__(self, settings, store, bind_address, keypair):
        self.settings = settings
        self.context = zmq.Context.instance(io_threads=settings.io_threads)
        self.core = Core(settings, None, time.time())
        self.dbwait = DatabaseWait(self.core, self.may_answer)   # during slow store calls
        self.store = self.core.store = WaitedStore(store, self.dbwait)
        self.core.address = bind_address
        self.core.database_id = store.database_id()
        self.core.parking = Parking(self.core, self.store,
                                    max(1, settings.max_live_jobs_per_user))
        self.pushes = pushes.attach(self.core)     # ENDED to user-servers after each commit
        self.ticks = 0
        self.next_prune = 0.0
        self.retention_cursor = 0   # the last job id looked at by the current retention sweep
        self.next_retention = 0.0
        self.next_tick = 0.0
        self.probe = DatabaseProbe(store)    # while commits fail (its own thread: the raw store)
        self.last_commit = 0.0      # time.monotonic() of the last commit
        self.db_error = None        # the last commit error while the database is failing
        self.again = False
        self.last_read = 0          # messages the last turn read
        self.stages = []            # (stage, seconds) of the current turn (SLOW_TURN_S)
        self.reporters = set()      # agents whose reports the turn read (answer_unrecorded)
        self.turns = 0              # held users' messages go first every other turn
        self.submitted = False      # the last commit accepted submissions: schedule them at once
        self.exporter = None        # Prometheus metrics, when --metrics-port is given
        self.lease = None           # with [server] standby: this server's lease (lease.py)
        self.stepped_down = None    # why this server stopped being the active one
        self.next_export = 0.0
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)   # a reconnecting agent keeps its id
        self.socket.setsockopt(zmq.SNDHWM, PEER_QUEUE)    # bounded memory per connection
        self.socket.setsockopt(zmq.RCVHWM, PEER_QUEUE)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.setsockopt(zmq.MAXMSGSIZE, settings.max_message_bytes + 4096)
        self.socket.setsockopt(zmq.BACKLOG, limits.listen_backlog())   # agents come back at once
        users = {name: {"key": row["public_key"], "enabled": row["enabled"]}
                 for name, row in store.load_users().items()}
        # the ZAP handler must run before the first connection
        self.authenticator = zap.start(self.context, security.user_keys(users))
        security.make_server_socket(self.socket, *keypair)
        self.dbwait.socket = self.socket
        self.intake = self.dbwait.intake = Intake(self.socket, self.renew)
        self.sender = wire.Sender(self.socket)      # a burst to one peer waits, not lost

    def load(self):
        core, now = self.core, time.time()
        began = time.monotonic()
        count = core.load(self.store, now, core.parking.restart_load())
        core.parking.after_load()
        core.tally.recount(self.store, now)
        self.refresh_keys()
        loaded = time.time()            # the agents' time to come back runs from here
        fleet.expect_agents(core, loaded)
        core.parking.lean_until = loaded + fleet.restart_window(core)
        log.info("loaded %d hosts, %d users, %d live jobs in %.2fs (database %s)",
                 len(core.hosts), len(core.users), count, time.monotonic() - began,
                 core.database_id)
        limits.check_open_files(len(core.hosts), len(security.user_keys(core.users)))
        if hasattr(self.store, "serving"):
            self.store.serving()

    def listen(self):
        """Bind once loaded: agents that come back meanwhile are refused and retry (libzmq,
        every 2 s at most), instead of their 10,000 CURVE handshakes and their requests
        competing with the load for the interpreter (a 1.8 s load took 7.5 s beside them)."""
        try:
            bind_after_close(self.socket, self.core.address)
        except zmq.ZMQError as exc:
            raise HQError(CONFIG_ERROR, f"cannot listen on {self.core.address}: {exc}") \
                from None

    def refresh_keys(self):
        self.core.keys_changed = False
        self.authenticator.set_keys(security.user_keys(self.core.users))

    # -- the loop ----------------------------------------------------------------------------
    def serve_forever(self):
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        last_turn = 0.0
        while self.core.running and self.leased():
            timeout = 0 if self.again or self.intake.waiting() else \
                max(0, min(RETRY_S if self.sender.waiting else TICK_S,
                           self.next_tick - time.time())) * 1000
            self.again = False
            poller.poll(timeout)
            pause = last_turn + self.pause_s() - time.time()
            if pause > 0:                     # let more messages share a turn and a commit
                time.sleep(pause)
            self.submitted = False
            last_turn = time.time()
            self.turn()
        if self.stepped_down is None:
            self.commit(lazy=False)
        self.probe.close()
        self.dbwait.close()
        self.socket.close(linger=0 if self.stepped_down else 1000)
        if self.lease is not None:
            self.lease.stop()
            if self.stepped_down is None:
                self.lease.release()
        self.authenticator.stop()
        self.context.term()   # flushes the last replies (e.g. to 'shutdown') before exit

    def leased(self):
        """With a standby: whether this server may still act (its lease holds); once not, it
        steps down at once: nothing more is committed or sent, and hq-server exits."""
        if self.lease is None or self.stepped_down is not None:
            return self.stepped_down is None
        if not self.lease.held():
            self.step_down(self.lease.why_not_held())
        return self.stepped_down is None

    def may_answer(self):
        """Whether this server may answer agents now (its lease holds); the DatabaseWait's
        watcher asks from its thread, so this only reads."""
        return self.stepped_down is None and (self.lease is None or self.lease.held())

    def step_down(self, why):
        log.error("stepping down: %s", why)
        self.stepped_down = why
        self.core.running = False

    def pause_s(self):
        """How long after the last turn's start the next one waits: the commit interval while
        jobs queue for slots; BATCH_S while messages come faster than turns (thousands of
        agents' heartbeats: each turn then reads many, and the socket's and libzmq's per-wakeup
        costs are shared); else none: a quiet cluster answers every message at once."""
        if self.busy():
            return self.settings.commit_interval_s
        return BATCH_S if self.last_read >= BATCH_MESSAGES else 0.0

    def busy(self):
        """Whether jobs queue for slots (and no submission waits to be scheduled): only then
        does a turn wait for the commit interval; a quiet cluster answers every message at once."""
        return len(self.core.pending) > 0 and not self.submitted

    def turn(self):
        began = time.monotonic()
        self.stages = []
        self.reporters.clear()
        self.turns += 1
        self.run_turn()
        took = time.monotonic() - began
        if took > SLOW_TURN_S:
            log.warning("slow turn: %.2fs (%s; %d messages)", took, ", ".join(
                f"{name} {seconds:.2f}s" for name, seconds in self.stages), self.last_read)

    def stage(self, name, since):
        """Note how long a stage of the turn took (logged if the turn is slow); returns now."""
        now = time.monotonic()
        self.stages.append((name, now - since))
        return now

    def run_turn(self):
        core = self.core
        core.now = time.time()
        mark = time.monotonic()
        self.sender.retry()
        until = time.monotonic() + MAX_READ_S
        self.last_read = 0
        if self.intake.waiting():   # what came while the last turn scheduled and committed
            self.read_cheap()
        for _ in range(MAX_MESSAGES_PER_TURN):
            if self.rows() >= MAX_ROWS_PER_TURN or time.monotonic() > until:
                self.again = True
                self.read_cheap()
                break
            frames, answered = self.next_message()
            if frames is None:
                core.drained_at = time.time()   # what arrives from now on was sent later
                break
            self.take(frames, answered)
        else:
            self.again = True
        if not self.leased():
            return
        mark = self.stage("read", mark)
        ticked = core.now >= self.next_tick
        if ticked:
            self.tick()
            self.next_tick = core.now + TICK_S
            mark = time.monotonic()
        if core.changed or ticked:     # the tick also catches changed host metrics
            core.changed = False
            dispatch.schedule(core)
            mark = self.stage("schedule", mark)
        if core.keys_changed:
            self.refresh_keys()
        self.pushes.queue()
        if self.again:              # a long turn: reads and heartbeats wait for no stage
            self.read_cheap()
        mark = self.stage("read", mark)
        self.commit()
        self.stage("commit", mark)

    def take(self, frames, answered=False):
        """Handle one message; replies that record nothing leave at once, unless a watcher
        gave it one (and a deposed server says nothing)."""
        self.last_read += 1
        if len(frames) == 4 and frames[2].bytes == p.EVENTS:
            self.reporters.add(frames[0].bytes)
        self.handle(frames)
        now_replies = self.core.outbox.take_now()
        if not answered and self.may_answer():
            for identity, reply in now_replies:
                self.send(identity, reply)

    def read_cheap(self):
        """The turn's budget is spent (or, in a long turn, before its commit and at the start
        of the next): for up to CHEAP_READ_S, handle heartbeats and reads and hold the rest for
        the next turn (intake.py), so that no agent's heartbeat and no user's read waits
        behind a backlog or a stage (nor behind what the database watcher held)."""
        until = time.monotonic() + CHEAP_READ_S
        for _ in range(MAX_MESSAGES_PER_TURN):
            if time.monotonic() > until:
                return
            frames = self.intake.next_cheap()
            if frames is None:
                if not self.intake.held and not self.intake.full():
                    self.core.drained_at = time.time()
                return
            self.take(frames)

    def next_message(self):
        """(frames, answered) of the next message: those held (by the last turn, or by the
        database watcher) come first, in order; (None, False) when there is none."""
        if self.intake.held:
            held = self.intake.take_held(users_first=self.turns % 2 == 0)
            if held is not None:
                return held
        return self.intake.receive(), False

    def rows(self):
        """Rows the turn will commit so far: its events (one per job transition) and the jobs
        of its submissions. A turn stops reading at MAX_ROWS_PER_TURN (or MAX_READ_S), so its
        commit stays short and every agent hears from the server well within 3 heartbeats."""
        core = self.core
        return len(core.writes.events) + sum(len(sub.jobs) for sub in core.staged)

    def renew(self, frames):
        """Renew now the lease of a heartbeat held behind its agent's earlier messages (intake:
        its jobs are reconciled in order later, without a second reply); whether it was."""
        if not self.may_answer():
            return False
        identity = frames[0].bytes
        try:
            kind, body = p.decode(frames[1:], max_body=self.settings.max_message_bytes)
            reply = handlers.agent.renew(self.core, handlers.Peer(
                identity, frames[1].get("User-Id")), body)
        except HQError:
            return False            # (an unknown agent: its turn answers it)
        return self.send(identity, p.ok(body.get("req"), **reply, behind=True))

    def handle(self, frames):
        identity, frames = frames[0].bytes, frames[1:]
        req = None
        user = frames[0].get("User-Id") if frames else None   # ZAP named the key's user
        try:
            kind, body = p.decode(frames, max_body=self.settings.max_message_bytes)
            req = body.get("req")
            handlers.handle(self.core, handlers.Peer(identity, user), kind, body)
        except HQError as exc:
            log.warning("%s from %s refused: %s", kind_name(frames), peer_name(identity, user),
                        exc)
            self.send(identity, p.error(req, exc.code, exc.message, exc.index))
        except Exception:  # a bug must not stop the broker
            log.exception("internal error handling a message")
            self.send(identity, p.error(req, INTERNAL, "internal server error (see server log)"))

    def send(self, identity, frames):
        try:
            if self.sender.send(identity, frames):
                return True
            why = "it reads nothing: its queue and 16 MB more are full"
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY): nothing to deliver to
            why = exc
        log.info("cannot send %s to %s: %s", frames[1].decode(), peer_name(identity), why)
        return False

    # -- periodic work -----------------------------------------------------------------------
    def tick(self):
        core = self.core
        mark = time.monotonic()
        fleet.check_liveness(core, core.now)
        mark = self.stage("liveness", mark)
        core.release_awaited(core.now)
        fleet.request_agents(core)
        mark = self.stage("agents", mark)
        core.parking.refill(core.now, core.cancelled_batches)
        mark = self.stage("refill", mark)
        self.ticks += 1
        if self.ticks % ENV_PRUNE_TICKS == 0:
            core.prune_envs()
        if core.now >= self.next_prune:
            self.next_prune = core.now + PRUNE_EVERY_S
            core.writes.prune_metrics_before = core.now - self.settings.metrics_retention_s
        if self.settings.job_retention_days > 0 and core.now >= self.next_retention:
            self.prune_jobs()
        if self.exporter is not None and core.now >= self.next_export:
            self.exporter.refresh(core)
            self.next_export = core.now + 2.0
        self.stage("periodic", mark)

    def prune_jobs(self):
        """One small step of the retention sweep (a transaction of at most RETENTION_BATCH
        jobs per tick while there is more to delete, then a pause of at most PRUNE_EVERY_S)."""
        keep_s = self.settings.job_retention_days * 86400
        before, pause = self.core.now - keep_s, min(PRUNE_EVERY_S, keep_s / 10)
        try:
            counts = self.store.prune_finished(before, RETENTION_BATCH, self.retention_cursor)
        except HQError as exc:
            log.warning("retention: %s", exc.message)
            self.next_retention = self.core.now + pause
            return
        if counts["jobs"]:
            self.core.tally.stale = True
            log.info("retention: %d finished jobs and %d events older than %s deleted",
                     counts["jobs"], counts["job_events"], time.ctime(before))
        if counts["scanned"] < RETENTION_BATCH:
            self.retention_cursor, self.next_retention = 0, self.core.now + pause
        else:
            self.retention_cursor = counts["last_id"]

    # -- group commit ------------------------------------------------------------------------
    def commit(self, lazy=True):
        core = self.core
        if self.db_error is not None and lazy and \
                not self.probe.ready(time.time(), bool(core.staged)):
            self.while_down()   # never wait on a failing database: agents must hear from us
            return
        if lazy and self.lazy():
            self.flush()    # what it sends waits for nothing these rows record
            return
        started = time.monotonic()
        try:
            self.store.apply(core.writes, *(s.writes for s in core.staged))
        except HQError as exc:
            if exc.code == NOT_ACTIVE:
                self.step_down(exc.message)
            else:
                self.database_failed(exc, time.monotonic() - started)
            return
        self.committed(core.staged)

    def lazy(self):
        """Whether this turn's commit may wait: it would write only hosts' heartbeat rows and
        metrics samples (no job, user or setting changes, no submission, no reply to a user),
        and the last commit was less than LAZY_COMMIT_S ago. Agents' heartbeats alone then
        cost about one commit (an fsync on SQLite) a second, not one per turn."""
        core, w = self.core, self.core.writes
        if core.staged or core.outbox.replies or time.monotonic() - self.last_commit \
                >= LAZY_COMMIT_S:
            return False
        return not (w.batches or w.batch_growth or w.jobs or w.job_updates or w.events
                    or w.settings or w.user_updates or w.parked_cancels or w.reservations
                    or w.reservations_deleted or w.prune_metrics_before is not None)

    def committed(self, accepted):
        """The turn's changes are in the database: the core makes the accepted submissions
        live, then everything that waited for the commit is sent."""
        self.last_commit = time.monotonic()
        if self.db_error is not None:
            log.info("database back: pending changes committed")
        self.db_error = None
        self.probe.recovered()
        self.core.after_commit(accepted, time.time())
        if not accepted and self.core.tally.due(self.core.now):   # (accepting may already
            self.core.tally.recount(self.store, self.core.now)   # change what is not committed)
        self.again = self.again or bool(accepted)
        self.submitted = bool(accepted)
        self.flush()

    def flush(self):
        replies, messages = self.core.outbox.take()
        for identity, req, fields in replies:
            self.send(identity, p.ok(req, **fields))
        for identity, kind, frames in messages:
            if not self.send(identity, frames) and kind in (p.RUN, p.KILL, p.SPAWN, p.STOP,
                                                             p.ENDED):
                fleet.undeliverable(self.core, identity, self.core.now)

    def database_failed(self, exc, took):
        """Find out whether a submission made the commit fail: without the turn's submissions,
        the other changes are committed and each submission is tried alone. If the database
        itself fails, every change is kept to retry with backoff and the requests are told."""
        core = self.core
        staged, core.staged = core.staged, []
        if staged and self._try(core.writes):
            self.committed([sub for sub in staged if self._try(sub.writes, sub)])
            return
        log.error("commit failed (retried when the database answers): %s", exc.message)
        for sub in staged:
            self.refuse(sub, exc.message)
        self.db_error, core.db_ok = exc.message, False
        self.probe.failed(time.time(), took)
        self.answer_unrecorded(exc.message)

    def while_down(self):
        """A turn while the database fails and no probe has reached it yet: submissions are
        refused at once, the other requests answered as in a failed commit; what the turn
        changed stays in the core's writes for the next commit."""
        core = self.core
        staged, core.staged = core.staged, []
        for sub in staged:
            self.refuse(sub, self.db_error)
        self.answer_unrecorded(self.db_error)

    def _try(self, writes, sub=None):
        """Commit `writes` alone; a submission that fails it is refused."""
        try:
            self.store.apply(writes)
            return True
        except HQError as exc:
            if exc.code == NOT_ACTIVE:
                self.step_down(exc.message)
            elif sub is not None:
                log.warning("batch %s of %s refused: %s", sub.batch, sub.jobs[0].user,
                            exc.message)
                self.refuse(sub, exc.message)
            return False

    def refuse(self, sub, why):
        self.core.broken_batches.add(sub.batch)
        self.send(sub.identity, p.error(sub.req, DATABASE_ERROR,
                                        f"submission not accepted: {why}"))

    def answer_unrecorded(self, why):
        """Requests of a turn whose commit failed learn that their change waits for the
        database (it is kept and retried); reads were answered when they were handled.
        Agents whose reports the turn read are told `unrecorded`: their acknowledgements wait
        for a commit, and they report on without them meanwhile (one report in flight
        otherwise), so the server hears of jobs' ends and frees their slots."""
        outbox = self.core.outbox
        replies, outbox.replies = outbox.replies, []
        for identity, req, _ in replies:
            self.send(identity, p.error(req, DATABASE_ERROR, "the database is unavailable "
                                        f"({why}): the change is kept and will be recorded "
                                        "when it is back"))
        for identity in self.reporters:
            self.send(identity, p.ok("unrecorded"))


def kind_name(frames):
    """The message kind for the log (the decoded text, at most 16 characters)."""
    return frames[1].bytes[:16].decode("ascii", "replace") if len(frames) > 1 else "a message"


def peer_name(identity, user=None):
    """A peer for the log: its routing id as text (agents and user-servers name themselves:
    `agent:USER@HOST:PID`; a client's is random bytes) and the user its key belongs to."""
    name = identity[:80].decode("utf-8", "replace") if identity[:1] != b"\0" \
        else identity.hex()[:16]
    return name if user is None else f"{name} (user {user})"


def start_exporter(loop, port):
    from hq.server.exporter import Exporter
    try:
        loop.exporter = Exporter(port)
    except OSError as exc:
        raise HQError(CONFIG_ERROR, f"cannot serve metrics on port {port}: {exc}") from None
    loop.core.listeners.append(loop.exporter.on_transition)
    loop.exporter.refresh(loop.core)


def bind_after_close(sock, address, timeout=3.0):
    """Bind, waiting a little while the port is still held by a socket just closed (the
    standby's, which libzmq releases in its I/O thread)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sock.bind(address)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def take_lease(settings, store, address, home):
    """[server] standby: wait (answering NOT_ACTIVE) until this server holds the lease, then
    fence every group commit by its term."""
    from hq.server.lease import ServerLease
    if store.dialect != "mysql":
        raise HQError(CONFIG_ERROR, "[server] standby needs the MySQL backend: an embedded "
                      "SQLite database cannot be shared by two hq-servers")
    security.ensure_keypair(home, security.SERVER_CERT)
    keypair = security.load_keypair(security.cert_paths(home, security.SERVER_CERT)[1])
    lease = ServerLease(store, f"{socket.gethostname()} {address} pid {os.getpid()}",
                        settings.server_lease_s)
    if not store.end_idle_transactions(max(1, settings.server_lease_s - 1)):
        log.warning("this MySQL cannot end a crashed server's open transaction early "
                    "(no idle_transaction_timeout): a takeover may wait for its wait_timeout")
    standby.wait_for_lease(lease, address, keypair, settings.max_message_bytes)
    store.fence = lease.check
    lease.start()
    return lease


def start(settings, port=None, bind=None):
    """Open the store, sync etc/ into it, bind, load: a Loop ready for serve_forever()."""
    zmq.Context.instance(io_threads=settings.io_threads)    # the standby's socket's too
    store = open_store(config.load_db_config(settings.etc))
    store.check_schema()
    address = f"tcp://{bind or settings.bind}:{port or settings.port}"
    lease = take_lease(settings, store, address, config.home_dir()) if settings.standby \
        else None
    users = config.load_users(settings.etc)
    me, home = config.current_user(), config.home_dir()
    store.add_users(users + [(me, ["USER", "ADMIN"])])
    store.add_hosts(config.load_cluster(settings.etc))
    security.register_local_user(store, home, me)
    keypair = security.load_keypair(security.cert_paths(home, security.SERVER_CERT)[1])
    limits.raise_open_files()
    if lease is None:       # (a standby's own socket may hold the port for a moment yet)
        limits.check_port(address)
    loop = Loop(settings, store, address, keypair)
    loop.lease = lease
    loop.load()
    loop.listen()
    return loop


def main(argv=None):
    from docopt import docopt
    args = docopt(__doc__, argv=argv)
    from hq.proctitle import set_title
    set_title("hq-server")
    logs.setup(args["--log-level"], args["--log-file"])
    try:
        settings = config.load_settings()
        port = int(args["--port"]) if args["--port"] else None
        loop = start(settings, port, args["--bind"])
        if args["--metrics-port"]:
            start_exporter(loop, int(args["--metrics-port"]))
    except (HQError, ValueError) as exc:
        print(f"hq-server: {exc}", file=sys.stderr)
        return 1

    def stop(signum, frame):
        loop.core.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"hq-server listening on {loop.core.address} (database: {loop.store.describe()}, "
          f"pid {os.getpid()})", flush=True)
    loop.serve_forever()
    if loop.stepped_down:
        print(f"hq-server: stepped down: {loop.stepped_down}", file=sys.stderr)
        return 3
    log.info("hq-server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
