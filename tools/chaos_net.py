"""chaos --net: jobs on netcluster hosts (an active hq-server, its standby, agent hosts; MySQL;
shipped timing) while agent hosts crash or are cut off and healed, and the active server's host
crashes or is cut off (the standby takes over; the old host comes back as the new standby).

Jobs append "ID ATTEMPT" to a ledger when they end well; submissions go in waves of named jobs
while the faults strike (a refused wave is looked up, and submitted again only if absent).
"""

import collections
import datetime
import os
import random
import shutil
import tempfile
import threading
import time

from hq.errors import HQError
from tools.cluster import wait_until
from tools.netstandby import SERVER_HOSTS, StandbyCluster

TERMINAL = ("done", "failed", "lost", "cancelled")
KINDS = ("crash", "partition", "server-crash", "server-partition")


class Waves(threading.Thread):
    """Submits waves of `size` jobs, one every `every` s, with its own client: at least
    `count`, and on until `stop` is set (the faults are over)."""

    def __init__(self, box, ledger, count, size, longest, rng, every=1.5):
        super().__init__(daemon=True)
        self.box, self.ledger, self.count, self.size = box, ledger, count, size
        self.longest, self.every, self.rng = longest, every, rng
        self.refused, self.resubmitted, self.refused_but_there = 0, 0, 0
        self.stop = threading.Event()
        self.sent = 0

    def command(self):
        return (f"sleep {self.rng.uniform(0.05, self.longest):.2f} && "
                f"echo $HQ_JOB_ID $HQ_ATTEMPT >> {self.ledger}")

    def run(self):
        client = self.box.cluster.client()
        wave = 0
        while wave < self.count or not self.stop.is_set():
            commands = [self.command() for _ in range(self.size)]
            while True:
                try:
                    client.submit_many(commands, name=wave_name(wave))
                    break
                except HQError:
                    self.refused += 1
                    client.close()
                    if self.present(client, wave):
                        self.refused_but_there += 1
                        break
                    self.resubmitted += 1
            wave = self.sent = wave + 1
            time.sleep(self.every)

    def present(self, client, wave):
        """Whether a refused wave is there all the same (asked until the server answers)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                return bool(client.request_list(text=wave_name(wave)))
            except HQError:
                client.close()
                time.sleep(1)
        raise RuntimeError(f"no answer about {wave_name(wave)} for 120 s")


def wave_name(wave):
    return f"cn{wave:05d}x"


class Faults:
    """The faults of one run and what they measured."""

    def __init__(self, box, rng):
        self.box, self.rng = box, rng
        self.active = SERVER_HOSTS[0]
        self.tally = collections.Counter()
        self.takeovers = []         # (seconds to the standby listening, when it happened)
        self.starts = collections.Counter({SERVER_HOSTS[0]: 1, SERVER_HOSTS[1]: 0})

    def strike(self):
        kind = self.rng.choice(KINDS)
        if kind.startswith("server"):
            self.server_fault(kind == "server-crash")
        else:
            host = self.rng.choice(self.box.agent_hosts)["name"]
            self.box.tool(kind, host)
            self.tally[kind + "es" if kind == "crash" else kind + "s"] += 1
            # a crashed host stays down past the server's requeue (16 s); a partition may
            # outlast the agents' lease (11 s: jobs fenced), not the requeue
            time.sleep(self.rng.uniform(18, 30) if kind == "crash" else
                       self.rng.uniform(3, 14))
            self.box.tool("boot" if kind == "crash" else "heal", host)

    def server_fault(self, crash):
        old = self.active
        new = SERVER_HOSTS[1 - SERVER_HOSTS.index(old)]
        struck = time.monotonic()
        self.box.tool("crash" if crash else "partition", old)
        self.starts[new] += 1
        self.box.wait_for(new, "listening on", timeout=60, count=self.starts[new])
        self.takeovers.append((time.monotonic() - struck, time.time()))
        self.active = new
        self.tally["server crashes" if crash else "server partitions"] += 1
        if not crash:       # the cut-off server steps down by itself
            wait_until(lambda: self.box.procs[old].poll() is not None, 60, 0.2,
                       f"{old}'s server to step down")
            self.tally[f"stepped down (exit {self.box.procs[old].returncode})"] += 1
        self.box.tool("boot" if crash else "heal", old)
        self.restart_standby(old)

    def restart_standby(self, host, timeout=60):
        """hq-server again on `host`, as the standby; started again while it exits at once
        (a healed link may not route for a moment: the database unreachable)."""
        deadline = time.monotonic() + timeout
        while True:
            before = self.box.output(host).count("standby on")
            proc = self.box.start_server(host)
            wait_until(lambda: self.box.output(host).count("standby on") > before
                       or proc.poll() is not None, 30, 0.1, f"{host}: standby")
            if proc.poll() is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}: hq-server does not start: "
                                   f"{self.box.output(host)[-500:]}")
            self.tally["standby restarts retried"] += 1
            time.sleep(1)


def one_run(args, seed):
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="hqchaosnet")
    ledger = os.path.join(root, "ledger")
    open(ledger, "w").close()
    box = StandbyCluster(root, agent_hosts=args.hosts)
    try:
        box.start()
        waves = Waves(box, ledger, args.jobs // 10, 10, args.sleep, random.Random(seed + 1))
        faults = Faults(box, rng)
        waves.start()
        for _ in range(args.events):
            time.sleep(rng.uniform(2, 8))
            faults.strike()
        waves.stop.set()
        waves.join(600)
        jobs = wait_for_the_end(box, waves.sent * 10)
        return figures(jobs, ledger, waves, faults), faults
    finally:
        box.close()
        shutil.rmtree(root, ignore_errors=True)


def wait_for_the_end(box, expected):
    client = box.cluster.client()

    def ended():
        try:
            jobs = client.list()
        except HQError:
            client.close()
            return None
        done = len(jobs) >= expected and all(j["state"] in TERMINAL for j in jobs)
        return jobs if done else None
    jobs = wait_until(ended, 900, 1.0, "every job to end")
    return client.details([j["id"] for j in jobs])


def figures(jobs, ledger, waves, faults):
    with open(ledger) as handle:
        runs = collections.Counter(int(line.split()[0]) for line in handle if line.strip())
    states = collections.Counter(j["state"] for j in jobs)
    per_wave = collections.Counter(j["name"] for j in jobs)
    lost = collections.Counter((j["reason"] or "")[:60] for j in jobs if j["state"] == "lost")
    failed = collections.Counter((j["reason"] or "")[:60] for j in jobs
                                 if j["state"] == "failed")
    return {"jobs": len(jobs), "done": states["done"], "lost": states["lost"],
            "failed": states["failed"], "cancelled": states["cancelled"],
            "ran twice": sum(1 for j in jobs if runs[j["id"]] > 1),
            "done but not in ledger": sum(1 for j in jobs if j["state"] == "done"
                                          and not runs[j["id"]]),
            "in ledger but not done": sum(1 for j in jobs if runs[j["id"]]
                                          and j["state"] != "done"),
            "duplicated": sum(1 for n in per_wave.values() if n > waves.size),
            "waves missing": waves.sent - len(per_wave),
            "submissions refused": waves.refused,
            "refused but committed": waves.refused_but_there,
            "requeued attempts": sum(1 for j in jobs for a in j["attempts"]
                                     if a["outcome"] == "pending"),
            "dispatch after takeover": dispatch_gaps(jobs, faults.takeovers),
            "lost reasons": lost, "failed reasons": failed}


def dispatch_gaps(jobs, takeovers):
    """For each takeover: seconds from the fault to the first dispatch by the new server (from
    shortly before this tool saw it listening: the old one may dispatch at the fault itself)."""
    times = sorted(epoch(e["time"]) for j in jobs for e in j["events"]
                   if e["state"] == "dispatched")
    gaps = []
    for seconds, when in takeovers:
        struck = when - seconds
        later = [t for t in times if t > when - 0.5]
        gaps.append(round(later[0] - struck, 1) if later else None)
    return gaps


def epoch(iso):
    """Seconds since the epoch of a job view's ISO 8601 UTC time."""
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main(args):
    started = time.monotonic()
    totals, tally, takeovers, gaps = collections.Counter(), collections.Counter(), [], []
    reasons = {"lost reasons": collections.Counter(), "failed reasons": collections.Counter()}
    for run in range(args.runs):
        result, faults = one_run(args, args.seed + run)
        for key in reasons:
            reasons[key].update(result.pop(key))
        gaps += result.pop("dispatch after takeover")
        totals.update(result)
        tally.update(faults.tally)
        takeovers += [round(s, 1) for s, _ in faults.takeovers]
        print(f"run {run + 1}/{args.runs} (seed {args.seed + run}): "
              + ", ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    rows = [("seed", args.seed), ("backend", "mysql, active + standby hq-server"),
            ("agent hosts", args.hosts), ("heartbeat, grace, lease", "2 s, 10 s, 5 s"),
            ("runs", args.runs), *sorted(tally.items()),
            ("takeovers", len(takeovers)), ("takeover seconds", takeovers),
            ("fault to first dispatch s", gaps), *totals.items(),
            *[(k, "; ".join(f"{n} {why}" for why, n in v.most_common(4)) or "none")
              for k, v in reasons.items()],
            ("seconds", round(time.monotonic() - started, 1))]
    for name, value in rows:
        print(f"{name:<30} {value}")
    bad = totals["ran twice"] or totals["done but not in ledger"] or totals["duplicated"]
    return 1 if bad else 0
