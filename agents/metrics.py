"""Host facts and health samples for registration and heartbeats, read with psutil.

facts() once at start; sample() every heartbeat (cheap: no blocking interval, and the count
of the user's processes is refreshed only every 30 s).
"""

import os
import platform
import time

import psutil


def facts():
    return {"cores": psutil.cpu_count() or 1, "memory_total": psutil.virtual_memory().total,
            "os": f"{platform.system()} {platform.release()} {platform.machine()}"}


NPROCS_EVERY_S = 30.0      # counting processes reads /proc for each: not every heartbeat
_nprocs = {"time": -NPROCS_EVERY_S, "count": 0}


def user_processes():
    """Processes of this user (recounted at most every NPROCS_EVERY_S seconds)."""
    now = time.monotonic()
    if now - _nprocs["time"] >= NPROCS_EVERY_S:
        uid = os.getuid()
        count = 0
        for proc in psutil.process_iter(["uids"]):
            uids = proc.info.get("uids")
            if uids is not None and uids.real == uid:
                count += 1
        _nprocs.update(time=now, count=count)
    return _nprocs["count"]


def sample():
    load1, load5, load15 = os.getloadavg()
    nprocs = user_processes()
    return {"load1": load1, "load5": load5, "load15": load15,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "mem_available": psutil.virtual_memory().available, "nprocs": nprocs}
