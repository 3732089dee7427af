"""Host facts and health samples for registration and heartbeats, read with psutil.

facts() once at start; sample() every heartbeat (cheap: no blocking interval).
"""

import os
import platform

import psutil


def facts():
    return {"cores": psutil.cpu_count() or 1, "memory_total": psutil.virtual_memory().total,
            "os": f"{platform.system()} {platform.release()} {platform.machine()}"}


def sample():
    load1, load5, load15 = os.getloadavg()
    uid = os.getuid()
    nprocs = 0
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is not None and uids.real == uid:
            nprocs += 1
    return {"load1": load1, "load5": load5, "load15": load15,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "mem_available": psutil.virtual_memory().available, "nprocs": nprocs}
