"""Host facts (psutil, once) and health samples (/proc, every heartbeat) for registration and
heartbeats: no scan of every process, so an idle agent costs next to nothing."""

import os
import platform
import time

import psutil

from agents import proctree

NPROCS_EVERY_S = 60.0     # the user's process count (a scan of /proc) is refreshed this often


def facts():
    return {"cores": psutil.cpu_count() or 1, "memory_total": psutil.virtual_memory().total,
            "os": f"{platform.system()} {platform.release()} {platform.machine()}"}


class Sampler:
    """Health of the host; `foreign_load` is the cores kept busy since the previous sample by
    processes outside hq jobs: the busy CPU time of the whole host (/proc/stat) less that of
    this agent and every process descended from it or from an adopted job (its jobs, their
    children, the children they reaped). Unlike load1 it neither lags a minute nor counts hq's
    jobs, so a job that just ended frees its slot at once. Other users' jobs count as outside
    load (the server subtracts their slots)."""

    def __init__(self):
        self.pid, self.uid = os.getpid(), os.getuid()
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.cores = psutil.cpu_count() or 1
        self.previous = None      # (monotonic time, busy ticks, all ticks, hq CPU seconds)
        self.nprocs, self.nprocs_at = 0, None
        self.own_children = ProcFile(f"/proc/{self.pid}/task/{self.pid}/children")

    def sample(self, roots=()):
        """Metrics since the previous sample. `roots`: pids of adopted jobs (not our children)
        whose process trees are hq's too."""
        now = time.monotonic()
        busy, total = _cpu_ticks()
        hq = self.hq_seconds(roots)
        foreign = cpu_percent = 0.0
        if self.previous is not None:
            then, busy_then, total_then, hq_then = self.previous
            if now > then and total > total_then:
                outside = (busy - busy_then) / self.ticks - (hq - hq_then)
                foreign = min(self.cores, max(0.0, outside) / (now - then))
                cpu_percent = 100.0 * (busy - busy_then) / (total - total_then)
        self.previous = (now, busy, total, hq)
        load1, load5, load15 = os.getloadavg()
        return {"load1": load1, "load5": load5, "load15": load15,
                "cpu_percent": round(cpu_percent, 1), "mem_available": _mem_available(),
                "nprocs": self.user_processes(), "foreign_load": round(foreign, 2)}

    def hq_seconds(self, roots=()):
        """CPU seconds used so far by this agent, everything it reaped, and every live process
        descended from it or from `roots`."""
        own = os.times()
        seconds = own.user + own.system + own.children_user + own.children_system
        seen = {self.pid}
        pending = [int(v) for v in (self.own_children.read() or b"").split()]
        for root in roots:
            if root not in seen:
                pending.append(root)
        while pending:
            pid = pending.pop()
            if pid in seen:
                continue
            seen.add(pid)
            stat = proctree.stat(pid)
            if stat is None:
                continue
            used, threads = stat
            seconds += used / self.ticks
            pending.extend(proctree.children(pid, threads))
        return seconds

    def user_processes(self):
        """How many processes our user has (a scan of /proc, once a minute)."""
        now = time.monotonic()
        if self.nprocs_at is None or now - self.nprocs_at >= NPROCS_EVERY_S:
            self.nprocs_at, count = now, 0
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        count += os.stat(f"/proc/{name}").st_uid == self.uid
                    except OSError:
                        pass
            self.nprocs = count
        return self.nprocs


class ProcFile:
    """A /proc file kept open and read again from its start (pread) at each sample: no open
    and close every heartbeat. Reopened after an error; None when it cannot be read."""

    def __init__(self, path, size=4096):
        self.path, self.size, self.fd = path, size, None

    def read(self):
        for _ in range(2):
            try:
                if self.fd is None:
                    self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                data = os.pread(self.fd, self.size, 0)
                while len(data) % self.size == 0 and data:   # longer than one read
                    more = os.pread(self.fd, self.size, len(data))
                    if not more:
                        break
                    data += more
                return data
            except OSError:
                self.close()
        return None

    def close(self):
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


_STAT, _MEMINFO = ProcFile("/proc/stat", 512), ProcFile("/proc/meminfo", 512)


def _cpu_ticks():
    """(busy, all) CPU ticks of the host since boot, as psutil counts them."""
    fields = [int(v) for v in (_STAT.read() or b"cpu").split(b"\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    guest, guest_nice = (fields[8:] + [0, 0])[:2]
    total = user - guest + nice - guest_nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait, total


def _mem_available():
    text = _MEMINFO.read() or b""
    at = text.find(b"MemAvailable:")
    if at >= 0:
        return int(text[at:].split(maxsplit=2)[1]) * 1024
    return psutil.virtual_memory().available
