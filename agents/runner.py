"""Starts job processes (posix_spawn, each in its own session and process group), reaps them
without threads (os.wait4), enforces time limits, kills on request, writes the optional log file."""

import errno
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agents import jobfiles

log = logging.getLogger("hq.runner")

KILL_GRACE_S = 5.0
OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND
LOG_TAIL_BYTES = 1 << 20


@dataclass
class Running:
    spec: dict
    pid: int
    started: float
    deadline: float = None      # time limit
    kill_at: float = None       # SIGKILL after a SIGTERM that was not obeyed
    reason: str = ""            # why we killed it
    adopted: dict = None        # the record of a job a previous agent started (not our child)


class Runner:
    def __init__(self, host_name, files=None):
        self.host_name = host_name
        self.files = files        # JobFiles: lets a restarted agent adopt running jobs
        self.adopted = {}         # pid -> Running, for jobs that are not our children
        self.by_pid = {}          # pid -> Running
        self.by_job = {}          # (job id, attempt) -> Running
        self.waiting = {}         # (job id, attempt) -> (spec, env), in order of arrival
        self.slots = 0            # the host's slots, as the server last said (0: unknown)
        self.cores_used = 0
        self.directories = set()  # output directories known to exist
        # Creating a file costs the kernel far more than opening it: a thread creates the
        # output files of jobs that wait for a slot, off the path that starts jobs.
        self.preparer = ThreadPoolExecutor(1, thread_name_prefix="hq-outputs")
        self.directory = self.cwd = os.getcwd()

    def running_pairs(self):
        """[job id, attempt] of every job this agent holds: running or waiting for a slot."""
        return [list(key) for key in self.by_job] + [list(key) for key in self.waiting]

    def assign(self, spec, env, slots=0):
        """Take a job from the server; it starts once the host's `slots` leave room for it
        (0: at once). The server may send short jobs ahead, to wait here for a slot."""
        key = (spec["id"], spec["attempt"])
        if slots:
            self.slots = slots
        if key not in self.by_job and key not in self.waiting:
            self.waiting[key] = (spec, env)
            if self.slots and self.cores_used >= self.slots:   # it will wait: prepare
                paths = [p for p in {spec["stdout"], spec["stderr"]} if not p.startswith("/dev/")]
                if paths:
                    self.preparer.submit(_create_outputs, *paths)

    def start_waiting(self):
        """Start waiting jobs in order while slots are free; their events."""
        events = []
        while self.waiting:
            key, (spec, env) = next(iter(self.waiting.items()))
            if self.slots and self.by_pid and self.cores_used + spec["cores"] > self.slots:
                break
            del self.waiting[key]
            event = self.start(spec, env)
            if event:
                events.append(event)
        if self.cwd != self.directory:   # children start in their directories; we leave
            os.chdir(self.directory)
            self.cwd = self.directory
        return events

    def drop(self, job_id, attempt, reason="cancelled before it started"):
        """Forget a job still waiting for a slot; its finished event, or None."""
        if self.waiting.pop((job_id, attempt), None) is None:
            return None
        log.info("job %s attempt %s dropped: %s", job_id, attempt, reason)
        return {"type": "finished", "job": job_id, "attempt": attempt, "time": time.time(),
                "exit_code": None, "signal": None, "reason": reason}

    def start(self, spec, env):
        """Start one job; returns a started event, or a finished event with an error."""
        key = (spec["id"], spec["attempt"])
        if key in self.by_job:
            return None
        now = time.time()
        try:
            pid = self._spawn(spec, env)
        except OSError as exc:
            why = f"cannot start: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            log.warning("job %s: %s", spec["id"], why)
            return {"type": "finished", "job": spec["id"], "attempt": spec["attempt"],
                    "time": now, "exit_code": None, "signal": None, "error": why}
        run = Running(spec, pid, now)
        if spec.get("time_limit"):
            run.deadline = now + spec["time_limit"]
        self.by_pid[pid] = run
        self.by_job[key] = run
        self.cores_used += spec["cores"]
        if self.files is not None:
            self.files.record(spec, pid, now)
        log.debug("job %s attempt %s started, pid %s", spec["id"], spec["attempt"], pid)
        return {"type": "started", "job": spec["id"], "attempt": spec["attempt"], "time": now,
                "pid": pid}

    def _spawn(self, spec, env):
        """posix_spawn the job's shell in its own session; the child opens its output files
        itself, so the agent neither creates files nor forks a copy of itself."""
        job_env = dict(env)
        job_env.update(HQ_JOB_ID=str(spec["id"]), HQ_HOST=self.host_name,
                       HQ_CORES=str(spec["cores"]), HQ_ATTEMPT=str(spec["attempt"]),
                       HQ_JOB_NAME=spec.get("name") or "", HQ_BATCH_ID=str(spec.get("batch", "")))
        if spec.get("entry"):
            job_env["HQ_ENTRY"] = spec["entry"]
        stdout, stderr = spec["stdout"], spec["stderr"]
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, stdout, OUTPUT_FLAGS, 0o666)]
        if stderr == stdout:
            actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, 2, stderr, OUTPUT_FLAGS, 0o666))
        for path in (stdout, stderr):
            self._make_directory(os.path.dirname(path))
        shell = spec.get("shell") or "/bin/sh"
        spawn = os.posix_spawn if os.path.isabs(shell) else os.posix_spawnp
        if spec["cwd"] != self.cwd:   # only this thread uses relative paths or the cwd
            os.chdir(spec["cwd"])
            self.cwd = spec["cwd"]
        argv = [shell, "-c", spec["command"]]
        if self.files is not None:
            argv = self.files.wrap(shell, spec["command"], spec["id"], spec["attempt"])
        try:
            return spawn(argv[0], argv, job_env, file_actions=actions, setsid=True)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, _culprit(shell, stdout, stderr)) from None

    def _make_directory(self, directory):
        if directory and directory not in self.directories:
            os.makedirs(directory, exist_ok=True)
            if len(self.directories) > 1000:
                self.directories.clear()
            self.directories.add(directory)

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
            if run is None or run.adopted:
                continue
            done.append(self._finished(self._release(run), status, usage))
        for run in [r for r in self.adopted.values() if not jobfiles.alive(r.adopted)]:
            done.append(self._adopted_finished(self._release(run)))
        return done

    def _release(self, run):
        self.by_pid.pop(run.pid, None)
        self.adopted.pop(run.pid, None)
        self.by_job.pop((run.spec["id"], run.spec["attempt"]), None)
        self.cores_used -= run.spec["cores"]
        return run

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
            key = (spec["id"], spec["attempt"])
            if jobfiles.alive(record):
                self.by_pid[run.pid] = self.adopted[run.pid] = self.by_job[key] = run
                self.cores_used += spec["cores"]
                log.info("job %s attempt %s adopted, pid %s", key[0], key[1], run.pid)
            elif self.files.exit_status(*key) is not None:
                done.append(self._adopted_finished(run))
            else:   # died with its host or was killed unseen: unknown here, so requeued
                log.info("job %s attempt %s gone without an exit status", *key)
                self.files.forget(*key)
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

    def forget(self, job_id, attempt):
        """The server has recorded the attempt's end: its files can go."""
        if self.files is not None:
            self.files.forget(job_id, attempt, idle=not self.by_pid)

    def _finished(self, run, status, usage):
        now = time.time()
        code = os.waitstatus_to_exitcode(status)
        event = {"type": "finished", "job": run.spec["id"], "attempt": run.spec["attempt"],
                 "time": now, "started": run.started, "max_rss": usage.ru_maxrss * 1024,
                 "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None}
        if run.reason:
            event["reason"] = run.reason
        log.info("job %s attempt %s ended: %s", run.spec["id"], run.spec["attempt"],
                 f"exit {code}" if code >= 0 else f"signal {-code}")
        if run.spec.get("logfile"):
            _write_logfile(run, event, self.host_name)
        return event

    def kill(self, job_id, attempt, reason="cancelled"):
        run = self.by_job.get((job_id, attempt))
        if run is None:
            return False
        run.reason = reason
        _signal_group(run.pid, signal.SIGTERM)
        run.kill_at = time.time() + KILL_GRACE_S
        return True

    def enforce(self, now):
        """Time limits and SIGKILL after the grace period."""
        for run in list(self.by_pid.values()):
            if run.deadline and now >= run.deadline and not run.reason:
                log.info("job %s reached its time limit of %ss", run.spec["id"],
                         run.spec["time_limit"])
                self.kill(run.spec["id"], run.spec["attempt"],
                          "time limit")
            elif run.kill_at and now >= run.kill_at:
                _signal_group(run.pid, signal.SIGKILL)
                run.kill_at = None

    def next_deadline(self):
        times = [t for run in self.by_pid.values() for t in (run.deadline, run.kill_at) if t]
        return min(times) if times else None

    def kill_all(self):
        self.preparer.shutdown(wait=False, cancel_futures=True)
        for run in list(self.by_pid.values()):
            _signal_group(run.pid, signal.SIGKILL)


def _create_outputs(*paths):
    for path in paths:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, OUTPUT_FLAGS | os.O_CLOEXEC, 0o666))
        except OSError:
            pass          # starting the job reports the error


