"""The server's in-memory picture of live jobs, hosts and users, and every job transition.

Each transition updates memory and records the matching rows in `self.writes` (group commit).
"""

import json
import logging
from collections import defaultdict

from hq.model import (ACTIVE, CANCELLED, DISPATCHED, DONE, DOWN, FAILED, HELD, INACTIVE, LOST,
                      PENDING, RUNNING, TERMINAL, UP, Host, Job)
from hq.server.scheduler import PendingIndex, explain
from hq.store.writes import Writes

log = logging.getLogger("hq.server.core")

JOB_FIELDS = set(Job.__dataclass_fields__) - {"signal"}
PATH_FIELDS = ("stdout", "stderr", "logfile")
QUIET_STATES = frozenset({DISPATCHED, RUNNING})   # logged at DEBUG level only


class ClusterState:
    def __init__(self):
        self.jobs = {}                 # live (non-terminal) jobs by id
        self.pending = PendingIndex()  # pending jobs free to run (scheduler input)
        self.deps_left = {}            # job id -> ids of live jobs it waits for (--after)
        self.waiters = defaultdict(set)  # job id -> ids of jobs waiting for it to end
        self.just_ended = {}           # job id -> terminal state, for waiters not yet live
        self.reservations = {}         # job id -> host reserved for it (scheduler output)
        self.changed = True            # something that may allow a placement happened
        self.slot_reservations = {}    # code -> {"user", "created", "hosts": {host: slots}}
        self.hosts = {}                # name -> Host
        self.users = {}                # name -> {"roles": {...}, "enabled": bool, "key": z85}
        self.envs = {}                 # batch id -> environment of that submission
        self.attempts = {}             # (job id, attempt) -> (host, cores, user, memory) held
        self.attempt_since = {}        # (job id, attempt) -> when the slots were taken
        self.on_host = defaultdict(set)  # host name -> {(job id, attempt)} held there
        self.user_slots = defaultdict(int)
        self.agents = {}               # routing identity -> (user, host name)
        self.cluster_active = True
        self.next_job_id = 1
        self.next_batch_id = 1
        self.cancelled_attempts = set()  # (job id, attempt) killed by a cancel
        self.listeners = []            # callables (job, old, new, now), e.g. the Prometheus exporter
        self.writes = Writes()

    # -- loading ---------------------------------------------------------------------------
    def load(self, store, now, limit_per_user=None):
        self.users = {name: {"roles": set(r["roles"].split(",")), "enabled": bool(r["enabled"]),
                             "key": r["public_key"]}
                      for name, r in store.load_users().items()}
        for row in store.load_hosts():
            self.hosts[row["name"]] = host_from_row(row)
        self.cluster_active = store.get_setting("cluster_state", ACTIVE) == ACTIVE
        for row in store.load_reservations():
            entry = self.slot_reservations.setdefault(
                row["code"], {"user": row["user"], "created": row["created"], "hosts": {}})
            entry["hosts"][row["host"]] = row["slots"]
            if row["host"] in self.hosts:
                self.hosts[row["host"]].reserved[row["code"]] = row["slots"]
        job_max, batch_max = store.max_ids()
        self.next_job_id, self.next_batch_id = job_max + 1, batch_max + 1
        rows = store.load_live_jobs(limit_per_user)
        self.envs = store.batch_envs({r["batch"] for r in rows})
        jobs = []
        for row in rows:
            job = Job(**{k: v for k, v in row.items() if k in JOB_FIELDS})
            job.signal = row["term_signal"]
            self.jobs[job.id] = job
            jobs.append(job)
            if job.state in (DISPATCHED, RUNNING):
                self._hold_slots(job, job.host, now)
        ended = {d for job in jobs for d in dependencies(job) if d not in self.jobs}
        ended = {r["id"]: r["state"] for r in store.get_jobs(sorted(ended))}
        waiting = [job for job in jobs if job.state in (PENDING, HELD)]
        for job in waiting:
            self.watch_dependencies(job)
        for job in waiting:
            self.settle_dependencies(job, ended, now)
        return len(rows)

    def expect_agents(self, now):
        """After a restart: hosts with running jobs count as up until their agents are silent
        for the heartbeat timeout, so jobs of agents that never come back are handled as lost."""
        for host_name in self.on_host:
            host = self.hosts.get(host_name)
            if host is not None:
                host.status, host.last_seen = UP, now

    # -- submission --------------------------------------------------------------------------
    def stage_batch(self, writes, user, specs, env, cwd, now, hold=False, batch=None):
        """New jobs (not yet live) and their batch id; their rows go into `writes`. With
        `batch`, the jobs are a later chunk of that batch (streamed submission)."""
        if batch is None:
            batch = self.next_batch_id
            self.next_batch_id += 1
            writes.batches.append({"id": batch, "user": user, "submitted": now,
                                   "size": len(specs), "env": json.dumps(env), "umask": None})
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

    def waiting_reason(self, job, outside_load=True):
        """Why a held or pending job does not run (for `details`)."""
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
        return explain(job, self.hosts.values(), self.pending, self.reservations, outside_load)

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

    def prune_envs(self):
        """Drop the environments of batches that have no live job left."""
        live = {job.batch for job in self.jobs.values()}
        for batch in [b for b in self.envs if b not in live]:
            del self.envs[batch]

    def dispatch(self, job, host_name, now):
        job.attempt += 1
        self.set_state(job, DISPATCHED, now, host=host_name, attempt=job.attempt, reason="")
        self._hold_slots(job, host_name, now)

    def _hold_slots(self, job, host_name, now):
        key = (job.id, job.attempt)
        self.attempts[key] = (host_name, job.cores, job.user, job.memory, job.reservation)
        self.attempt_since[key] = now
        self.on_host[host_name].add(key)
        host = self.hosts.get(host_name)
        if host is not None:
            host.slots_used += job.cores
            host.mem_reserved += job.memory
            if job.reservation:
                used = host.reserved_used
                used[job.reservation] = used.get(job.reservation, 0) + job.cores
        self.user_slots[job.user] += job.cores

    def release(self, job_id, attempt):
        """Free the slots an attempt holds; False if it held none (already released)."""
        key = (job_id, attempt)
        held = self.attempts.pop(key, None)
        self.attempt_since.pop(key, None)
        if held is None:
            return False
        self.changed = True
        host_name, cores, user, memory, code = held
        self.on_host[host_name].discard(key)
        host = self.hosts.get(host_name)
        if host is not None:
            host.slots_used = max(0, host.slots_used - cores)
            host.mem_reserved = max(0, host.mem_reserved - memory)
            if code and code in host.reserved_used:
                host.reserved_used[code] = max(0, host.reserved_used[code] - cores)
        self.user_slots[user] = max(0, self.user_slots[user] - cores)
        return True

    def job_started(self, job_id, attempt, when, pid, now):
        job = self.jobs.get(job_id)
        if job is None or job.attempt != attempt or job.state != DISPATCHED:
            self.writes.event(job_id, now, "stale", attempt, None, "started report ignored")
            return False
        self.set_state(job, RUNNING, now, f"pid {pid}", started=when)
        return True

    def job_finished(self, job_id, attempt, report, now):
        """Apply a finished report. Returns the job's new state, or None if stale."""
        self.release(job_id, attempt)
        job = self.jobs.get(job_id)
        columns = {"finished": report.get("time") or now, "exit_code": report.get("exit_code"),
                   "signal": report.get("signal"), "max_rss": report.get("max_rss")}
        if job is None or job.attempt != attempt or job.state not in (DISPATCHED, RUNNING):
            self._late_result(job_id, attempt, columns, report, now)
            return None
        if job.state == DISPATCHED:
            self.set_state(job, RUNNING, now, "start implied by finish",
                           started=report.get("started") or columns["finished"])
        if report.get("error"):
            new, reason = FAILED, report["error"]
        elif columns["exit_code"] == 0:
            new, reason = DONE, ""
        elif columns["signal"]:
            new, reason = FAILED, report.get("reason") or f"killed by signal {columns['signal']}"
        else:
            new, reason = FAILED, report.get("reason") or f"exit code {columns['exit_code']}"
        self.set_state(job, new, now, reason, reason=reason, **columns)
        return new

    def _late_result(self, job_id, attempt, columns, report, now):
        """A result for a job that is cancelled or for a stale attempt: record, never count."""
        self.writes.event(job_id, now, "stale", attempt, None,
                          f"result of attempt {attempt} ignored (exit {columns['exit_code']})")
        if (job_id, attempt) in self.cancelled_attempts:
            self.cancelled_attempts.discard((job_id, attempt))
            self.writes.update_job(job_id, finished=columns["finished"],
                                   exit_code=columns["exit_code"],
                                   term_signal=columns["signal"], max_rss=columns["max_rss"])

    def cancel(self, job, now):
        """Cancel a live job. Returns (host, attempt) to kill when it was dispatched/running."""
        where = (job.host, job.attempt) if job.state in (DISPATCHED, RUNNING) else None
        if where:
            self.cancelled_attempts.add((job.id, job.attempt))
        self.set_state(job, CANCELLED, now, "cancelled by user", reason="cancelled",
                       finished=now if not where else None)
        return where

    def hold(self, job, now):
        self.set_state(job, HELD, now, "held by user", reason="held")

    def release_hold(self, job, now):
        self.set_state(job, PENDING, now, "released by user", reason="")

    def host_lost(self, host, now, why):
        """A host went silent: it is down and gets no work. Its jobs stay for the grace that
        `requeue_lost` allows, so an agent restarted there can adopt them."""
        host.status, host.status_reason, host.down_since = DOWN, why, now
        for identity, (user, name) in list(self.agents.items()):
            if name == host.name:
                del self.agents[identity]
        host.agents.clear()
        self.writes.update_host(host.name, status=DOWN, status_reason=why)
        log.warning("host %s down: %s", host.name, why)

    def requeue_lost(self, now, grace):
        """Jobs of hosts down for longer than `grace`: requeued while retries last, else lost."""
        for host in self.hosts.values():
            if host.status == DOWN and host.down_since is not None \
                    and now - host.down_since >= grace:
                host.down_since = None
                for job_id, attempt in list(self.on_host.get(host.name, ())):
                    self.attempt_gone(job_id, attempt, now,
                                      f"host {host.name} {host.status_reason}")

    def users_on(self, host_name):
        """Users with slots held on a host."""
        return {self.attempts[key][2] for key in self.on_host.get(host_name, ())}

    def reconcile(self, host, user, known, now, grace):
        """Attempts this host's agent of `user` should run but does not know (`known`: pairs it
        runs or has reported) are gone, once older than `grace` seconds (RUN may be in flight)."""
        for key in list(self.on_host.get(host.name, ())):
            if (key not in known and self.attempts[key][2] == user
                    and now - self.attempt_since.get(key, now) > grace):
                self.attempt_gone(key[0], key[1], now,
                                  f"agent on {host.name} does not know attempt {key[1]}")

    def attempt_gone(self, job_id, attempt, now, why):
        """An attempt ended without a result: requeue while retries last, else the job is lost."""
        job = self.jobs.get(job_id)
        self.release(job_id, attempt)
        if job is None or job.attempt != attempt:
            return
        if job.attempt <= job.retries:
            self.set_state(job, PENDING, now, f"requeued: {why}", host="",
                           reason=f"requeued: {why}")
        else:
            self.set_state(job, LOST, now, why, finished=now, reason=f"lost: {why}")

    def set_host_state(self, host, state):
        host.state = state
        self.changed = True
        self.writes.update_host(host.name, state=state)

    def set_user_enabled(self, name, enabled):
        """A disabled user's jobs wait (the scheduler skips them) and their requests are refused."""
        self.users[name]["enabled"] = enabled
        self.changed = True
        self.writes.user_updates.setdefault(name, {})["enabled"] = int(enabled)
        log.info("user %s %s", name, "enabled" if enabled else "disabled")

    def set_cluster_state(self, state):
        self.changed = True
        self.cluster_active = state == ACTIVE
        self.writes.settings["cluster_state"] = state


def job_row(job):
    row = {name: getattr(job, name) for name in JOB_FIELDS}
    row["term_signal"] = job.signal
    for name in PATH_FIELDS:
        row[name] = job_path(job, name)
    return row


def job_path(job, name):
    """stdout, stderr or logfile of a job with %j replaced by its id (in memory the path
    keeps %j: one string for the whole batch instead of one per job)."""
    return getattr(job, name).replace("%j", str(job.id))


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
