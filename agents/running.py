"""One job process the agent looks after (Running), and signalling a job's process group.
Shared by the runner and its adoption part."""

import errno
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("hq.runner")

KILL_GRACE_S = 5.0          # SIGKILL this long after a SIGTERM that was not obeyed


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
    database_id: str = None     # the database the job belongs to (None: unknown)
    generation: int = 0         # the exits file its shell appends its status to
    doomed: bool = False        # another database's job: killed, never reported
    fenced: bool = False        # killed because the agent's lease expired

    @property
    def key(self):
        return (self.spec["id"], self.spec["attempt"])


def signal_group(pid, signum):
    try:
        os.killpg(pid, signum)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            log.warning("cannot signal process group %s: %s", pid, exc)
