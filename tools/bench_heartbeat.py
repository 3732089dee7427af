"""Heartbeat benchmark: CPU of hq-server's handling of one agent heartbeat (decode, handler,
reply, and its share of the turn's commit), in process on a real SQLite database, for H hosts x
U users with R attempts running per host, beside a floor: decoding the same frames and encoding
an OK (what any server must do per heartbeat).

Usage:
  bench_heartbeat.py [--hosts=H] [--users=U] [--running=R] [--rounds=N]

Options:
  --hosts=H      Hosts [default: 1000].
  --users=U      Users, each with an agent on every host [default: 10].
  --running=R    Attempts running per host (spread over the users) [default: 32].
  --rounds=N     Heartbeats of every agent to time [default: 3].
"""

import os
import random
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from hq import protocol as p  # noqa: E402
from hq.config import HostEntry, Settings  # noqa: E402
from hq.server import handlers  # noqa: E402
from hq.server.core import Core  # noqa: E402
from hq.server.parking import Parking  # noqa: E402
from hq.store.sqlite import SqliteStore  # noqa: E402

GIB = 1 << 30


def metrics():
    return {"load1": round(random.uniform(0, 32), 2), "load5": 20.5, "load15": 19.25,
            "cpu_percent": round(random.uniform(0, 100), 1), "nprocs": 180,
            "mem_available": random.randrange(64 * GIB), "foreign_load": 0.0}


def build(directory, hosts, users, running):
    """A core with every agent registered and `running` attempts per host."""
    store = SqliteStore(os.path.join(directory, "hq.db"))
    store.create_tables()
    names = [f"u{i}" for i in range(users)]
    store.add_users([(u, ["USER"]) for u in names])
    store.add_hosts([HostEntry(f"h{i}", 32) for i in range(hosts)])
    core = Core(Settings(outside_load=False), store, time.time())
    core.parking = Parking(core, store, 1 << 30)
    core.load(store, core.now)
    core.database_id = store.database_id()
    for host in core.hosts:
        for user in names:
            body = {"req": "register", "host": host, "cores": 32, "memory_total": 64 * GIB,
                    "os": "Linux", **metrics()}
            handlers.handle(core, handlers.Peer(f"{user}@{host}".encode(), user), p.REGISTER, body)
    for index, host in enumerate(core.hosts):
        for slot in range(running):
            user = names[slot % users]
            job_id = index * running + slot + 1
            core.attempts[(job_id, 1)] = _attempt(job_id, host, user)
            core.on_host[host].add((job_id, 1))
    store.apply(core.writes)
    core.after_commit([], core.now)
    core.outbox.take()
    return core, store, names


def _attempt(job_id, host, user):
    from hq.server.core import Attempt
    return Attempt(job_id, 1, host, user, 1, 0, "", sent=time.time())


def frames_of(core, names):
    """The HEARTBEAT frames of every agent (its running pairs), as the agents would send."""
    out = []
    for host in core.hosts:
        held = {}
        for key in core.on_host[host]:
            held.setdefault(core.attempts[key].user, []).append(list(key))
        for user in names:
            body = {"req": "heartbeat", "running": held.get(user, []), "reported": [],
                    **metrics()}
            out.append((handlers.Peer(f"{user}@{host}".encode(), user), p.encode(p.HEARTBEAT, body)))
    return out


def time_server(core, store, beats, rounds):
    start = time.process_time()
    for _ in range(rounds):
        for peer, frames in beats:
            core.now = time.time()
            kind, body = p.decode(frames)
            handlers.handle(core, peer, kind, body)
        store.apply(core.writes)
        core.after_commit([], core.now)
        core.outbox.take()
    return (time.process_time() - start) / (rounds * len(beats))


def time_floor(beats, rounds):
    start = time.process_time()
    for _ in range(rounds):
        for peer, frames in beats:
            _, body = p.decode(frames)
            p.ok(body.get("req"))
    return (time.process_time() - start) / (rounds * len(beats))


def main(argv=None):
    from docopt import docopt
    args = docopt(__doc__, argv=argv)
    hosts, users = int(args["--hosts"]), int(args["--users"])
    running, rounds = int(args["--running"]), int(args["--rounds"])
    with tempfile.TemporaryDirectory(prefix="hqhb") as directory:
        core, store, names = build(directory, hosts, users, running)
        beats = frames_of(core, names)
        floor = time_floor(beats, rounds)
        server = time_server(core, store, beats, rounds)
        store.close()
    agents = hosts * users
    print(f"{agents} agents, {running} attempts per host: hq-server {server * 1e6:.1f} us per "
          f"heartbeat (floor {floor * 1e6:.1f} us: decode + OK); at one heartbeat per 2 s "
          f"that is {100 * server * agents / 2:.1f}% of one core (floor "
          f"{100 * floor * agents / 2:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
