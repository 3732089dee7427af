"""What a loop turn reads, in what order: a turn whose budget (rows, time) is spent goes on
reading cheap messages (heartbeats, registrations, reads) and holds the others, in order, for
the next turn. A heartbeat held behind its agent's earlier messages is renewed at once (its
liveness and lease: `renew`), its jobs reconciled in order later.

libzmq's ROUTER reads its connections round-robin: a loop that stopped reading after one big
submission left thousands of agents' heartbeats queued, and an admin's `status` waited behind
one message of each (seconds with 10,000 agents). A held peer's later messages are held too,
so each peer's messages are still handled in the order it sent them (a heartbeat held so
would wait for the backlog ahead of it: hence `renew`). What the database watcher reads during
a slow store call is kept here too (`keep`), so the next turns read on behind it.
"""

import collections
import logging
import time

import zmq

from hq import protocol as p
from hq.errors import HQError
from hq.server import wire
from hq.server.handlers.admin import READ_ONLY

CHEAP = frozenset({p.HEARTBEAT, p.REGISTER,       # agents' liveness: never behind a backlog
                   p.STATUS, p.LIST, p.DETAILS, p.PING, p.HELLO, p.AGENTS})
HELD_BYTES_MAX = 64 << 20   # what is held at most (then the rest waits in libzmq): a held
                            # peer's later messages leave libzmq's bounded queue for this one,
                            # so it is bounded too (in memory: a count of 20,000 messages,
                            # 4-6 MB of agents' reports, left heartbeats unread behind them)
MESSAGE_OVERHEAD = 600      # bytes a held message costs beyond its frames (Python objects)
FULL_LOG_S = 10.0           # "intake full" said at most this often

log = logging.getLogger("hq.server")


class Intake:
    """Messages the loop's turns read: from the socket, or held by an earlier turn."""

    def __init__(self, socket, renew=lambda frames: False):
        self.socket = socket
        self.renew = renew                  # answers a held heartbeat's lease: whether it did
        self.held = Held()                  # [frames, answered] held for the next turn, in order
        self.ready = collections.deque()    # cheap messages of peers not held that the
                                            # database watcher read: the next reads take them
        self.held_peers = set()             # identities with a held message
        self.renewed = {}                   # identity -> its newest renewed heartbeat held
        self.held_bytes = 0                 # frames and MESSAGE_OVERHEAD of what is held
        self.full_said = 0.0

    def take_held(self, users_first=False):
        """The oldest held message (of users' peers first if `users_first`): (frames, whether
        its reply has gone already); None when only heartbeats that a newer one replaced were
        left."""
        entry = None
        while self.held and entry is None:
            entry = self.held.popleft(users_first)
            frames, answered = entry
            if frames is None:              # replaced by a newer heartbeat of its agent
                entry = None
                continue
            self.held_bytes -= _size(frames)
            if answered:
                self.renewed.pop(frames[0].bytes, None)
        if not self.held:
            self.held_peers.clear()
            self.renewed.clear()
            self.held_bytes = sum(_size(frames) for frames in self.ready)
        return None if entry is None else (entry[0], entry[1])

    def receive(self):
        """The socket's next message's frames; None when there is none."""
        try:
            return wire.receive(self.socket)
        except zmq.Again:
            return None

    def full(self):
        if self.held_bytes < HELD_BYTES_MAX:
            return False
        if time.monotonic() - self.full_said >= FULL_LOG_S:
            self.full_said = time.monotonic()
            log.warning("intake full: %d messages, %.1f MB held; the rest wait unread (heartbeats "
                        "too)", len(self.held), self.held_bytes / (1 << 20))
        return True

    def next_cheap(self):
        """The socket's next message that is cheap to handle now (a heartbeat, a read), holding
        the others (and anything after them from the same peer); None when the socket is empty
        or enough are held."""
        if self.ready:
            frames = self.ready.popleft()
            self.held_bytes -= _size(frames)
            return frames
        while not self.full():
            try:
                frames = wire.receive(self.socket)
            except zmq.Again:
                return None
            identity = frames[0].bytes
            behind = identity in self.held_peers
            if not behind and _cheap(frames):
                return frames
            if behind and len(frames) == 4 and frames[2].bytes == p.HEARTBEAT \
                    and self.renew(frames):
                self.hold_renewed(identity, frames)
                continue
            self.hold(frames)
        return None

    def waiting(self):
        """Whether messages wait here (held, or ready for the next reads)."""
        return bool(self.held or self.ready)

    def keep(self, frames, answered):
        """What the database watcher read: a cheap message of a peer not held waits for the
        next reads (an admin's `status` is not held behind the backlog), the rest is held."""
        if not answered and frames[0].bytes not in self.held_peers and _cheap(frames):
            self.ready.append(frames)
            self.held_bytes += _size(frames)
        else:
            self.hold(frames, answered)

    def hold(self, frames, answered=False):
        """Hold a message (and the later ones of its peer) for the next turn; `answered`: a
        heartbeat whose reply went already (the database watcher's)."""
        identity = frames[0].bytes
        self.held_peers.add(identity)
        if answered:
            self.hold_renewed(identity, frames)
            return
        self.held.append([frames, False])
        self.held_bytes += _size(frames)

    def hold_renewed(self, identity, frames):
        """Hold a renewed heartbeat for its jobs' reconciliation in order; it replaces the one
        its agent had held (a newer list of its jobs), so an agent holds at most one."""
        older = self.renewed.get(identity)
        if older is not None:
            self.held_bytes -= _size(older[0])
            older[0] = None
        entry = self.renewed[identity] = [frames, True]
        self.held.append(entry)
        self.held_bytes += _size(frames)


class Held:
    """Held messages in two queues, each in order: agents' (their routing ids start with
    `agent:`) and the others' (user-servers, clients). The loop takes users' first every
    other turn: a user's request held behind its own submission does not wait for 10,000
    agents' held reports too (15 s and more with 1 M jobs on MySQL), nor agents' reports
    behind a stream of submissions. Each peer's messages keep their order (one queue each)."""

    def __init__(self):
        self.agents, self.users = collections.deque(), collections.deque()

    def __len__(self):
        return len(self.agents) + len(self.users)

    def append(self, entry):
        is_agent = entry[0][0].bytes.startswith(b"agent:")
        (self.agents if is_agent else self.users).append(entry)

    def popleft(self, users_first=False):
        if users_first:
            return (self.users or self.agents).popleft()
        return (self.agents or self.users).popleft()


def _size(frames):
    """What holding a message costs: its frames and MESSAGE_OVERHEAD."""
    return sum(len(frame) for frame in frames) + MESSAGE_OVERHEAD


def _cheap(frames):
    """A heartbeat or a read: also an ADMIN command that only reads (its body decoded twice)."""
    if len(frames) != 4:
        return False
    kind = frames[2].bytes
    if kind == p.ADMIN:
        try:
            return p.decode(frames[1:])[1].get("command") in READ_ONLY
        except HQError:
            return False
    return kind in CHEAP
