"""The jobs of one agent from assignment to end: queued for a slot, started ahead behind their
gate (agents/jobstart.py), given a slot, reaped (os.wait4), killed on request or at their time
limit, adopted from a crashed predecessor (agents/jobfiles.py)."""

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass

from agents import jobfiles
from agents.jobstart import OPEN, JobStarter, StartError
from agents.logfile import write_logfile
from agents.outputs import output_trouble

log = logging.getLogger("hq.runner")

KILL_GRACE_S = 5.0


@dataclass
class Running:
    spec: dict
    pid: int = None
    started: float = None       # when it got its slot (its gate opened); None: waits for one
    spawned: float = None       # when its process was created
    gate: int = None            # write end of the pipe it waits on, until it gets a slot
    deadline: float = None      # time limit
    kill_at: float = None       # SIGKILL after a SIGTERM that was not obeyed
    reason: str = ""            # why we killed it
    dropped: bool = False       # left before it got a slot (already reported)
    adopted: dict = None        # the record of a job a previous agent started (not our child)

    @property
    def key(self):
        return (self.spec["id"], self.spec["attempt"])


class Runner:
    def __init__(self, host_name, files=None):
        self.host_name = host_name
        self.files = files        # JobFiles: lets a restarted agent adopt running jobs
        self.starter = JobStarter(host_name, files)
        self.waiting = {}         # key -> (spec, env): no process yet, in order of arrival
        self.ready = {}           # key -> Running: started ahead, waiting behind its gate
        self.by_pid = {}          # pid -> Running: every child process (and adopted job)
        self.by_job = {}          # key -> Running: jobs that have their slot
        self.adopted = {}         # pid -> Running, for jobs that are not our children
        self.slots = 0            # the host's slots, as the server last said (0: unknown)
        self.cores_used = 0       # cores of the jobs that have their slot

    def running_pairs(self):
        """[job id, attempt] of every job this agent holds: running or waiting for a slot."""
        return [list(key) for key in (*self.by_job, *self.ready, *self.waiting)]

    def holds_jobs(self):
        """Whether a job runs here or waits here for a slot."""
        return bool(self.by_job or self.ready or self.waiting)

    def assign(self, spec, env, slots=0):
        """Take a job from the server; it starts once the host's `slots` leave room for it
        (0: at once). The server may send short jobs ahead, to wait here for a slot.
        A spec that cannot be run: its finished event (None: accepted, or not even a job)."""
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
            self.waiting[key] = (spec, env)
        return None

    # -- starting ----------------------------------------------------------------------------
    def start_waiting(self):
        """Give free slots to queued jobs in order, then start the next ones ahead behind their
        gates; the events (started, or finished with a start error)."""
        events, now = [], time.time()
        while self.ready or self.waiting:
            queue = self.ready or self.waiting      # jobs started ahead come first
            key = next(iter(queue))
            spec = queue[key].spec if queue is self.ready else queue[key][0]
            if self.slots and self.cores_used and self.cores_used + spec["cores"] > self.slots:
                break
            run = self.ready.pop(key) if queue is self.ready else self._launch(
                *self.waiting.pop(key), now, events, gate_open=True)
            if run is not None:
                events.append(self._give_slot(run, now))
        while self.waiting and len(self.ready) < max(1, self.slots):
            key = next(iter(self.waiting))
            run = self._launch(*self.waiting.pop(key), now, events)
            if run is not None:
                self.ready[key] = run
        self.starter.leave()
        return events

    def _launch(self, spec, env, now, events, gate_open=False):
        """Start a job's process behind its gate (closed, or `gate_open`): its Running, or None
        (with a finished event in `events`) when it cannot start."""
        gate_read, gate = os.pipe2(os.O_CLOEXEC)
        run = Running(spec, spawned=now, gate=gate)
        if gate_open:
            self._open_gate(run)
        try:
            run.pid = self.starter.start(spec, env, gate_read)
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
        """A job gets its slot (its gate opens); its started event."""
        if run.gate is not None:
            self._open_gate(run)
        run.started = now
        if run.spec.get("time_limit"):
            run.deadline = now + run.spec["time_limit"]
        self.by_job[run.key] = run
        self.cores_used += run.spec["cores"]
        spec = run.spec
        if self.files is not None:
            self.files.record(spec, run.pid, run.started, run.spawned)
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
        """Finished events for every child that ended, and for adopted jobs that ended."""
        done = []
        while len(self.by_pid) > len(self.adopted):
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            run = self.by_pid.get(pid)
            if run is not None and not run.adopted:
                done.extend(self._ended(run, status, usage))
        for run in [r for r in self.adopted.values() if not jobfiles.alive(r.adopted)]:
            done.append(self._adopted_finished(self._forget(run)))
        return done

    def _ended(self, run, status, usage):
        self._forget(run)
        if run.started is not None:
            return [self._finished(run, status, usage)]
        self.ready.pop(run.key, None)       # ended behind its gate: dropped, or killed
        self._close_gate(run)
        if run.dropped:
            return []
        return [self._start_failed(run.spec, "its shell ended before the job got its slot",
                                   time.time())]

    def _forget(self, run):
        self.by_pid.pop(run.pid, None)
        self.adopted.pop(run.pid, None)
        if self.by_job.pop(run.key, None) is not None:
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
        if self.files is not None:
            self.files.forget(job_id, attempt, idle=not self.by_job)

    # -- adoption ----------------------------------------------------------------------------
    def adopt(self):
        """Take over the jobs a previous agent on this host started: the live ones are watched
        until they end; for the ended ones, finished events (exit status from the wrapper)."""
        if self.files is None:
            return []
        done = []
        for record in self.files.records():
            spec = record["spec"]
            run = Running(spec, record["pid"], record["started"], adopted=record)
            if spec.get("time_limit"):
                run.deadline = run.started + spec["time_limit"]
            if jobfiles.alive(record):
                self.by_pid[run.pid] = self.adopted[run.pid] = self.by_job[run.key] = run
                self.cores_used += spec["cores"]
                log.info("job %s attempt %s adopted, pid %s", *run.key, run.pid)
            elif self.files.exit_status(*run.key) is not None:
                done.append(self._adopted_finished(run))
            else:   # died with its host or was killed unseen: unknown here, so requeued
                log.info("job %s attempt %s gone without an exit status", *run.key)
                self.files.forget(*run.key)
        return done

    def _adopted_finished(self, run):
        spec = run.spec
        code = self.files.exit_status(spec["id"], spec["attempt"])
        event = {"type": "finished", "job": spec["id"], "attempt": spec["attempt"],
                 "time": time.time(), "started": run.started, "max_rss": None,
                 "exit_code": code, "signal": None}
        if run.reason:
            event["reason"] = run.reason
        if code is None:
            event["error"] = "exit status lost: the job ended while its agent was down"
        elif code > 128 and code < 160:
            event["exit_code"], event["signal"] = None, code - 128
        log.info("adopted job %s attempt %s ended: %s", spec["id"], spec["attempt"],
                 event.get("error") or f"exit {code}")
        return event

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
        _signal_group(run.pid, signal.SIGTERM)
        run.kill_at = time.time() + KILL_GRACE_S
        return True

    def enforce(self, now):
        """Time limits and SIGKILL after the grace period."""
        for run in list(self.by_job.values()):
            if run.deadline and now >= run.deadline and not run.reason:
                log.info("job %s reached its time limit of %ss", run.spec["id"],
                         run.spec["time_limit"])
                self.kill(*run.key, "time limit")
            elif run.kill_at and now >= run.kill_at:
                _signal_group(run.pid, signal.SIGKILL)
                run.kill_at = None

    def next_deadline(self):
        times = [t for run in self.by_job.values() for t in (run.deadline, run.kill_at) if t]
        return min(times) if times else None

    def kill_all(self):
        for run in list(self.ready.values()):
            self._close_gate(run)
        for run in list(self.by_pid.values()):
            _signal_group(run.pid, signal.SIGKILL)

    # -- pipes -------------------------------------------------------------------------------
    def _close_gate(self, run):
        if run.gate is not None:
            os.close(run.gate)
            run.gate = None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def one_line(text, limit=255):
    """`text` on one line, at most `limit` characters (the server keeps 255)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _signal_group(pid, signum):
    try:
        os.killpg(pid, signum)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            log.warning("cannot signal process group %s: %s", pid, exc)
