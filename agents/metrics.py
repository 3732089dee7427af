"""Host facts and health samples for registration and heartbeats, read with psutil.

facts() once at start; Sampler.sample() every heartbeat (cheap: no blocking interval).
"""

import os
import platform

import psutil

HQ_MARK = "HQ_JOB_ID"     # in the environment of every process of an hq job (runner sets it)


def facts():
    return {"cores": psutil.cpu_count() or 1, "memory_total": psutil.virtual_memory().total,
            "os": f"{platform.system()} {platform.release()} {platform.machine()}"}


class Sampler:
    """Health of the host; `foreign_load` is the cores kept busy since the previous sample by
    processes outside hq jobs. Unlike load1 it neither lags a minute nor counts hq's jobs, so a
    job that just ended frees its slot at once. Processes whose environment we may not read
    (other users') count as outside load."""

    def __init__(self):
        self.is_job = {}        # psutil.Process -> whether it belongs to an hq job
        self.uid = os.getuid()

    def sample(self):
        foreign, nprocs, seen = 0.0, 0, {}
        for proc in psutil.process_iter(["uids"]):
            try:
                uids = proc.info.get("uids")
                if uids is not None and uids.real == self.uid:
                    nprocs += 1
                is_job = self.is_job.get(proc)
                if is_job is None:
                    is_job = _in_job(proc)
                seen[proc] = is_job
                busy = proc.cpu_percent(interval=None)   # since our previous call
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                busy = 0.0
            if not is_job:
                foreign += busy
        self.is_job = seen
        load1, load5, load15 = os.getloadavg()
        return {"load1": load1, "load5": load5, "load15": load15,
                "cpu_percent": psutil.cpu_percent(interval=None),
                "mem_available": psutil.virtual_memory().available, "nprocs": nprocs,
                "foreign_load": round(foreign / 100.0, 2)}


def _in_job(proc):
    if proc.pid == os.getpid():
        return True           # the agent itself is hq, not outside load
    try:
        return HQ_MARK in proc.environ()
    except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return False
