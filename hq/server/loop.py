"""hq-server: the ROUTER broker. One loop turn reads a burst of messages, schedules, commits
all changes in one transaction (group commit), and only then sends replies and dispatches.

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

import json
import logging
import os
import signal
import sys
import time

import zmq

from hq import config, logs, protocol as p, security
from hq.server.handlers import agent as agentlink, user as requests
from hq.server.ahead import Ahead
from hq.errors import (CONFIG_ERROR, DATABASE_ERROR, INTERNAL, PERMISSION_DENIED, UNKNOWN_USER,
                       HQError)
from hq.model import ACTIVE, DOWN, UNKNOWN, UP
from hq.server.scheduler import place
from hq.server.parking import Parking, after_load
from hq.server.core import ClusterState, job_path
from hq.store import open_store
from hq.store.writes import Writes

log = logging.getLogger("hq.server.loop")

MAX_MESSAGES_PER_TURN = 2000
TICK_S = 0.5
PRUNE_EVERY_S = 60.0
ENV_PRUNE_TICKS = 20        # environments of finished batches are dropped every 10 s
DEFERRED = object()


class Server:
    def __init__(self, settings, store, bind_address, keypair=None):
        self.settings = settings
        self.store = store
        self.address = bind_address
        self.state = ClusterState()
        self.started = time.time()
        self.now = self.started
        self.running = True
        self.outbox = []            # (identity, frames) sent after the turn's commit
        self.staged = []            # submissions waiting for the commit: see stage_submission
        self.staged_writes = Writes()
        self.broken_batches = set()     # batches whose later chunks are refused (error, cancel)
        self.cancelled_batches = set()  # batches cancelled as a whole
        self.ahead = Ahead()        # short jobs may wait at agents: see hq/ahead.py
        self.parking = Parking(self.state, store, max(1, settings.max_live_jobs_per_user))
        self.env_texts = {}         # batch -> its environment as JSON text (see env_json)
        self.ticks = 0
        self.current = None         # (identity, req) of the message being handled
        self.peer_user = None       # user of the CURVE key the current message came with
        self.user_servers = {}      # user -> routing identity of that user's user-server
        self.spawn_asked = {}       # (user, host) -> time of the last SPAWN
        self.last_sample = {}       # host -> time of the last host_metrics row
        self.largest_pass = 0       # most jobs placed by one scheduling pass
        self.next_prune = 0.0       # next deletion of host_metrics rows past their retention
        self.next_tick = 0.0
        self.db_retry_at = 0.0
        self.db_backoff = 0.1
        self.db_error = None        # the last commit error while the database is failing
        self.again = False
        self.submitted = False      # the last commit accepted submissions: schedule them at once
        self.exporter = None        # Prometheus metrics, when --metrics-port is given
        self.next_export = 0.0
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)   # a reconnecting agent keeps its id
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.setsockopt(zmq.MAXMSGSIZE, settings.max_message_bytes + 4096)
        self.authenticator = None
        if keypair is not None:     # the ZAP handler must run before the first connection
            users = {name: {"key": row["public_key"], "enabled": row["enabled"]}
                     for name, row in store.load_users().items()}
            self.authenticator = security.start_authenticator(self.context,
                                                              security.user_keys(users))
            security.make_server_socket(self.socket, *keypair)
        self.socket.bind(bind_address)

    # -- loop ------------------------------------------------------------------------------
    def load(self):
        count = self.state.load(self.store, time.time(), self.parking.limit)
        after_load(self.parking, self.state)
        self.refresh_keys()
        self.state.expect_agents(time.time())
        log.info("loaded %d hosts, %d users, %d live jobs", len(self.state.hosts),
                 len(self.state.users), count)

    def serve_forever(self):
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        last_turn = 0.0
        while self.running:
            timeout = 0 if self.again else max(0, min(TICK_S, self.next_tick - time.time())) * 1000
            self.again = False
            poller.poll(timeout)
            pause = last_turn + self.settings.commit_interval_s - time.time()
            if pause > 0 and self.busy():     # let more messages share a commit
                time.sleep(pause)
            self.submitted = False
            last_turn = time.time()
            self.turn()
        self.commit()
        self.socket.close(linger=1000)
        if self.authenticator is not None:
            self.authenticator.stop()
        self.context.term()   # flushes the last replies (e.g. to 'shutdown') before exit

    def busy(self):
        """Whether jobs queue for slots (and no submission waits to be scheduled): only then
        does a turn wait for the commit interval; a quiet cluster answers every message at once."""
        return len(self.state.pending) > 0 and not self.submitted

    def refresh_keys(self):
        if self.authenticator is not None:
            self.authenticator.set_keys(security.user_keys(self.state.users))

    def turn(self):
        self.now = time.time()
        for _ in range(MAX_MESSAGES_PER_TURN):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self.handle(frames)
        else:
            self.again = True
        ticked = self.now >= self.next_tick
        if ticked:
            self.tick()
            self.next_tick = self.now + TICK_S
        if self.state.changed or ticked:     # the tick also catches changed host metrics
            self.state.changed = False
            self.schedule()
        self.commit()

    # -- messages ----------------------------------------------------------------------------
    def handle(self, frames):
        identity, frames = frames[0].bytes, frames[1:]
        req = None
        if self.authenticator is not None:   # ZAP named the user of the connection's key
            self.peer_user = frames[0].get("User-Id") if frames else None
        try:
            kind, body = p.decode(frames, max_body=self.settings.max_message_bytes)
            req = body.get("req")
            self.current = (identity, req)
            reply = self.dispatch_message(identity, kind, body)
        except HQError as exc:
            log.warning("request from %s refused: %s", identity.hex()[:12], exc)
            self.send(identity, p.error(req, exc.code, exc.message, exc.index))
            return
        except Exception:  # a bug must not stop the broker
            log.exception("internal error handling a message")
            self.send(identity, p.error(req, INTERNAL, "internal server error (see server log)"))
            return
        if reply is not DEFERRED and reply is not None:
            self.outbox.append((identity, p.ok(req, **reply)))

    def dispatch_message(self, identity, kind, body):
        if kind in agentlink.AGENT_REQUESTS:
            return agentlink.AGENT_REQUESTS[kind](self, identity, body)
        if kind in (p.OK, p.ERROR):
            return None
        user = self.check_user(body)
        if kind == p.SUBMIT and not self.state.users[user]["enabled"]:
            raise HQError(PERMISSION_DENIED, f"user {user!r} is disabled: no new jobs "
                          "(an admin can 'hq-admin enableuser:NAME')")
        if kind == p.PING:
            return {"pong": True}
        if kind == p.HELLO:
            self.user_servers[user] = identity
            log.info("user-server of %s connected", user)
            return {"heartbeat_s": self.settings.heartbeat_s}
        return requests.USER_REQUESTS[kind](self, user, body)

    def requester(self, body):
        """The user a message acts for: its CURVE key's (never a field), or with CURVE off
        (measurements only) the `user` field."""
        if self.authenticator is not None:
            return self.peer_user
        return p.field(body, "user", str)

    def check_user(self, body):
        user = self.requester(body)
        known = self.state.users.get(user)
        if known is None:
            raise HQError(UNKNOWN_USER, f"user {user!r} is not registered in etc/users")
        return user

    def send(self, identity, frames):
        try:
            self.socket.send_multipart([identity, *frames], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY): nothing to deliver to
            log.info("cannot send %s to %s: %s", frames[1].decode(), identity.hex()[:12], exc)
            return False

    # -- submissions -------------------------------------------------------------------------
    def stage_submission(self, user, specs, env, cwd, hold, ended=None, batch=None):
        """Stage a chunk (of `batch`, else of a new batch); `ended` maps dependencies that are
        no longer live to their states."""
        batch, jobs = self.state.stage_batch(self.staged_writes, user, specs, env, cwd, self.now,
                                             hold, batch)
        self.staged.append((self.current, batch, env, jobs, ended or {}))
        return DEFERRED

    def cancel_job(self, job):
        where = self.state.cancel(job, self.now)
        if where:
            host = self.state.hosts.get(where[0])
            identity = host.agents.get(job.user) if host else None
            if identity is not None:
                self.outbox.append((identity, p.encode(p.KILL, {"jobs": [[job.id, where[1]]]})))

    # -- scheduling --------------------------------------------------------------------------
    def schedule(self):
        state = self.state
        if not len(state.pending) or not state.cluster_active:
            return
        state.pending.tidy()
        disabled = {name for name, user in state.users.items() if not user["enabled"]}
        settings = self.settings
        result = place(state.pending, state.hosts.values(), state.user_slots, self.now,
                       state.reservations, disabled, reserve_after_s=settings.reserve_after_s,
                       outside_load=settings.outside_load, limit=settings.placement_limit)
        for job_id, host_name in result.reservations.items():
            if state.reservations.get(job_id) != host_name:
                log.info("job %s waited %.0fs: host %s reserved for it", job_id,
                         self.now - state.jobs[job_id].submitted, host_name)
                state.writes.event(job_id, self.now, "reserved", 0, host_name,
                                   f"host {host_name} reserved for this job")
        state.reservations = result.reservations
        self.largest_pass = max(self.largest_pass, len(result.assignments))
        if settings.placement_limit and len(result.assignments) >= settings.placement_limit:
            state.changed = True                # more may fit: another pass next turn
        self.send_runs(result.assignments)
        if len(state.pending):
            self.send_runs(self.schedule_ahead(disabled))

    def schedule_ahead(self, disabled):
        """A second pass over hosts whose jobs are short, seen with extra slots (hq/ahead.py);
        of its assignments only jobs of a batch that already runs on the host are kept, so
        jobs ahead are the next of the same stream and no priority or user is passed over."""
        state = self.state
        views = self.ahead.views(state.hosts.values())
        if all(view is host for view, host in zip(views, state.hosts.values())):
            return []
        settings = self.settings
        result = place(state.pending, views, state.user_slots, self.now, state.reservations,
                       disabled, reserve_after_s=settings.reserve_after_s,
                       outside_load=settings.outside_load, limit=settings.placement_limit)
        batches = {}
        kept = []
        for job, host_name in result.assignments:
            if host_name not in batches:
                batches[host_name] = {state.jobs[key[0]].batch for key in
                                      state.on_host.get(host_name, ()) if key[0] in state.jobs}
            if job.batch in batches[host_name]:
                kept.append((job, host_name))
        return kept

    def send_runs(self, assignments):
        state = self.state
        runs = {}
        for job, host_name in assignments:
            state.dispatch(job, host_name, self.now)
            identity = state.hosts[host_name].agents[job.user]
            body, envs = runs.setdefault(identity, ({"jobs": [],
                                                     "slots": state.hosts[host_name].slots}, {}))
            body["jobs"].append(run_spec(job))
            if job.batch not in envs:
                envs[job.batch] = self.env_json(job.batch)
        for identity, (body, envs) in runs.items():
            text = "{" + ",".join(f'"{batch}":{env}' for batch, env in envs.items()) + "}"
            self.outbox.append((identity, p.encode_with_json(p.RUN, body, envs=text)))

    def env_json(self, batch):
        """The JSON text of a batch's environment, encoded once for all its RUN messages."""
        text = self.env_texts.get(batch)
        if text is None:
            text = self.env_texts[batch] = json.dumps(self.state.envs.get(batch, {}))
        return text

    # -- periodic work -----------------------------------------------------------------------
    def tick(self):
        state = self.state
        silent = self.now - 3 * self.settings.heartbeat_s
        for host in state.hosts.values():
            if host.status == UP and (host.last_seen or 0) < silent:
                state.host_lost(host, self.now, f"silent since {time.ctime(host.last_seen or 0)}")
                for user in state.users_on(host.name):   # a crashed agent: restart it now
                    self.request_agents(only_user=user, force=True)
            elif host.status == DOWN and host.down_since is not None:
                for user in state.users_on(host.name):   # and again during the grace
                    self.request_agents(only_user=user)
        state.requeue_lost(self.now, self.settings.requeue_grace_s)
        self.request_agents()
        self.parking.refill(self.now, self.cancelled_batches)
        self.ticks += 1
        if self.ticks % ENV_PRUNE_TICKS == 0:
            state.prune_envs()
            self.env_texts = {b: t for b, t in self.env_texts.items() if b in state.envs}
        if self.now >= self.next_prune:
            self.next_prune = self.now + PRUNE_EVERY_S
            state.writes.prune_metrics_before = self.now - self.settings.metrics_retention_s
        if self.exporter is not None and self.now >= self.next_export:
            self.exporter.refresh(state)
            self.next_export = self.now + 2.0

    def request_agents(self, only_user=None, force=False):
        """Ask users' user-servers to start agents on active hosts where their jobs could run
        (users with pending jobs, or `only_user`); returns the host names asked for."""
        asked_for = []
        for user in [only_user] if only_user else self.state.pending.users():
            identity = self.user_servers.get(user)
            if identity is None:
                continue
            hosts = [h for h in self.state.hosts.values()
                     if h.state == ACTIVE and h.in_config and user not in h.agents
                     and (force or self.now - self.spawn_asked.get((user, h.name), 0)
                          >= self.settings.spawn_retry_s)]
            if not hosts:
                continue
            body = {"hosts": [{"name": h.name, "address": h.address} for h in hosts]}
            if not self.send(identity, p.encode(p.SPAWN, body)):
                del self.user_servers[user]     # gone; its successor will say HELLO
                continue
            log.info("asked user-server of %s to start agents on %s", user,
                     ", ".join(h.name for h in hosts))
            for h in hosts:
                self.spawn_asked[(user, h.name)] = self.now
            asked_for += [h.name for h in hosts]
        return asked_for

    def stop_agent(self, host, user):
        """Tell a user's idle agent to exit and forget it (cleanup)."""
        identity = host.agents.pop(user, None)
        if identity is None:
            return
        self.state.agents.pop(identity, None)
        self.state.changed = True
        self.outbox.append((identity, p.encode(p.STOP, {})))
        if not host.agents:
            host.status = UNKNOWN
            self.state.writes.update_host(host.name, status=UNKNOWN, status_reason="agents stopped")
        log.info("agent of %s on %s asked to stop", user, host.name)

    def sample_metrics(self, host, body):
        if self.now - self.last_sample.get(host.name, 0) < self.settings.metrics_interval_s:
            return
        self.last_sample[host.name] = self.now
        nprocs = body.get("nprocs")
        self.state.writes.metrics.append((host.name, self.now, host.load1, host.load5,
                                          host.load15, host.cpu_percent, host.mem_available,
                                          nprocs if p.is_int(nprocs, 0, 1 << 31) else None,
                                          host.foreign_load))

    # -- group commit ------------------------------------------------------------------------
    def commit(self):
        if self.now < self.db_retry_at and not self.staged:
            return          # backing off; a submission tries at once (and fails fast)
        try:
            self.store.apply(self.state.writes, self.staged_writes)
        except HQError as exc:
            self.database_failed(exc)
            return
        if self.db_error is not None:
            log.info("database back: pending changes committed")
        self.db_backoff, self.db_error = 0.1, None
        self.state.writes, self.staged_writes = Writes(), Writes()
        for (identity, req), batch, env, jobs, ended in self.staged:
            admitted = self.parking.admit(jobs)
            self.state.activate(batch, env, admitted, ended, self.now)
            self.outbox.append((identity, p.ok(req, ids=[j.id for j in jobs], batch=batch)))
            log.info("batch %s of %s: %d jobs accepted (ids %s-%s)", batch, jobs[0].user,
                     len(jobs), jobs[0].id, jobs[-1].id)
            if batch in self.cancelled_batches:
                for job in admitted:
                    self.cancel_job(job)
                if len(admitted) < len(jobs):
                    self.parking.cancel_batch(jobs[0].user, batch, self.now)
        self.again = self.again or bool(self.staged)
        self.submitted = bool(self.staged)
        self.staged = []
        self.state.just_ended.clear()
        outbox, self.outbox = self.outbox, []
        for identity, frames in outbox:
            self.send(identity, frames)

    def database_failed(self, exc):
        """Refuse this turn's submissions; keep every other change to retry with backoff."""
        log.error("commit failed (retry in %.1fs): %s", self.db_backoff, exc.message)
        for (identity, req), batch, *_ in self.staged:
            self.broken_batches.add(batch)
            self.send(identity, p.error(req, DATABASE_ERROR,
                                        f"submission not accepted: {exc.message}"))
        self.staged, self.staged_writes = [], Writes()
        self.db_error = exc.message
        self.db_retry_at = time.time() + self.db_backoff
        self.db_backoff = min(2.0, self.db_backoff * 2)