def _culprit(shell, stdout, stderr):
    """Which file a failed posix_spawn could not use: an output file or else the shell."""
    for path in (stdout, stderr):
        try:
            os.close(os.open(path, OUTPUT_FLAGS, 0o666))
        except OSError:
            return path
    return shell


def _signal_group(pid, signum):
    try:
        os.killpg(pid, signum)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            log.warning("cannot signal process group %s: %s", pid, exc)


def _write_logfile(run, event, host_name):
    spec = run.spec
    lines = [f"# hq job {spec['id']} attempt {spec['attempt']}", f"# command: {spec['command']}",
             f"# host: {host_name}", f"# directory: {spec['cwd']}",
             f"# started: {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(run.started))}Z",
             f"# finished: {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(event['time']))}Z",
             f"# exit code: {event['exit_code']}  signal: {event['signal']}"]
    try:
        with open(spec["logfile"], "w", encoding="utf-8", errors="replace") as log_out:
            log_out.write("\n".join(lines) + "\n")
            for title, path in (("stdout", spec["stdout"]), ("stderr", spec["stderr"])):
                log_out.write(f"# --- {title} ({path}) ---\n")
                log_out.write(_tail(path))
                if title == "stdout" and spec["stderr"] == spec["stdout"]:
                    break
    except OSError as exc:
        log.warning("job %s: cannot write log file %s: %s", spec["id"], spec["logfile"], exc)


def _tail(path):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            return handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read: {exc.strerror})\n"
