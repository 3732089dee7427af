"""What a job leaves behind when its shell ends (background, `setsid` children): the agent is
their subreaper, and kills them (TERM, KILL after the grace) unless the job keeps them."""

import ctypes
import logging
import os
import signal
from collections import OrderedDict

import psutil

from agents import proctree
from agents.running import KILL_GRACE_S

log = logging.getLogger("hq.runner")

PR_SET_CHILD_SUBREAPER = 36
SWEEP_EVERY_S = 0.1       # a busy agent looks for leftovers at most this often
KEPT_MEMORY = 10000       # ended jobs whose leftovers are kept, remembered (oldest forgotten)
UNMARKED_GRACE_S = 0.5    # a child without a job's marks is looked at again this long after
# Which hq installation started a process: jobs get HQ_AGENT_HOME, the agents' $HQ_HOME, so
# that an agent never takes another installation's jobs of the same user for its own.
AGENT_HOME = os.path.realpath(os.path.expanduser(os.environ.get("HQ_HOME") or "~/.hq"))


def become_subreaper():
    """Make orphaned descendants of our jobs our children (Linux): whether it worked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Leftovers:
    def __init__(self, host_name):
        self.host_name = host_name
        self.pid, self.uid, self.pgid = os.getpid(), os.getuid(), os.getpgid(0)
        self.children_fd = None   # /proc/PID/task/PID/children, read again with pread
        self.owner = {}           # pid -> (job, attempt) or None: children that are no job shell
        self.unmarked = {}        # pid -> when a child was first seen without a job's marks
        self.killing = {}         # pid -> (when to SIGKILL, create time): signalled leftovers
        self.kept = OrderedDict()  # (job, attempt) of ended jobs that keep their leftovers
        self.subreaper = False
        self.pending = False      # children ended since the last sweep: look for leftovers
        self.next_sweep = 0.0

    def start(self):
        self.subreaper = become_subreaper()
        try:
            self.children_fd = os.open(f"/proc/{self.pid}/task/{self.pid}/children",
                                       os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass                  # a kernel without it: psutil finds them (a full scan)
        if not self.subreaper:
            log.warning("cannot become a subreaper: processes that jobs leave behind in their "
                        "own session are not found")

    def job_ended(self, spec):
        """Remember a job that keeps its leftovers (spec `keep_leftovers`)."""
        if spec.get("keep_leftovers") is True:
            self.kept[(spec["id"], spec["attempt"])] = True
            if len(self.kept) > KEPT_MEMORY:
                self.kept.popitem(last=False)

    def reaped(self, pid):
        """A child that is no job shell ended (reaped)."""
        self.owner.pop(pid, None)
        self.unmarked.pop(pid, None)
        self.killing.pop(pid, None)

    def children_ended(self, shells, running_jobs, now):
        """Children ended: sweep now, or within SWEEP_EVERY_S on a busy agent (due())."""
        self.pending = True
        self.sweep_if_due(shells, running_jobs, now)

    def due(self):
        return self.next_sweep if self.pending else None

    def sweep_if_due(self, shells, running_jobs, now):
        if self.pending and now >= self.next_sweep:
            self.pending, self.next_sweep = False, now + SWEEP_EVERY_S
            self.sweep(shells, running_jobs, now)

    def sweep(self, shells, running_jobs, now):
        """Signal our children that are no job shell (`shells`: pids) and belong to no running
        job (running_jobs(): (job, attempt) -> shell pid), nor to one that keeps them. Cheap
        when there are none: one read of the kernel's list of our children."""
        running = None
        for pid in self._children():
            if pid in shells or pid in self.killing:
                continue
            if running is None:
                running = running_jobs()
            if self.owner.get(pid) is None:     # unmarked so far: read again (see below)
                self.owner[pid] = self._job_of(pid)
            key = self.owner[pid]
            if key in running or key in self.kept:
                continue
            if key is None and self._in_running_session(pid, running):
                continue
            if key is None and now - self.unmarked.setdefault(pid, now) < UNMARKED_GRACE_S:
                self.pending = True     # a process read between two execs shows no
                continue                # environment: look again at the next sweep
            self._terminate(pid, key, now, set(running.values()))

    def terminate_tree(self, pid, key, now):
        """A job is being killed (cancel, time limit): TERM, and KILL after the grace, the
        processes descended from its shell `pid` that left its process group (`setsid`)."""
        for child in proctree.descendants(pid):
            try:
                if os.getpgid(child) == pid:
                    continue            # signalled with the job's group
            except OSError:
                continue
            if child not in self.killing:
                self._terminate(child, key, now, {pid}, "killed with it")

    def scan(self, key, now, running_pids=()):
        """Signal every process of our user with the marks of job `key` in its environment
        (an adopted job's leftovers: not our children). A scan of all processes: rare."""
        if key in self.kept:
            return
        for proc in psutil.process_iter(["uids"]):
            uids = proc.info.get("uids")
            if proc.pid == self.pid or uids is None or uids.real != self.uid:
                continue
            if _marks(proc.pid, self.host_name) == key:
                self._terminate(proc.pid, key, now, set(running_pids))

    def enforce(self, now):
        """SIGKILL the leftovers that outlived their grace."""
        for pid, (kill_at, ctime) in list(self.killing.items()):
            if now >= kill_at:
                if _create_time(pid) == ctime:
                    _signal(pid, signal.SIGKILL, self._group(pid, ()))
                del self.killing[pid]

    def next_deadline(self):
        return min((kill_at for kill_at, _ in self.killing.values()), default=None)

    def kill_all(self):
        for pid, (_, ctime) in list(self.killing.items()):
            if _create_time(pid) == ctime:
                _signal(pid, signal.SIGKILL, self._group(pid, ()))

    def _terminate(self, pid, key, now, running_pids, why="left behind"):
        ctime = _create_time(pid)
        if ctime is None or not self._mine(pid):
            return
        group = self._group(pid, running_pids)
        log.info("job %s attempt %s: process %s %s: killed%s", *(key or ("?", "?")),
                 pid, why, f" with its group {group}" if group else "")
        _signal(pid, signal.SIGTERM, group)
        self.killing[pid] = (now + KILL_GRACE_S, ctime)

    def _group(self, pid, running_pids):
        """The process group to signal with `pid`: its own, unless that is ours or a running
        job's."""
        try:
            group = os.getpgid(pid)
        except OSError:
            return None
        return None if group == self.pgid or group in running_pids else group

    def _mine(self, pid):
        try:
            return psutil.Process(pid).uids().real == self.uid
        except psutil.Error:
            return False

    def _job_of(self, pid):
        return _marks(pid, self.host_name)

    def _in_running_session(self, pid, running):
        try:
            return os.getsid(pid) in set(running.values())
        except OSError:
            return False

    def _children(self):
        if self.children_fd is not None:
            try:
                return [int(pid) for pid in os.pread(self.children_fd, 1 << 16, 0).split()]
            except OSError:
                os.close(self.children_fd)
                self.children_fd = None
        try:
            return [child.pid for child in psutil.Process(self.pid).children()]
        except psutil.Error:
            return []


def _marks(pid, host_name):
    """(job, attempt) from HQ_JOB_ID and HQ_ATTEMPT in the process's environment (None when it
    has no such marks, or those of another host's agent or of another hq installation of the
    same user: HQ_AGENT_HOME, the agents' $HQ_HOME)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            variables = dict(item.split(b"=", 1) for item in handle.read().split(b"\0")
                             if b"=" in item)
    except OSError:
        return None
    try:
        if variables.get(b"HQ_HOST", b"").decode() != host_name or \
                variables.get(b"HQ_AGENT_HOME", b"").decode() != AGENT_HOME:
            return None
        return int(variables[b"HQ_JOB_ID"]), int(variables[b"HQ_ATTEMPT"])
    except (KeyError, ValueError):
        return None


def _create_time(pid):
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _signal(pid, signum, group):
    for target, send in ((pid, os.kill), (group, os.killpg)):
        if target:
            try:
                send(target, signum)
            except OSError:
                pass
