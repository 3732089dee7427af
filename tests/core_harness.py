"""A Core on a real SQLite database and no sockets, driven message by message as the loop drives
it: handlers change it, `commit` writes the turn, the outbox shows what would be sent."""

from hq import protocol as p
from hq.config import HostEntry, Settings
from hq.server import dispatch, fleet, handlers, pushes
from hq.server.core import Core
from hq.server.parking import Parking
from hq.store.sqlite import SqliteStore


class CoreHarness:
    def __init__(self, tmp_path, hosts=(("h1", 4),), users=("alice", "bob"), **settings):
        self.store = SqliteStore(str(tmp_path / "hq.db"))
        self.store.create_tables()
        self.store.add_users([(u, ["USER"]) for u in users] + [("root", ["USER", "ADMIN"])])
        self.store.add_hosts([HostEntry(name, slots) for name, slots in hosts])
        self.now = 1000.0
        self.core = Core(Settings(**settings), self.store, self.now)
        self.core.database_id = self.store.database_id()
        self.core.parking = Parking(self.core, self.store, 1000)
        self.core.load(self.store, self.now)
        self.core.parking.after_load()
        self.pushes = pushes.attach(self.core)
        self.sent = []              # (identity, kind, body) of every flushed message

    # -- driving ---------------------------------------------------------------------------
    def at(self, now):
        self.now = self.core.now = now
        return self

    def request(self, sender, kind, identity=None, **body):
        """Handle one message as the loop does; returns the reply body (after a commit for
        deferred replies) or raises HQError."""
        identity = identity or f"us:{sender}".encode()
        body.setdefault("req", len(self.sent) + 1)
        handlers.handle(self.core, handlers.Peer(identity, sender), kind, body)
        self.turn()
        if self.core.changed:           # the loop turns again at once (accepted jobs)
            self.turn()
        for sent_to, k, reply in reversed(self.sent):
            if sent_to == identity and k == p.OK and reply.get("req") == body["req"]:
                return reply
        return None

    def turn(self, tick=False):
        """The end of a loop turn: the tick (if asked: liveness, awaited results, asking for
        agents, as hq.server.loop's tick), a scheduling pass and the commit."""
        core = self.core
        if tick:
            fleet.check_liveness(core, core.now)
            core.release_awaited(core.now)
            fleet.request_agents(core)
        if core.changed or tick:
            core.changed = False
            dispatch.schedule(core)
        self.pushes.queue()
        self.store.apply(core.writes, *(s.writes for s in core.staged))
        core.after_commit(core.staged, core.now)
        for identity, frames in core.outbox.take_now():     # heartbeat replies (no commit)
            self.sent.append((identity, p.OK, p.decode(frames, p.ALL_KINDS)[1]))
        replies, messages = core.outbox.take()
        for identity, req, fields in replies:
            self.sent.append((identity, p.OK, {"req": req, **fields}))
        for identity, kind, frames in messages:
            self.sent.append((identity, kind, p.decode(frames, p.ALL_KINDS)[1]))

    # -- agents and user-servers ---------------------------------------------------------------
    def register(self, user, host="h1", cores=4, memory=8 << 30, running=(), **extra):
        identity = f"agent:{user}@{host}".encode()
        self.request(user, p.REGISTER, identity, host=host, cores=cores, memory_total=memory,
                     os="Linux", running=[list(r) for r in running], **extra)
        return identity

    def hello(self, user):
        self.request(user, p.HELLO)

    def heartbeat(self, user, host="h1", running=(), **metrics):
        return self.request(user, p.HEARTBEAT, f"agent:{user}@{host}".encode(),
                            running=[list(r) for r in running], **metrics)

    def report(self, user, kind, job, attempt, host="h1", **fields):
        event = {"type": kind, "job": job, "attempt": attempt, "time": self.now, **fields}
        return self.request(user, p.EVENTS, f"agent:{user}@{host}".encode(), seq=1,
                            events=[event])

    def submit(self, user, *commands, hold=False, **defaults):
        reply = self.request(user, p.SUBMIT, jobs=list(commands), defaults=defaults, env={},
                             cwd="/tmp", hold=hold)
        return reply["ids"]

    # -- looking ---------------------------------------------------------------------------
    def messages(self, kind, identity=None):
        return [body for to, k, body in self.sent if k == kind and identity in (None, to)]

    def runs_to(self, user, host="h1"):
        """[(job id, attempt)] sent to an agent in RUN messages."""
        return [(j["id"], j["attempt"]) for body in self.messages(p.RUN, f"agent:{user}@{host}"
                                                                  .encode()) for j in body["jobs"]]

    def state(self, job_id):
        return self.store.get_jobs([job_id])[0]["state"]

    def close(self):
        self.store.close()
