"""The server's state and the only writer of its jobs, attempts, users, reservations and cluster
state: every transition updates memory, records its rows (group commit) and queues its messages.

Hosts and agents are written by fleet.py alone; handlers and the loop call these methods.
"""

import json
import logging
from collections import defaultdict
from dataclasses import dataclass

from hq import protocol as p
from hq.config import Settings
from hq.model import (ACTIVE, CANCELLED, DISPATCHED, DONE, DOWN, FAILED, HELD, INACTIVE, LOST,
                      PENDING, RUNNING, TERMINAL, UP, Host, Job)
from hq.server.ahead import Ahead
from hq.server.outbox import Outbox
from hq.server.scheduler import PendingIndex, explain, job_shape
from hq.server.tally import Tally
from hq.store.writes import Writes

log = logging.getLogger("hq.core")

JOB_FIELDS = set(Job.__dataclass_fields__) - {"signal"}
PATH_FIELDS = ("stdout", "stderr", "logfile")
QUIET_STATES = frozenset({DISPATCHED, RUNNING})   # logged at DEBUG level only
UNKNOWN_OUTCOME = "unknown outcome"               # an agent cannot tell how an attempt ended
UNSTARTED_TRIES = 3     # attempts whose RUN never reached the agent that use up no retry


@dataclass(slots=True)
class Attempt:
    """Slots an attempt of a job holds on a host, from its dispatch until its end is known."""
    job_id: int
    number: int
    host: str
    user: str
    cores: int
    memory: int
    reservation: str
    sent: float = None          # when its RUN left (after the commit that recorded it)

    @property
    def key(self):
        return (self.job_id, self.number)


