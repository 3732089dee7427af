"""The cost of CURVE, measured inside this benchmark: pairs of raw pyzmq sockets (DEALER to an
echoing ROUTER over tcp://127.0.0.1, as hq's) with plain TCP and with CURVE, side by side.

For hq-sized messages (hq.protocol frames: a PING, a batch of agent EVENTS, a RUN of 100 jobs,
a SUBMIT chunk of 5,000 lines) it prints the round-trip latency (median and p99 of one message
at a time), the throughput (messages/s and MB/s with up to --window messages in flight) and the
time to set up a connection (connect to first echo: CURVE's handshake). The echo runs in
libzmq's proxy (no Python, no GIL on the echo side) with its own context and I/O thread. Each figure is the median of --repeat
runs that alternate plain and CURVE, as this machine's speed drifts.

Usage: .venv/bin/python tools/bench_curve.py [--count N] [--window W] [--repeat R]
"""

import argparse
import itertools
import os
import statistics
import sys
import threading
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hq import protocol as p  # noqa: E402

PAIRS = itertools.count()


def job_spec(i):
    return {"id": 100000 + i, "attempt": 1, "command": f"./simulate --case {i} --out r{i}",
            "shell": "/bin/sh", "cwd": "/home/alice/project", "stdout": f"/home/alice/.hq/output/"
            f"{100000 + i}.out", "stderr": f"/home/alice/.hq/output/{100000 + i}.err",
            "logfile": "", "cores": 1, "time_limit": 0, "batch": 7, "name": "sim",
            "host": "node0001", "entry": ""}


def messages():
    """(label, frames) of hq messages from small to large."""
    events = [{"type": "finished", "job": 100000 + i, "attempt": 1, "time": 1.7e9 + i,
               "pid": 4000 + i, "exit_code": 0, "signal": 0, "max_rss": 5120} for i in range(20)]
    return [
        ("PING", p.encode(p.PING, {"req": 1, "user": "alice"})),
        ("EVENTS x20", p.encode(p.EVENTS, {"req": 2, "seq": 9, "events": events})),
        ("RUN x100", p.encode(p.RUN, {"req": 3, "jobs": [job_spec(i) for i in range(100)],
                                      "envs": {"7": {"PATH": "/usr/bin:/bin"}}, "slots": 32})),
        ("SUBMIT x5000", p.encode(p.SUBMIT, {"req": 4, "jobs": [f"./simulate --case {i}"
                                                                for i in range(5000)],
                                             "defaults": {"name": "sim", "cores": 1}})),
    ]


class Pair:
    """An echoing ROUTER (libzmq proxy in a thread) and a way to connect DEALERs to it. The
    ROUTER has a context of its own: its own I/O thread, as a server in another process."""

    def __init__(self, context, curve):
        self.context = context
        self.server_context = zmq.Context()
        self.curve = curve
        self.server_public, server_secret = zmq.curve_keypair()
        self.client_keys = zmq.curve_keypair()
        self.router = self.server_context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        if curve:
            self.router.curve_secretkey = server_secret
            self.router.curve_publickey = self.server_public
            self.router.curve_server = True
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        control_address = f"inproc://control-{next(PAIRS)}"
        self.control = self.server_context.socket(zmq.PAIR)
        self.control.bind(control_address)
        control_peer = self.server_context.socket(zmq.PAIR)
        control_peer.connect(control_address)
        self.thread = threading.Thread(target=self._echo, args=(control_peer,), daemon=True)
        self.thread.start()

    def _echo(self, control_peer):
        try:
            zmq.proxy_steerable(self.router, self.router, None, control_peer)
        finally:
            control_peer.close()
            self.router.close()

    def dealer(self):
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve:
            sock.curve_serverkey = self.server_public
            sock.curve_publickey, sock.curve_secretkey = self.client_keys
        sock.connect(self.address)
        return sock

    def close(self):
        self.control.send(b"TERMINATE")
        self.thread.join(10)
        self.control.close()
        self.server_context.term()


def recv_within(sock, seconds=10):
    if not sock.poll(seconds * 1000):
        raise SystemExit("bench_curve: no echo within 10 s [TIMEOUT]")
    return sock.recv_multipart(copy=False)


def round_trips(sock, frames, count):
    """Seconds of each of `count` round trips, one message at a time."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        sock.send_multipart(frames, copy=False)
        recv_within(sock)
        times.append(time.perf_counter() - started)
    return times


def throughput(sock, frames, count, window):
    """Messages per second echoed with up to `window` in flight."""
    started = time.perf_counter()
    sent = received = 0
    while received < count:
        while sent < count and sent - received < window:
            sock.send_multipart(frames, copy=False)
            sent += 1
        recv_within(sock)
        received += 1
    return count / (time.perf_counter() - started)


def connect_time(pair, frames, count):
    """Median seconds from a new DEALER's connect to its first echo."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        sock = pair.dealer()
        sock.send_multipart(frames)
        recv_within(sock)
        times.append(time.perf_counter() - started)
        sock.close()
    return statistics.median(times)


def measure(context, curve, frames, count, window):
    size = sum(len(f) for f in frames)
    pair = Pair(context, curve)
    try:
        sock = pair.dealer()
        round_trips(sock, frames, 20)                   # connected and warm
        rtts = sorted(round_trips(sock, frames, count))
        messages_count = max(200, min(20 * count, (256 << 20) // size))
        rate = throughput(sock, frames, messages_count, window)
        sock.close()
        setup = connect_time(pair, p.encode(p.PING, {"req": 0}), 20)
    finally:
        pair.close()
    return {"p50": rtts[len(rtts) // 2], "p99": rtts[int(len(rtts) * 0.99)], "rate": rate,
            "mbs": rate * size / 1e6, "setup": setup}


def median_of(runs, key):
    return statistics.median(run[key] for run in runs)


def row(label, size, plain, curve):
    def both(key, scale, fmt):
        a, b = median_of(plain, key) * scale, median_of(curve, key) * scale
        return f"{a:{fmt}} {b:{fmt}} {b / a:5.2f}x"
    return (f"{label:<13} {size:>8,} | {both('p50', 1e6, '8.0f')} | {both('p99', 1e6, '8.0f')} | "
            f"{both('rate', 1, '8.0f')} | {both('mbs', 1, '7.1f')} | {both('setup', 1e6, '6.0f')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="round trips per size")
    parser.add_argument("--window", type=int, default=64, help="messages in flight")
    parser.add_argument("--repeat", type=int, default=3, help="alternated runs per figure")
    args = parser.parse_args()
    context = zmq.Context()
    print(f"libzmq {zmq.zmq_version()}, pyzmq {zmq.__version__}; DEALER -> echoing ROUTER on "
          f"127.0.0.1; {args.count} round trips, window {args.window}, median of {args.repeat}")
    print(f"{'message':<13} {'bytes':>8} | {'rtt p50 us: plain curve':>24} | "
          f"{'rtt p99 us: plain curve':>24} | {'msg/s: plain curve':>24} | "
          f"{'MB/s: plain curve':>22} | {'connect us: plain curve':>20}")
    for label, frames in messages():
        count = args.count if len(frames[2]) < 100_000 else max(50, args.count // 10)
        runs = {False: [], True: []}
        for _ in range(args.repeat):
            for curve in (False, True):
                runs[curve].append(measure(context, curve, frames, count, args.window))
        print(row(label, sum(len(f) for f in frames), runs[False], runs[True]), flush=True)
    context.term()


if __name__ == "__main__":
    main()
