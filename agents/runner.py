"""The jobs of one agent from assignment to end: queued for a slot, started ahead behind their
gate, given a slot, reaped (os.wait4), killed on request or at their time limit."""

import logging
import os
import signal
import time

from agents import jobfiles
from agents.adoption import Adoption
from agents.running import KILL_GRACE_S, Running, signal_group
from agents.jobstart import OPEN, JobStarter, StartError
from agents.leftovers import Leftovers
from agents.logfile import write_logfile
from agents.outputs import output_trouble
from agents.scripts import ScriptFiles

log = logging.getLogger("hq.runner")

JOURNAL_RETRY_S = 1.0     # a journal that a full disk refused is tried again this often


class Runner(Adoption):
    def __init__(self, host_name, files=None):
        self.host_name = host_name
        self.files = files        # JobFiles: lets a restarted agent adopt running jobs
        self.starter = JobStarter(host_name, _script_files(files))
        self.database_id = files.database_id() if files is not None else None
        self.waiting = {}         # key -> (spec, env, database id): no process yet, in order
        self.ready = {}           # key -> Running: started ahead, waiting behind its gate
        self.journal_retry_at = 0.0   # while the journal cannot be written, slots wait till then
        self.by_pid = {}          # pid -> Running: every child process (and adopted job)
        self.by_job = {}          # key -> Running: jobs that have their slot
        self.adopted = {}         # pid -> Running, for jobs that are not our children
        self.doomed = {}          # pid -> Running: another database's jobs, being killed
        self.leftovers = Leftovers(host_name)   # what ended jobs left running
        self.slots = 0            # the host's slots, as the server last said (0: unknown)
        self.cores_used = 0       # cores of the jobs that have their slot

    def running_pairs(self):
        """[job id, attempt] of every job this agent holds for the current database: running
        or waiting for a slot."""
        return [list(key) for key, run in self.by_job.items() if self.ours(run.database_id)] + [
            list(key) for key in (*self.ready, *self.waiting)]

    def holds_jobs(self):
        """Whether a job runs here or waits here for a slot."""
        return bool(self.by_job or self.ready or self.waiting)

    def assign(self, spec, env, slots=0, database_id=None):
        """Take a job of database `database_id` (None: the current one) from the server; it
        starts once the host's `slots` leave room for it (0: at once). The server may send
        short jobs ahead, to wait here for a slot. A spec that cannot be run: its finished
        event (None: accepted, or not even a job)."""
        if isinstance(slots, int) and slots > 0:
            self.slots = slots
        if not isinstance(spec, dict) or not all(_is_int(spec.get(f)) for f in ("id", "attempt")):
            log.warning("assignment without job id and attempt ignored: %.200r", spec)
            return None
        key = (spec["id"], spec["attempt"])
        if not _is_int(spec.get("cores")) or spec["cores"] < 1:
            return self._start_failed(spec, "cores: not a positive integer", time.time())
        if not isinstance(env, dict):
            return self._start_failed(spec, "environment: not an object", time.time())
        if not any(key in held for held in (self.by_job, self.waiting, self.ready)):
            self.waiting[key] = (spec, env, database_id or self.database_id)
        return None

    # -- starting ----------------------------------------------------------------------------
    def start_waiting(self):
        """Give free slots to queued jobs in order, then start the next ones ahead behind their
        gates; the events (started, or finished with a start error)."""
        events, now = [], time.time()
        while (self.ready or self.waiting) and now >= self.journal_retry_at:
            queue = self.ready or self.waiting      # jobs started ahead come first
            key = next(iter(queue))
            spec = queue[key].spec if queue is self.ready else queue[key][0]
            if self.slots and self.cores_used and self.cores_used + spec["cores"] > self.slots:
                break
            run = self.ready.pop(key) if queue is self.ready else self._launch(
                *self.waiting.pop(key), now, events)
            if run is None:
                continue
            started = self._give_slot(run, now)
            if started is None:         # the journal cannot take it: it waits behind its gate
                self.ready = {key: run, **self.ready}
                break
            events.append(started)
        while self.waiting and len(self.ready) < max(1, self.slots):
            key = next(iter(self.waiting))
            run = self._launch(*self.waiting.pop(key), now, events)
            if run is not None:
                self.ready[key] = run
        self.starter.leave()
        return events

    def _launch(self, spec, env, database_id, now, events):
        """Start a job's process behind its closed gate: its Running, or None (with a finished
        event in `events`) when it cannot start."""
        gate_read, gate = os.pipe2(os.O_CLOEXEC)
        run = Running(spec, spawned=now, gate=gate, database_id=database_id)
        exits = None
        if self.files is not None:
            run.generation, path = self.files.exits_target()
            exits = (jobfiles.key_of(spec["id"], spec["attempt"], database_id), path)
        try:
            run.pid = self.starter.start(spec, env, gate_read, exits)
        except Exception as exc:        # this job fails alone; the agent goes on
            self._close_gate(run)
            why = str(exc) if isinstance(exc, StartError) else f"{type(exc).__name__}: {exc}"
            events.append(self._start_failed(spec, why, now))
            return None
        finally:
            os.close(gate_read)
        self.by_pid[run.pid] = run
        return run

    def _open_gate(self, run):
        try:
            os.write(run.gate, OPEN)
        except BrokenPipeError:
            pass                  # it died behind its gate: reaped as it is
        self._close_gate(run)

    def _give_slot(self, run, now):
        """A job gets its slot: journalled, then its gate opens; its started event. A job the
        journal cannot take (a full disk) does not run yet: None, and no job gets a slot
        until JOURNAL_RETRY_S later (jobs wait; none is failed for the agent's own disk)."""
        spec = run.spec
        if self.files is not None:
            try:
                self.files.record(spec, run.pid, now, run.spawned, run.database_id,
                                  run.generation)
            except jobfiles.JournalError:
                self.journal_retry_at = now + JOURNAL_RETRY_S
                return None                 # it runs once the journal takes it
        if run.gate is not None:
            self._open_gate(run)
        run.started = now
        if spec.get("time_limit"):
            run.deadline = now + spec["time_limit"]
        self.by_job[run.key] = run
        self.cores_used += spec["cores"]
        log.debug("job %s attempt %s started, pid %s", spec["id"], spec["attempt"], run.pid)
        return {"type": "started", "job": spec["id"], "attempt": spec["attempt"],
                "time": run.started, "pid": run.pid}

    def _start_failed(self, spec, why, now):
        why = one_line(f"cannot start: {why}")
        log.warning("job %s attempt %s: %s", spec["id"], spec["attempt"], why)
        return {"type": "finished", "job": spec["id"], "attempt": spec["attempt"],
                "time": now, "exit_code": None, "signal": None, "error": why}

    # -- ending ------------------------------------------------------------------------------
    def reap(self):
        """Finished events for every child that ended, and for adopted jobs that ended; the
        processes that ended jobs left behind are signalled."""
        done, reaped = [], False
        while self.leftovers.subreaper or len(self.by_pid) > len(self.adopted):
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
            run = self.by_pid.get(pid)
            if run is None:
                self.leftovers.reaped(pid)
            elif not run.adopted:
                done.extend(self._ended(run, status, usage))
        if reaped and self.leftovers.subreaper:
            self.leftovers.children_ended(self.by_pid, self._running_shells, time.time())
        if self.adopted:
            done.extend(self.reap_adopted())
        return done

    def _running_shells(self):
        return {key: run.pid for key, run in self.by_job.items() if not run.adopted}

    def _ended(self, run, status, usage):
        self._forget(run)
        self.leftovers.job_ended(run.spec)
        if run.doomed:
            return []
        if run.started is not None:
            return [self._finished(run, status, usage)]
        self.ready.pop(run.key, None)       # ended behind its gate: dropped, or killed
        self._close_gate(run)
        if run.dropped:
            return []
        return [self._start_failed(run.spec, "its shell ended before the job got its slot",
                                   time.time())]

    def _forget(self, run):
        self.starter.scripts.remove(*run.key)
        self.by_pid.pop(run.pid, None)
        self.adopted.pop(run.pid, None)
        self.doomed.pop(run.pid, None)
        if self.by_job.get(run.key) is run:
            del self.by_job[run.key]
            self.cores_used -= run.spec["cores"]
        return run

    def _finished(self, run, status, usage):
        now = time.time()
        code = os.waitstatus_to_exitcode(status)
        event = {"type": "finished", "job": run.spec["id"], "attempt": run.spec["attempt"],
                 "time": now, "started": run.started, "max_rss": usage.ru_maxrss * 1024,
                 "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None}
        if run.reason:
            event["reason"] = run.reason
        elif code > 0:
            trouble = output_trouble(run.spec)
            if trouble:
                event["error"] = trouble
        level = logging.INFO if code else logging.DEBUG   # the server logs every end
        if log.isEnabledFor(level):
            log.log(level, "job %s attempt %s ended: %s%s", run.spec["id"], run.spec["attempt"],
                    f"exit {code}" if code >= 0 else f"signal {-code}",
                    f" ({event['error']})" if "error" in event else "")
        if run.spec.get("logfile"):
            write_logfile(run, event, self.host_name)
        return event

    def forget(self, job_id, attempt):
        """The server has recorded the attempt's end: its files can go."""
        self.starter.scripts.remove(job_id, attempt)
        if self.files is not None:
            self.files.forget(job_id, attempt)

    # -- killing -----------------------------------------------------------------------------
    def drop(self, job_id, attempt, reason="cancelled before it started"):
        """Forget a job still waiting for a slot; its finished event, or None."""
        key = (job_id, attempt)
        if self.waiting.pop(key, None) is None:
            run = self.ready.pop(key, None)
            if run is None:
                return None
            run.dropped = True
            self._close_gate(run)           # its shell sees the gate closed and exits
        log.info("job %s attempt %s dropped: %s", job_id, attempt, reason)
        return {"type": "finished", "job": job_id, "attempt": attempt, "time": time.time(),
                "exit_code": None, "signal": None, "reason": reason}

    def kill(self, job_id, attempt, reason="cancelled"):
        """Signal a running job's process group (TERM, then KILL after a grace)."""
        run = self.by_job.get((job_id, attempt))
        if run is None:
            return False
        run.reason = reason
        signal_group(run.pid, signal.SIGTERM)
        now = time.time()
        run.kill_at = now + KILL_GRACE_S
        self.leftovers.terminate_tree(run.pid, run.key, now)    # its setsid children too
        return True

    def enforce(self, now):
        """Time limits and SIGKILL after the grace period."""
        for run in [*self.by_job.values(), *self.doomed.values()]:
            if run.deadline and now >= run.deadline and not run.reason:
                log.info("job %s attempt %s reached its time limit of %ss", *run.key,
                         run.spec["time_limit"])
                self.kill(*run.key, "time limit")
            elif run.kill_at and now >= run.kill_at:
                signal_group(run.pid, signal.SIGKILL)
                run.kill_at = None
        if self.leftovers.pending:
            self.leftovers.sweep_if_due(self.by_pid, self._running_shells, now)
        if self.leftovers.killing:
            self.leftovers.enforce(now)

    def next_deadline(self):
        times = [t for run in (*self.by_job.values(), *self.doomed.values())
                 for t in (run.deadline, run.kill_at) if t]
        if self.journal_retry_at and (self.ready or self.waiting):
            times.append(self.journal_retry_at)
        if self.leftovers.killing:
            times.append(self.leftovers.next_deadline())
        if self.leftovers.pending:
            times.append(self.leftovers.due())
        return min(times) if times else None

    def fence(self, reason):
        """Stop everything at once (the lease expired: these jobs may be running elsewhere
        soon): waiting jobs dropped, running ones and what they started SIGKILLed. The events
        of the dropped ones; the killed ones are reported with `reason` when they are reaped.
        True if anything was left to stop."""
        events = [self.drop(*key, reason=reason) for key in [*self.waiting, *self.ready]]
        runs = [run for run in self.by_job.values() if not run.fenced]
        now = time.time()
        for run in runs:
            run.fenced, run.deadline = True, None
            run.reason = run.reason or reason
            if not run.adopted:
                self.leftovers.terminate_tree(run.pid, run.key, now)
            signal_group(run.pid, signal.SIGKILL)
        self.leftovers.kill_all()
        if runs or events:
            log.warning("fenced: %d jobs killed, %d waiting jobs dropped (%s)", len(runs),
                        len(events), reason)
        return [event for event in events if event]

    def unfenced(self):
        """Whether a job is held that a fence has not stopped yet."""
        return bool(self.waiting or self.ready
                    or any(not run.fenced for run in self.by_job.values()))

    def kill_all(self):
        for run in list(self.ready.values()):
            self._close_gate(run)
        for run in list(self.by_pid.values()):
            signal_group(run.pid, signal.SIGKILL)
        self.leftovers.kill_all()

    # -- pipes -------------------------------------------------------------------------------
    def _close_gate(self, run):
        if run.gate is not None:
            os.close(run.gate)
            run.gate = None


def _script_files(files):
    """Where jobs' scripts are written: beside the journal, without the scripts of jobs it
    does not hold (a dead agent's)."""
    if files is None:
        return None
    script_files = ScriptFiles(os.path.join(files.directory, "scripts"))
    script_files.sweep({(r["spec"]["id"], r["spec"]["attempt"]) for r in files.records()})
    return script_files


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def one_line(text, limit=255):
    """`text` on one line, at most `limit` characters (the server keeps 255)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