class Core:
    def __init__(self, settings=None, store=None, now=0.0):
        self.settings = settings or Settings()
        self.store = store
        self.now = now
        self.outbox = Outbox()
        self.writes = Writes()
        self.staged = []               # Submission records waiting for the commit
        self.jobs = {}                 # live (non-terminal) jobs by id
        self.pending = PendingIndex()  # pending jobs free to run (scheduler input)
        self.deps_left = {}            # job id -> ids of live jobs it waits for (--after)
        self.waiters = defaultdict(set)  # job id -> ids of jobs waiting for it to end
        self.just_ended = {}           # job id -> terminal state, for waiters not yet live
        self.claims = {}               # job id -> host claimed for it (starvation; scheduler)
        self.changed = True            # something that may allow a placement happened
        self.reservations = {}         # code -> {"user", "users", "created", "hosts": {host: n}}
        self.hosts = {}                # name -> Host          (written by fleet.py)
        self.agents = {}               # routing identity -> fleet.Agent (written by fleet.py)
        self.gone = {}                 # (user, host) -> since when its agent is missing
        self.users = {}                # name -> {"roles": {...}, "enabled": bool, "key": z85}
        self.envs = {}                 # batch id -> environment of that submission
        self.env_texts = {}            # batch id -> that environment as JSON text
        self.umasks = {}               # batch id -> the submitter's umask (for the job's files)
        self.attempts = {}             # (job id, attempt) -> Attempt holding slots
        self.unsent = []               # attempts dispatched since the last commit
        self.on_host = defaultdict(set)  # host name -> {(job id, attempt)} held there
        self.on_host_of = defaultdict(set)   # (host name, user) -> the same, one user's
        self.user_slots = defaultdict(int)
        self.cluster_active = True
        self.next_job_id = 1
        self.next_batch_id = 1
        self.cancelled_attempts = set()  # (job id, attempt) killed by a cancel
        self.requeued = {}             # job id -> (attempt, host) of a retry not yet dispatched
        self.awaiting = {}             # job id -> until when that retry waits for the attempt's
                                       # result, which its returning agent is about to report
        self.broken_batches = set()    # batches whose later chunks are refused (error, cancel)
        self.cancelled_batches = set()  # batches cancelled as a whole
        self.user_servers = {}         # user -> routing identity of that user's user-server
        self.spawn_asked = {}          # (user, host) -> time of the last SPAWN
        self.last_sample = {}          # host -> time of the last host_metrics row
        self.host_rows = {}            # host -> when its row got the heartbeat's metrics
        self.database_id = None        # identity of the database (agents' records carry it)
        self.db_ok = True              # False while commits fail: no decision about jobs then
        self.drained_at = None         # when the loop last found its socket empty (None: now)
        self.running = True
        self.keys_changed = False      # the ZAP handler must learn the users' keys again
        self.address = ""              # where the loop listens (for `hq-admin info`)
        self.started = now
        self.largest_pass = 0
        self.placement_s = 0.0         # time spent in scheduling passes, and jobs they placed
        self.placed = 0
        self.listeners = []            # callables (job, old, new, now): parking, the exporter
        self.tally = Tally()           # jobs by user and state, for status requests
        self.listeners.append(self.tally.on_transition)
        self.ahead = Ahead()
        self.parking = None            # hq.server.parking.Parking, set by the loop

    # -- loading ---------------------------------------------------------------------------
    def load(self, store, now, limit_per_user=None):
        self.users = {name: user_from_row(r) for name, r in store.load_users().items()}
        for row in store.load_hosts():
            self.hosts[row["name"]] = host_from_row(row)
        self.cluster_active = store.get_setting("cluster_state", ACTIVE) == ACTIVE
        for row in store.load_reservations():
            self._reservation_loaded(row)
        job_max, batch_max = store.max_ids()
        self.next_job_id, self.next_batch_id = job_max + 1, batch_max + 1
        rows = store.load_live_jobs(limit_per_user)
        self.make_live(rows, store, now)
        for job in self.jobs.values():
            if job.state in (DISPATCHED, RUNNING):
                self._hold_slots(job, job.host).sent = now
        return len(rows)

    def make_live(self, rows, store, now):
        """Jobs read from the database become live (at start, or parked ones later), with
        their environments and their waits on dependencies."""
        rows = [r for r in rows if r["id"] not in self.jobs]
        missing = {r["batch"] for r in rows} - set(self.envs)
        if missing:
            self.envs.update(store.batch_envs(missing))
        jobs = [job_from_row(r) for r in rows]
        scripts = {}            # one copy of a script its batch's jobs share, as when submitted
        for job in jobs:
            self.jobs[job.id] = job
            if job.script:
                job.script = scripts.setdefault(job.script, job.script)
        ended = {d for job in jobs for d in dependencies(job) if d not in self.jobs}
        ended = {r["id"]: r["state"] for r in store.get_jobs(sorted(ended))} if ended else {}
        waiting = [job for job in jobs if job.state in (PENDING, HELD)]
        for job in waiting:
            self.watch_dependencies(job)
        for job in waiting:
            self.settle_dependencies(job, ended, now)
        self.changed = True
        return jobs

    # -- submission --------------------------------------------------------------------------
    def stage_batch(self, writes, user, specs, env, cwd, now, hold=False, batch=None,
                    umask=None):
        """New jobs (not yet live) and their batch id; their rows go into `writes`. With
        `batch`, the jobs are a later chunk of that batch (streamed submission)."""
        if batch is None:
            batch = self.next_batch_id
            self.next_batch_id += 1
            writes.batches.append({"id": batch, "user": user, "submitted": now,
                                   "size": len(specs), "env": json.dumps(env), "umask": umask})
            if umask is not None:
                self.umasks[batch] = umask
        else:
            writes.batch_growth.append((len(specs), batch))
        jobs = []
        for spec in specs:
            job = Job(id=self.next_job_id, user=user, batch=batch, submitted=now,
                      cwd=spec.pop("cwd", None) or cwd, state=HELD if hold else PENDING, **spec)
            self.next_job_id += 1
            jobs.append(job)        # paths keep their %j in memory (shared by the batch)
            writes.jobs.append(job_row(job))
            writes.event(job.id, now, job.state, 0, None, "submitted")
            self.watch_dependencies(job)
        return batch, jobs

    def activate(self, batch, env, jobs, ended, now):
        """Make committed jobs live; `ended` maps finished dependencies to their states."""
        self.envs[batch] = env
        self.changed = True
        for job in jobs:
            self.jobs[job.id] = job
        for job in jobs:
            self.settle_dependencies(job, ended, now)

    def env_json(self, batch):
        """The JSON text of a batch's environment, encoded once for all its RUN messages."""
        text = self.env_texts.get(batch)
        if text is None:
            text = self.env_texts[batch] = json.dumps(self.envs.get(batch, {}))
        return text

    def prune_envs(self):
        """Drop the environments of batches that have no live job left."""
        live = {job.batch for job in self.jobs.values()}
        for batch in [b for b in self.envs if b not in live]:
            del self.envs[batch]
        self.env_texts = {b: t for b, t in self.env_texts.items() if b in self.envs}
        self.umasks = {b: u for b, u in self.umasks.items() if b in self.envs}

    def after_commit(self, accepted, now):
        """The turn's rows are committed: accepted submissions (handlers.submit.Submission)
        become live and are answered; the RUNs of this turn may leave."""
        self.db_ok = True
        self.writes = Writes()
        self.staged = []
        for sub in accepted:
            self._accept(sub)
        self.just_ended.clear()
        self.runs_sent(now)

    def _accept(self, sub):
        self.tally.accepted(sub.jobs)
        admitted = self.parking.admit(sub.jobs)
        self.activate(sub.batch, sub.env, admitted, sub.ended, self.now)
        self.outbox.reply(sub.identity, sub.req, {"ids": [j.id for j in sub.jobs],
                                                  "batch": sub.batch})
        log.info("batch %s of %s: %d jobs accepted (ids %s-%s)", sub.batch, sub.jobs[0].user,
                 len(sub.jobs), sub.jobs[0].id, sub.jobs[-1].id)
        if sub.batch in self.cancelled_batches:
            for job in admitted:
                self.cancel(job, self.now)
            if len(admitted) < len(sub.jobs):
                self.parking.cancel_batch(sub.jobs[0].user, sub.batch, self.now)

    # -- dependencies (--after) ----------------------------------------------------------------
    def watch_dependencies(self, job):
        for dep in dependencies(job):
            if dep in self.jobs:
                self.waiters[dep].add(job.id)

    def settle_dependencies(self, job, ended, now):
        """A newly live job: wait for live dependencies, fail on one that did not end `done`,
        else queue it. `ended` (and self.just_ended) give states of dependencies no longer live."""
        left = set()
        for dep in dependencies(job):
            state = self.just_ended.get(dep) or (
                None if dep in self.jobs else ended.get(dep, "unknown"))
            if state is None:
                left.add(dep)
            elif state != DONE:
                self.set_state(job, FAILED, now, f"dependency: job {dep} ended {state}",
                               reason="dependency", finished=now)
                return
        if left:
            self.deps_left[job.id] = left
        elif job.state == PENDING:
            self.pending.add(job)

    def _release_dependents(self, job_id, state, now):
        """A job ended: its waiters go on when it is done, else fail (and so theirs, in turn)."""
        work = [(job_id, state)]
        while work:
            ended_id, ended_state = work.pop()
            for waiter in sorted(self.waiters.pop(ended_id, ())):
                job = self.jobs.get(waiter)
                if job is None:                 # staged, not yet live: settled at activation
                    self.just_ended[ended_id] = ended_state
                    continue
                if ended_state == DONE:
                    left = self.deps_left.get(waiter, set())
                    left.discard(ended_id)
                    if not left:
                        self.deps_left.pop(waiter, None)
                        if job.state == PENDING:
                            self.pending.add(job)
                    continue
                self.deps_left.pop(waiter, None)
                self._transition(job, FAILED, now, f"dependency: job {ended_id} ended "
                                 f"{ended_state}", reason="dependency", finished=now)
                work.append((waiter, FAILED))

    def waiting_reason(self, job, outside_load=True, memo=None):
        """Why a held or pending job does not run (for `details`). `memo` (a dict kept for
        one request) shares the look at every host among jobs of one shape, user and priority."""
        if job.state == HELD:
            return "held"
        left = self.deps_left.get(job.id)
        if left:
            return "dependency: waiting for job " + ", ".join(map(str, sorted(left)))
        user = self.users.get(job.user)
        if user is None or not user["enabled"]:
            return "user disabled"
        if not self.cluster_active:
            return "cluster inactive"
        if memo is None or job.id in self.claims:
            return explain(job, self.hosts.values(), self.pending, self.claims, outside_load)
        key = (job_shape(job), job.user, job.priority)
        if key not in memo:
            memo[key] = explain(job, self.hosts.values(), self.pending, self.claims,
                                outside_load)
        return memo[key]

    # -- transitions ---------------------------------------------------------------------------
    def set_state(self, job, new, now, detail="", **columns):
        self._transition(job, new, now, detail, **columns)
        if new in TERMINAL and job.id in self.waiters:
            self._release_dependents(job.id, new, now)

    def _transition(self, job, new, now, detail="", **columns):
        old = job.state
        self.changed = True
        job.transition(new)
        for name, value in columns.items():
            setattr(job, name, value)
        if old == PENDING:
            self.pending.remove(job.id)
            self.requeued.pop(job.id, None)
            self.awaiting.pop(job.id, None)
        if new == PENDING and job.id not in self.deps_left:
            self.pending.add(job)
        if new in TERMINAL:
            self.jobs.pop(job.id, None)
            self.deps_left.pop(job.id, None)
        db_columns = {("term_signal" if k == "signal" else k): v for k, v in columns.items()}
        self.writes.update_job(job.id, state=new, **db_columns)
        self.writes.event(job.id, now, new, job.attempt, job.host or None, detail)
        for listener in self.listeners:
            listener(job, old, new, now)
        if new in QUIET_STATES and not log.isEnabledFor(logging.DEBUG):
            return          # one INFO line per job's end (or requeue, hold) is enough at speed
        log.log(logging.DEBUG if new in QUIET_STATES else logging.INFO, "job %s %s -> %s%s%s",
                job.id, old, new, f" on {job.host}" if job.host else "",
                f" ({detail})" if detail else "")

    # -- attempts: slots held from dispatch to the end of the attempt ------------------------
    def dispatch(self, job, host_name, now):
        """A new attempt of `job` on a host: its slots are held from now on."""
        job.attempt += 1
        self.set_state(job, DISPATCHED, now, host=host_name, attempt=job.attempt, reason="")
        return self._hold_slots(job, host_name)

    def _hold_slots(self, job, host_name):
        held = Attempt(job.id, job.attempt, host_name, job.user, job.cores, job.memory,
                       job.reservation)
        self.attempts[held.key] = held
        self.unsent.append(held)
        self.on_host[host_name].add(held.key)
        self.on_host_of[(host_name, job.user)].add(held.key)
        host = self.hosts.get(host_name)
        if host is not None:
            host.slots_used += job.cores
            host.mem_reserved += job.memory
            if job.reservation:
                used = host.reserved_used
                used[job.reservation] = used.get(job.reservation, 0) + job.cores
        self.user_slots[job.user] += job.cores
        return held

    def free_slots(self, job_id, attempt):
        """Free the slots an attempt holds (nothing if they are already free)."""
        held = self.attempts.pop((job_id, attempt), None)
        if held is None:
            return
        self.changed = True
        self.on_host[held.host].discard(held.key)
        mine = self.on_host_of.get((held.host, held.user))
        if mine is not None:
            mine.discard(held.key)
            if not mine:
                del self.on_host_of[(held.host, held.user)]
        host = self.hosts.get(held.host)
        if host is not None:
            host.slots_used = max(0, host.slots_used - held.cores)
            host.mem_reserved = max(0, host.mem_reserved - held.memory)
            code = held.reservation
            if code and code in host.reserved_used:
                host.reserved_used[code] = max(0, host.reserved_used[code] - held.cores)
        self.user_slots[held.user] = max(0, self.user_slots[held.user] - held.cores)

    def attempts_of(self, host_name, user=None):
        """The attempts held on a host (of one user, or of all). (Each heartbeat asks for its
        user's: the host's index cost 7 % of the loop while 10,000 agents came back.)"""
        keys = self.on_host.get(host_name, ()) if user is None else \
            self.on_host_of.get((host_name, user), ())
        return [self.attempts[key] for key in keys]

    def runs_sent(self, now):
        """The commit that recorded this turn's dispatches is done: their RUNs leave now."""
        for held in self.unsent:
            held.sent = now
        self.unsent = []

    # -- reports of agents ------------------------------------------------------------------------
    def job_started(self, job_id, attempt, when, pid, now):
        job = self.jobs.get(job_id)
        if job is None or job.attempt != attempt or job.state != DISPATCHED:
            self.writes.event(job_id, now, "stale", attempt, None, "started report ignored")
            return False
        self.set_state(job, RUNNING, now, f"pid {pid}", started=when)
        return True

    def job_finished(self, report, now, host=None):
        """Apply a finished report (protocol.Report) from the agent on `host`. Returns the job's
        new state, or None when it is stale (another attempt, or the job already ended). An
        attempt requeued while its host was cut off that ended there (before its agent's lease
        ran out) counts if its retry still waits: the retry is dropped, the job ran once; not
        an attempt that did not run or whose outcome is unknown (`error`), nor a fenced one."""
        job_id, attempt = report.job, report.attempt
        self.free_slots(job_id, attempt)
        job = self.jobs.get(job_id)
        if (job is not None and host and self.requeued.get(job_id) == (attempt, host)
                and report.error is None and not (report.reason or "").startswith(p.FENCED)):
            self.set_state(job, DISPATCHED, now, f"attempt {attempt} ended on {host} before "
                           "its requeue was known there: its result counts, no retry",
                           host=host, reason="")
        columns = {"finished": report.time or now, "exit_code": report.exit_code,
                   "signal": report.signal, "max_rss": report.max_rss}
        if job is None or job.attempt != attempt or job.state not in (DISPATCHED, RUNNING):
            self._late_result(job_id, attempt, columns, now)
            self._stop_awaiting(job_id)
            return None
        if job.state == DISPATCHED:
            self.set_state(job, RUNNING, now, "start implied by finish",
                           started=report.started or columns["finished"])
        new, reason = outcome(report)
        self.set_state(job, new, now, reason, reason=reason, **columns)
        return new

    def _late_result(self, job_id, attempt, columns, now):
        """A result for a job that is cancelled or for a stale attempt: record, never count."""
        self.writes.event(job_id, now, "stale", attempt, None,
                          f"result of attempt {attempt} ignored (exit {columns['exit_code']})")
        if (job_id, attempt) in self.cancelled_attempts:
            self.cancelled_attempts.discard((job_id, attempt))
            self.writes.update_job(job_id, finished=columns["finished"],
                                   exit_code=columns["exit_code"],
                                   term_signal=columns["signal"], max_rss=columns["max_rss"])

    def attempt_gone(self, job_id, attempt, now, why, started=True):
        """An attempt ended without a result: requeue while retries last, else the job is lost.
        One that surely never started (`started` False: its RUN never reached the agent) does
        not use up a retry, up to UNSTARTED_TRIES of them."""
        job = self.jobs.get(job_id)
        self.free_slots(job_id, attempt)
        if job is None or job.attempt != attempt:
            return
        if job.attempt <= job.retries or (not started and job.state == DISPATCHED
                                          and job.attempt <= job.retries + UNSTARTED_TRIES):
            host = job.host
            self.set_state(job, PENDING, now, f"requeued: {why}", host="",
                           reason=f"requeued: {why}")
            self.requeued[job_id] = (attempt, host)
        else:
            self.set_state(job, LOST, now, why, finished=now, reason=f"lost: {why}")

    def heard_since(self, now):
        """A time before which every message now being read was sent: when the loop last
        found its socket empty (a loop behind its messages reads ones sent long ago)."""
        return now if self.drained_at is None else min(now, self.drained_at)

    def await_result(self, job_id, attempt, host, until):
        """The agent on `host` came back with the end of `attempt` among its reports: the
        job's retry waits (out of the scheduler's queue) for that report, at most `until`."""
        job = self.jobs.get(job_id)
        if job is not None and job.state == PENDING and self.requeued.get(job_id) == (attempt,
                                                                                   host):
            self.pending.remove(job_id)
            self.awaiting[job_id] = until

    def release_awaited(self, now):
        """Retries whose awaited result did not come in time may be dispatched (tick)."""
        for job_id in [j for j, until in self.awaiting.items() if now >= until]:
            self._stop_awaiting(job_id)

    def _stop_awaiting(self, job_id):
        """The retry of `job_id` waits no more: back in the scheduler's queue."""
        if self.awaiting.pop(job_id, None) is None:
            return
        job = self.jobs.get(job_id)
        if job is not None and job.state == PENDING and job.id not in self.deps_left:
            self.pending.add(job)
            self.changed = True

    def attempt_fenced(self, report, host, now):
        """The agent on `host` killed (or dropped) the attempt when its lease ran out: requeued
        (or lost) as if its host were gone, unless the server did that first (a stale result)."""
        job = self.jobs.get(report.job)
        if job is not None and job.attempt == report.attempt and job.state in (DISPATCHED,
                                                                               RUNNING):
            self.attempt_gone(report.job, report.attempt, now, f"{report.reason} on {host}")
        else:
            self.job_finished(report, now)

    def reconcile(self, host_name, user, known, now, grace):
        """Attempts this host's agent of `user` should run but does not know (`known`: pairs it
        runs or has reported) are gone, once their RUN left more than `grace` seconds before
        the report was sent (at the latest `heard_since`: a report read late may predate the
        RUN). Nothing is decided while commits fail: a RUN not yet sent is not missing."""
        if not self.db_ok:
            return
        now = self.heard_since(now)
        for held in self.attempts_of(host_name, user):
            if held.key not in known and held.sent is not None and now - held.sent > grace:
                self.attempt_gone(held.job_id, held.number, now,        # the agent journals a
                                  f"agent on {host_name} does not know attempt {held.number}",
                                  started=False)                      # RUN before it starts it

    # -- user requests -----------------------------------------------------------------------
    def cancel(self, job, now):
        """Cancel a live job; a dispatched or running attempt is killed by its agent."""
        where = (job.host, job.attempt) if job.state in (DISPATCHED, RUNNING) else None
        if where:
            self.cancelled_attempts.add((job.id, job.attempt))
        self.set_state(job, CANCELLED, now, "cancelled by user", reason="cancelled",
                       finished=now if not where else None)
        if where:
            self.kill(job.user, where[0], [[job.id, where[1]]])

    def kill(self, user, host_name, pairs):
        """Ask the user's agent on a host to kill attempts [[job, attempt], ...]."""
        host = self.hosts.get(host_name)
        identity = host.agents.get(user) if host else None
        if identity is not None:
            self.outbox.send(identity, p.KILL, {"jobs": pairs})

    def hold(self, job, now):
        self.set_state(job, HELD, now, "held by user", reason="held")

    def unhold(self, job, now):
        self.set_state(job, PENDING, now, "released by user", reason="")

    def set_user_enabled(self, name, enabled):
        """A disabled user's jobs wait (the scheduler skips them) and they cannot submit."""
        self.users[name]["enabled"] = enabled
        self.changed = True
        self.writes.user_updates.setdefault(name, {})["enabled"] = int(enabled)
        log.info("user %s %s", name, "enabled" if enabled else "disabled")

    def users_configured(self, users, keep_roles_of=None):
        """etc/users was read again: new users appear, roles follow the file (except the
        server's own user, who stays an admin). Rows are written by the caller's store."""
        for name, roles in users:
            known = self.users.setdefault(name, {"roles": set(roles), "enabled": True,
                                                 "key": None})
            if known["roles"] != set(roles) and name != keep_roles_of:
                known["roles"] = set(roles)
                self.store.set_user_roles(name, roles)

    def user_key_added(self, name, key):
        """A user's CURVE key was registered (`hq-admin adduser`); returns their roles."""
        info = self.users.setdefault(name, {"roles": {"USER"}, "enabled": True})
        info["key"] = key
        self.keys_changed = True
        return info["roles"]

    def set_cluster_state(self, state):
        self.changed = True
        self.cluster_active = state == ACTIVE
        self.writes.settings["cluster_state"] = state

    # -- reservations (hq-reservation codes) ----------------------------------------------------
    def add_reservation(self, code, owner, users, wanted, now):
        """Hold back slots on hosts for jobs of `users` that carry `code`."""
        self.reservations[code] = {"user": owner, "users": set(users), "created": now,
                                   "hosts": dict(wanted)}
        self.changed = True
        for name, slots in wanted.items():
            self.hosts[name].reserved[code] = slots
            self.writes.reservations.append({"code": code, "host": name, "slots": slots,
                                             "user": owner, "users": ",".join(sorted(users)),
                                             "created": now})
        log.info("reservation %s by %s for %s: %s", code, owner, ",".join(sorted(users)),
                 ", ".join(f"{h}:{s}" for h, s in wanted.items()))

    def drop_reservation(self, code, now):
        """Drop a reservation; its waiting jobs fail (their slots are gone), running ones end."""
        self.reservations.pop(code)
        for host in self.hosts.values():
            host.reserved.pop(code, None)
        self.writes.reservations_deleted.append(code)
        self.changed = True
        failed = [job for job in self.jobs.values()
                  if job.reservation == code and job.state in (HELD, PENDING)]
        for job in failed:
            self.set_state(job, FAILED, now, f"reservation {code} deleted",
                           reason="reservation deleted", finished=now)
        log.info("reservation %s deleted; %d waiting jobs failed", code, len(failed))
        return failed

    def _reservation_loaded(self, row):
        users = {u for u in (row.get("users") or row["user"]).split(",") if u}
        entry = self.reservations.setdefault(
            row["code"], {"user": row["user"], "users": users, "created": row["created"],
                          "hosts": {}})
        entry["hosts"][row["host"]] = row["slots"]
        if row["host"] in self.hosts:
            self.hosts[row["host"]].reserved[row["code"]] = row["slots"]