def run_spec(job):
    return {"id": job.id, "attempt": job.attempt, "command": job.command, "shell": job.shell,
            "cwd": job.cwd, "stdout": job_path(job, "stdout"), "stderr": job_path(job, "stderr"),
            "logfile": job_path(job, "logfile"), "cores": job.cores,
            "time_limit": job.time_limit, "batch": job.batch, "name": job.name,
            "host": job.host, "entry": job.entry}


def start_exporter(server, port):
    from hq.server.exporter import Exporter
    try:
        server.exporter = Exporter(port)
    except OSError as exc:
        raise HQError(CONFIG_ERROR, f"cannot serve metrics on port {port}: {exc}") from None
    server.state.listeners.append(server.exporter.on_transition)
    server.exporter.refresh(server.state)


def start(settings, port=None, bind=None):
    """Open the store, sync etc/ into it, bind, load: a Server ready for serve_forever()."""
    store = open_store(config.load_db_config(settings.etc))
    store.check_schema()
    users = config.load_users(settings.etc)
    me, home = config.current_user(), config.home_dir()
    store.add_users(users + [(me, ["USER", "ADMIN"])])
    store.add_hosts(config.load_cluster(settings.etc))
    security.register_local_user(store, home, me)
    keypair = security.load_keypair(security.cert_paths(home, security.SERVER_CERT)[1])
    address = f"tcp://{bind or settings.bind}:{port or settings.port}"
    try:
        server = Server(settings, store, address, keypair)
    except zmq.ZMQError as exc:
        raise HQError(CONFIG_ERROR, f"cannot listen on {address}: {exc}") from None
    server.load()
    return server


def main(argv=None):
    from docopt import docopt
    args = docopt(__doc__, argv=argv)
    from hq.proctitle import set_title
    set_title("hq-server")
    logs.setup(args["--log-level"], args["--log-file"])
    try:
        settings = config.load_settings()
        port = int(args["--port"]) if args["--port"] else None
        server = start(settings, port, args["--bind"])
        if args["--metrics-port"]:
            start_exporter(server, int(args["--metrics-port"]))
    except (HQError, ValueError) as exc:
        print(f"hq-server: {exc}", file=sys.stderr)
        return 1

    def stop(signum, frame):
        server.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"hq-server listening on {server.address} (database: {server.store.describe()}, "
          f"pid {os.getpid()})", flush=True)
    server.serve_forever()
    log.info("hq-server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
