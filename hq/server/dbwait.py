"""hq-server's loop never waits on the database deaf: while a store call lasts longer than
ENGAGE_S, a watcher thread answers the heartbeats of known agents and holds every message in
the loop's intake (in order, bounded in bytes), which the next turns handle.

A database that hangs (accepts connections, answers nothing) or a slow commit would otherwise
hold the loop past the agents' lease, and the agents would fence (kill) their running jobs.
"""

import logging
import threading

import zmq

from hq import protocol as p
from hq.errors import HQError
from hq.server import fleet, wire

log = logging.getLogger("hq.server")

ENGAGE_S = 0.5          # a store call that lasts longer lets the watcher take the socket
POLL_MS = 20            # how soon the watcher gives the socket back once the call is over


class DatabaseWait:
    """`call(fn, *args)` runs fn on the loop's thread. The socket belongs to whoever holds
    `lock`: the loop, except during a store call, when the watcher may take it. Messages the
    watcher takes are held in the loop's `intake` (Intake.hold), in order: a known agent's
    HEARTBEAT is answered at once with the lease for the interval it declared (the handler's
    reply, which may also change its interval or its metrics duty, is dropped; the next one
    says). Held there, not in a queue of its own: the next turns go on reading heartbeats
    behind them (a stash of 20,000 messages handled before any other read left 10,000 agents
    unanswered for 20 s: MySQL, 1 M jobs, 1,759 jobs fenced)."""

    def __init__(self, core, may_answer=lambda: True):
        self.core = core
        self.may_answer = may_answer    # false once the server has lost its lease (standby)
        self.socket = None              # the ROUTER, set once bound
        self.intake = None              # the loop's Intake: holds what the watcher reads
        self.lock = threading.Lock()    # held by the loop's thread outside store calls
        self.lock.acquire()
        self.state = threading.Condition()
        self.calls = 0
        self.calling = None             # number of the store call in progress
        self.stopping = False
        self.watcher = threading.Thread(target=self._watch, name="db-wait", daemon=True)
        self.watcher.start()

    def call(self, fn, *args, **kwargs):
        with self.state:
            self.calls += 1
            self.calling = self.calls
            self.state.notify()
        self.lock.release()
        try:
            return fn(*args, **kwargs)
        finally:
            with self.state:
                self.calling = None
                self.state.notify()
            self.lock.acquire()         # the watcher gives the socket back within POLL_MS

    def _watch(self):
        while True:
            with self.state:
                self.state.wait_for(lambda: self.calling is not None or self.stopping)
                if self.stopping:
                    return
                number = self.calling
                if self.state.wait_for(lambda: self.calling != number or self.stopping,
                                       ENGAGE_S):
                    continue            # the call ended in time
            with self.lock:             # the loop's thread is inside the call: ours
                log.info("a database call is slow: answering agents' heartbeats meanwhile")
                while self.calling == number and not self.stopping:
                    if self.socket is not None and not self.intake.full() and \
                            self.socket.poll(POLL_MS, zmq.POLLIN):
                        self._take_messages()
                    else:
                        self.state_wait(POLL_MS / 1000)

    def state_wait(self, seconds):
        with self.state:
            self.state.wait(seconds)

    def _take_messages(self):
        while not self.intake.full():
            try:
                frames = wire.receive(self.socket)
            except zmq.Again:
                return
            self.intake.keep(frames, self._answer(frames))

    def _answer(self, frames):
        """Answer a known agent's heartbeat now; whether it was answered."""
        if len(frames) != 4 or frames[2].bytes != p.HEARTBEAT or not self.may_answer():
            return False                # (only heartbeats are decoded twice)
        identity = frames[0].bytes
        agent = self.core.agents.get(identity)
        if agent is None:
            return False
        try:
            kind, body = p.decode(frames[1:])
        except HQError:
            return False
        if kind != p.HEARTBEAT or frames[1].get("User-Id") != agent.user:
            return False
        try:                            # (the lease from settings only: no state)
            wire.send(self.socket, identity, p.ok(body.get("req"), lease_s=fleet.lease_for(
                self.core, fleet.declared(self.core, body)), behind=True,
                **p.request_number(body)))
        except zmq.ZMQError:
            return False
        return True

    def close(self):
        with self.state:
            self.stopping = True
            self.state.notify()
        self.watcher.join(5)


class WaitedStore:
    """A store whose every method runs through a DatabaseWait (for the loop's thread only)."""

    def __init__(self, store, wait):
        self._store = store
        self._wait = wait

    def __getattr__(self, name):
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def waited(*args, **kwargs):
            return self._wait.call(value, *args, **kwargs)
        waited.__name__ = name
        return waited