def outcome(report):
    """The state and reason of a job from its finished report."""
    if report.error:
        return FAILED, report.error
    if report.exit_code == 0:
        return DONE, ""
    if report.signal:
        return FAILED, report.reason or f"killed by signal {report.signal}"
    return FAILED, report.reason or f"exit code {report.exit_code}"


def job_row(job):
    row = {name: getattr(job, name) for name in JOB_FIELDS}
    row["term_signal"] = job.signal
    for name in PATH_FIELDS:
        row[name] = job_path(job, name)
    return row


def job_from_row(row):
    job = Job(**{k: v for k, v in row.items() if k in JOB_FIELDS})
    job.signal = row["term_signal"]
    return job


def job_path(job, name):
    """stdout, stderr or logfile of a job with %j replaced by its id, and for an array job %a
    by its index and %A by its batch (in memory the path keeps them: one string for the whole
    batch instead of one per job)."""
    path = getattr(job, name).replace("%j", str(job.id))
    if job.array_index is not None and "%" in path:
        path = path.replace("%a", str(job.array_index)).replace("%A", str(job.batch))
    return path


def user_from_row(row):
    return {"roles": set(row["roles"].split(",")), "enabled": bool(row["enabled"]),
            "key": row["public_key"]}


def host_from_row(row):
    return Host(
        name=row["name"], address=row["address"], max_slots=row["max_slots"] or 0,
        groups=tuple(g for g in (row["host_groups"] or "").split(",") if g),
        state=row["state"] if row["state"] in (ACTIVE, INACTIVE) else ACTIVE,
        status=DOWN if row["status"] == UP else (row["status"] or "unknown"),
        cores=row["cores"] or 0, memory_total=row["memory_total"] or 0, os=row["os"] or "",
        load1=row["load1"] or 0.0, load5=row["load5"] or 0.0, load15=row["load15"] or 0.0,
        cpu_percent=row["cpu_percent"] or 0.0, mem_available=row["mem_available"] or 0,
        last_seen=row["last_seen"], status_reason=row["status_reason"] or "",
        in_config=bool(row["in_config"]),
        foreign_load=row["foreign_load"] or 0.0)


def dependencies(job):
    """The job ids a job waits for (its --after list)."""
    return [int(d) for d in job.depends_on.split(",") if d.strip()] if job.depends_on else []
