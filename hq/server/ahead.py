"""Dispatch ahead: while a host's jobs are short, a few jobs per slot may wait at its agent
(state `dispatched`), so the agent starts the next job the moment one ends, without a round trip
to the server, and the server handles (and commits) many jobs per loop turn.

The agent never runs more cores than the host's slots; long jobs get no one waiting behind them.
"""

SHORT_JOB_S = 1.0        # jobs wait at an agent only while its recent jobs averaged less
AHEAD_S = 0.15           # per slot, about this much work waits at the agent ...
MAX_PER_SLOT = 48        # ... but never more than this many jobs
SMOOTHING = 0.2          # weight of the newest runtime in the running average


class HostView:
    """A host as the scheduler sees it, offering extra slots for jobs that wait at its agent:
    `extra` fewer slots in use (its size, `slots`, stays what it is, so no job fits that would
    not fit the host)."""

    def __init__(self, host, extra):
        self.host = host
        self.slots_used = host.slots_used - extra
        self.free_slots = max(0, host.slots - self.slots_used)

    def __getattr__(self, name):
        return getattr(self.host, name)


class Ahead:
    """Average job runtime per host, and the views of hosts the scheduler gets."""

    def __init__(self, max_per_slot=MAX_PER_SLOT, short_s=SHORT_JOB_S):
        self.max_per_slot = max_per_slot
        self.short_s = short_s
        self.runtime = {}         # host name -> running average of job runtimes (seconds)

    def finished(self, host_name, seconds):
        if seconds is None or seconds < 0:
            return
        old = self.runtime.get(host_name)
        self.runtime[host_name] = seconds if old is None else old + SMOOTHING * (seconds - old)

    def views(self, hosts):
        views = []
        for host in hosts:
            average = self.runtime.get(host.name)
            if self.max_per_slot and average is not None and average < self.short_s:
                per_slot = max(1, min(self.max_per_slot, int(AHEAD_S / max(average, 1e-6))))
                views.append(HostView(host, host.slots * per_slot))
            else:
                views.append(host)
        return views
