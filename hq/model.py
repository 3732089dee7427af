"""Job and host records and the job state machine (which transitions are allowed).

Pure data: the server keeps live jobs as `Job` objects; the store writes them as rows.
"""

import functools
import shlex
from dataclasses import dataclass, field

HELD, PENDING, DISPATCHED, RUNNING = "held", "pending", "dispatched", "running"
DONE, FAILED, CANCELLED, LOST = "done", "failed", "cancelled", "lost"
STATES = (HELD, PENDING, DISPATCHED, RUNNING, DONE, FAILED, CANCELLED, LOST)
TERMINAL = frozenset({DONE, FAILED, CANCELLED, LOST})
LIVE = frozenset(STATES) - TERMINAL

TRANSITIONS = {
    HELD: {PENDING, CANCELLED, FAILED},
    PENDING: {DISPATCHED, HELD, CANCELLED, FAILED},
    DISPATCHED: {RUNNING, PENDING, DONE, FAILED, CANCELLED, LOST},
    RUNNING: {DONE, FAILED, CANCELLED, LOST, PENDING},
    DONE: set(), FAILED: set(), CANCELLED: set(), LOST: set(),
}

# Host administrative states (set by hq-admin) and liveness status (seen by heartbeats).
ACTIVE, INACTIVE = "active", "inactive"
UP, DOWN, UNKNOWN = "up", "down", "unknown"


class StateError(ValueError):
    """A transition the state machine forbids."""


def check_transition(old, new):
    if new not in TRANSITIONS.get(old, ()):
        raise StateError(f"job state {old} -> {new} is not allowed")


# Columns of the jobs table that a submission may set, with their defaults.
JOB_OPTIONS = {
    "name": "", "cores": 1, "memory": 0, "priority": 0, "host_req": "", "group_req": "",
    "exclude_hosts": "", "stdout": "", "stderr": "", "logfile": "", "info_text": "",
    "shell": "/bin/sh", "time_limit": 0, "retries": 1, "depends_on": "", "reservation": "",
    "script": "",
}


@functools.lru_cache(maxsize=256)
def script_args(command):
    """The arguments of a job with a script: the shell words of its `command` after the first
    (the script's name), as `shlex.join` wrote them. ValueError if it is not such a line."""
    return tuple(shlex.split(command)[1:])


@dataclass(slots=True)
class Job:
    """A job the server is tracking (not yet terminal)."""
    id: int
    user: str
    command: str
    batch: int
    state: str = PENDING
    name: str = ""
    cores: int = 1
    memory: int = 0
    priority: int = 0
    host_req: str = ""
    group_req: str = ""
    exclude_hosts: str = ""
    stdout: str = ""
    stderr: str = ""
    logfile: str = ""
    info_text: str = ""
    shell: str = "/bin/sh"
    time_limit: int = 0
    retries: int = 1
    depends_on: str = ""        # comma-separated job ids that must end `done` first
    reservation: str = ""       # reservation code whose slots the job may use
    cwd: str = ""
    submitted: float = 0.0
    attempt: int = 0
    host: str = ""
    started: float = None
    finished: float = None
    exit_code: int = None
    signal: int = None
    max_rss: int = None
    reason: str = ""
    entry: str = ""             # the input line of `hq-submit --each-line` (HQ_ENTRY)
    script: str = ""            # a batch script's text, read at submission (runs instead of command)
    array_index: int = None     # the index of an array job (HQ_ARRAY_INDEX)

    def transition(self, new):
        check_transition(self.state, new)
        self.state = new


@dataclass
class Host:
    """A host of the cluster as the server sees it: configuration plus last report."""
    name: str
    address: str = ""
    max_slots: int = 0          # 0: use the reported cores
    groups: tuple = ()
    state: str = ACTIVE         # administrative: active / inactive
    in_config: bool = True      # False once removed from cluster.tab: drains, gets no work
    status: str = UNKNOWN       # liveness: up / down / unknown
    cores: int = 0
    memory_total: int = 0
    os: str = ""
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    cpu_percent: float = 0.0
    mem_available: int = 0
    foreign_load: float = 0.0   # cores busy with processes outside hq jobs (agent-measured)
    last_seen: float = None
    status_reason: str = ""     # why the host is down or unreachable
    slots_used: int = 0
    mem_reserved: int = 0       # memory asked for by the hq jobs placed here
    reserved: dict = field(default_factory=dict)       # reservation code -> slots held back
    reserved_used: dict = field(default_factory=dict)  # reservation code -> slots its jobs use
    agents: dict = field(default_factory=dict)   # user -> routing identity of that user's agent
    facts_from: str = ""        # user whose agent reported cores, memory and OS
    reporter: str = ""          # user whose agent's heartbeats give the host's metrics
    facts_note: str = ""        # a conflicting report of facts, shown by lscluster

    @property
    def slots(self):
        """Slots this host offers in all."""
        return self.max_slots or self.cores

    @property
    def free_slots(self):
        return max(0, self.slots - self.slots_used)
