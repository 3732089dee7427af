"""Scheduler benchmark: one in-process placement pass over 1,000 hosts x 32 slots with 10,000
and with 100,000 pending jobs; prints microseconds per placement for both, beside a floor.

Usage: .venv/bin/python tools/bench_scheduler.py [--hosts N] [--slots N] [--repeat N]
"""

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hq.model import UP, Host, Job  # noqa: E402
from hq.server.scheduler import PendingIndex, place  # noqa: E402

USERS = [f"user{i}" for i in range(20)]


def make_hosts(count, slots):
    return [Host(name=f"node{i:04d}", max_slots=slots, cores=slots, status=UP,
                 groups=("even",) if i % 2 == 0 else ("odd",), memory_total=256 << 30,
                 mem_available=256 << 30, agents={u: b"x" for u in USERS})
            for i in range(count)]


def make_index(count, seed=1):
    """Mostly 1-slot jobs; some 2/4-slot, some in a group, some pinned to one host."""
    rng = random.Random(seed)
    index = PendingIndex()
    for job_id in range(1, count + 1):
        roll = rng.random()
        job = Job(id=job_id, user=rng.choice(USERS), command="true", batch=1,
                  priority=rng.choice((0, 0, 0, 1, 2)), cores=1 if roll < 0.8 else
                  rng.choice((2, 4)), group_req="even" if 0.8 <= roll < 0.9 else "",
                  host_req=f"node{rng.randrange(5):04d}" if roll >= 0.98 else "",
                  submitted=float(job_id))
        index.add(job)
    return index


def timed_pass(index, hosts, limit=None):
    started = time.perf_counter()
    result = place(index, hosts, {}, now=1e9, limit=limit)
    return time.perf_counter() - started, result


def floor_per_item(count):
    """The cost of the least a pass must do per placement: pop a heap, append a pair."""
    import heapq
    heap = [(i % 7, i) for i in range(count)]
    heapq.heapify(heap)
    out = []
    started = time.perf_counter()
    while heap:
        out.append((heapq.heappop(heap), "node"))
    return (time.perf_counter() - started) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    capacity = args.hosts * args.slots
    print(f"{args.hosts} hosts x {args.slots} slots = {capacity} slots, 20 users, "
          "80% 1-slot jobs, 10% 2/4-slot, 10% group, 2% pinned; best of "
          f"{args.repeat}")
    floor = floor_per_item(capacity)
    print(f"floor (heap pop + append per placement): {floor * 1e6:.2f} us")
    per_placement, largest = {}, 0
    for pending in (10_000, 100_000):
        index = make_index(pending)
        hosts = make_hosts(args.hosts, args.slots)
        for limit, label in ((5000, "limit 5000 (server default)"), (None, "one full pass")):
            best, placed, examined = None, 0, 0
            for _ in range(args.repeat):
                seconds, result = timed_pass(index, hosts, limit)
                if best is None or seconds < best:
                    best, placed, examined = seconds, len(result.assignments), result.examined
            largest = max(largest, placed)
            us = best / placed * 1e6
            per_placement[(pending, limit)] = us
            print(f"{pending:>7} pending, {label:<28} placed {placed:>6} (examined "
                  f"{examined:>6}) in {best * 1000:8.1f} ms = {us:6.2f} us/placement")
        full = make_hosts(args.hosts, args.slots)
        for host in full:
            host.slots_used = args.slots
        full[0].slots_used -= 1
        seconds, result = min((timed_pass(index, full) for _ in range(args.repeat)),
                              key=lambda pair: pair[0])
        print(f"{pending:>7} pending, full cluster, one free slot: pass of "
              f"{seconds * 1000:.2f} ms placed {len(result.assignments)}")
    print(f"largest single placement pass: {largest} jobs")
    for limit in (5000, None):
        ratio = per_placement[(100_000, limit)] / per_placement[(10_000, limit)]
        print(f"100,000 vs 10,000 pending ({'limit 5000' if limit else 'full pass'}): "
              f"{ratio:.2f}x per placement (must stay within 2x)")
        if not 0.5 <= ratio <= 2.0:
            print("FAIL: placement cost depends on the queue length")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
