"""Scale benchmark: a simulated cluster of many hosts and users against a real hq-server.

Agents are played by worker processes (tools/simagents.py: one DEALER with CURVE per (user, host),
the agent protocol of agents/exec_server.py, jobs that "run" for --duration seconds without
processes), users by this process (tools/simusers.py: streamed batches, single jobs, cancels,
queries, and `hq-admin status` round trips); the installation is tools/siminstall.py. The
simulator's CPU is counted apart from the server's. With --json, one JSON object goes last on
stdout.

Usage:
  simcluster.py --hosts=N --slots=S --users=U --jobs=J [options]

Options:
  --hosts=N          Simulated hosts (cluster.tab lines).
  --slots=S          max_slots of each host (its agents report S cores).
  --users=U          Simulated users; each has an agent on every host.
  --jobs=J           Jobs to run, split among the users.
  --duration=SPEC    Run time of a job: 0, N or LOW-HIGH seconds (uniform) [default: 0].
  --db=DB            sqlite, mysql (a database made for the run on 127.0.0.1:3306, as the
                     tests' MYSQL) or a database URL (its tables are made anew) [default: sqlite].
  --keep             Keep the database (and the installation); the server is stopped.
  --json             Print one JSON object of figures last on stdout.
  --rate=R           Submit R jobs a second in all (0: all at once) [default: 0].
  --heartbeat=S      heartbeat_s of the installation [default: 2].
  --grace=S          requeue_grace_s of the installation [default: 10].
  --procs=K          Simulator processes for the agents (0: one per 1,250) [default: 0].
  --connect-rate=R   Agents connecting a second at the start, in all (as user-servers start
                     them) [default: 1000].
  --idle=S           Before submitting, measure S seconds of heartbeats alone [default: 0].
  --singles=F        Share of each user's jobs sent one per SUBMIT (at most 200) [default: 0.01].
  --cancels=N        Held jobs each user submits, then cancels (not in J) [default: 10].
  --query-every=S    Each user's DETAILS/LIST/STATUS query interval (0: none) [default: 1].
  --status-every=S   Interval of `hq-admin status` round trips [default: 0.25].
  --silence=N        N hosts stop heartbeating for good at --fault-at [default: 0].
  --pause=N          N other hosts go silent at --fault-at, reconnect --pause-s later [default: 0].
  --pause-s=S        How long paused hosts are silent [default: 5].
  --fault-at=S       Seconds after the first submission (once every job is accepted)
                     [default: 2].
  --restart-after=S  kill -9 hq-server S seconds after every job was accepted and start it
                     again (0: never) [default: 0].
  --window=S         Stop S seconds after every job was accepted (0: when all are done)
                     [default: 0].
  --timeout=S        Give up waiting for the jobs after S seconds [default: 1800].
  --hq=DIR           Run the hq-server of another hq tree (a checkout of an older commit:
                     before and after figures in one session; default: this tree).
  --py-spy=FILE      Profile hq-server with py-spy (PATH or $PY_SPY) while jobs run: raw
                     (collapsed) stacks into FILE.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import zmq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from hq import security  # noqa: E402
from tools import simreport  # noqa: E402
from tools.cluster import MysqlDatabase  # noqa: E402
from tools.simagents import raise_open_files  # noqa: E402
from tools.siminstall import SimInstall  # noqa: E402
from tools.simusers import Connection, SimUser, StatusProbe  # noqa: E402
from tools.simworkers import Workers  # noqa: E402

MAX_SINGLES = 200


class Options:
    def __init__(self, args):
        number = {"--duration", "--db", "--keep", "--json", "--help", "--py-spy", "--hq"}
        for name, value in args.items():
            if name.startswith("--"):
                key = name[2:].replace("-", "_")
                setattr(self, key, value if name in number else float(value))
        for name in ("hosts", "slots", "users", "jobs", "procs", "cancels", "silence", "pause"):
            setattr(self, name, int(getattr(self, name)))


class Simulation:
    def __init__(self, install, opts):
        self.install, self.opts = install, opts
        self.context = zmq.Context()
        self.figures = {"jobs": opts.jobs, "hosts": opts.hosts, "users": opts.users,
                        "slots": opts.slots, "duration": opts.duration, "db": opts.db}
        self.workers = None
        self.faulty = set()
        self.cpu_marks = {}

    # -- the loop: users' and admin's sockets, workers' counter lines ------------------------
    def spin(self, seconds=0.02):
        if self.workers is not None:
            self.workers.check()
        for item, _ in self.poller.poll(seconds * 1000):
            if isinstance(item, int):
                self.workers.read(item)
        now = time.time()
        for conn in self.connections:
            conn.receive(now)
            conn.expire(now, 30.0 if conn is not self.admin else 2.0)
        return now

    def run(self):
        self.figures["server_start_s"] = round(self.install.start_server(), 2)
        self.admin = Connection(self.context, self.install.address, self.install.admin_keys(),
                                "admin")
        self.connections = [self.admin]
        self.poller = zmq.Poller()
        self.poller.register(self.admin.socket, zmq.POLLIN)
        keys = self.install.user_keys()
        self.add_users(keys)
        self.start_agents(keys)
        if self.opts.idle:
            self.idle_window()
        self.users = self.make_users(keys)
        profiler = self.profile()
        try:
            self.run_jobs()
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(60)
        return self.figures

    def status_timer(self):
        """tools/simprobe.py: `hq-admin status` every --status-every seconds, timed apart."""
        keys = "".join(key.decode() + "\n" for key in self.install.admin_keys())
        timer = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "simprobe.py"),
                                  self.install.address, str(self.opts.status_every), "2"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        timer.stdin.write(keys)
        timer.stdin.flush()
        return timer

    def profile(self):
        """py-spy recording the server while the jobs run (--py-spy=FILE), or None."""
        if not self.opts.py_spy:
            return None
        spy = os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy"
        return subprocess.Popen([spy, "record", "--pid", str(self.install.server.pid),
                                 "--format", "raw", "--rate", "200", "--output",
                                 self.opts.py_spy], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def add_users(self, keys):
        """`hq-admin adduser NAME --key=FILE` for each simulated user (ADMIN adduser)."""
        answers = {}
        now = time.time()
        for user, path in keys.items():
            key = security.read_public_key(path).decode()
            self.admin.request(b"ADMIN", {"command": "adduser", "arg": user, "key": key}, now,
                               lambda kind, body, rtt, u=user: answers.__setitem__(u, kind))
        deadline = now + 60
        while len(answers) < len(keys) and time.time() < deadline:
            self.spin()
        if set(answers.values()) != {b"OK"}:
            raise SystemExit(f"adduser failed: {answers}")

    def start_agents(self, keys):
        start = time.time()
        self.workers = Workers(self.install.root, self.install, keys, self.opts)
        for fd in self.workers.fds():
            self.poller.register(fd, zmq.POLLIN)
        deadline = start + 120 + self.workers.expected / 100
        while self.workers.total("registers") < self.workers.expected:
            if time.time() > deadline:
                raise SystemExit(f"only {self.workers.total('registers')} of "
                                 f"{self.workers.expected} agents registered")
            self.spin(0.1)
        self.figures["connect_s"] = round(time.time() - start, 2)
        self.figures["procs"] = len(self.workers.processes)

    def idle_window(self):
        """Server CPU while only heartbeats flow: the cost of holding the agents."""
        server0, _ = self.install.server_figures()
        threads0, sim0 = self.install.thread_cpu(), self.workers.cpu()
        counts0 = {n: self.workers.total(n) for n in ("heartbeats", "reregisters")}
        start = time.time()
        while time.time() - start < self.opts.idle:
            self.spin(0.1)
        server1, _ = self.install.server_figures()
        threads1, took = self.install.thread_cpu(), time.time() - start
        self.figures["heartbeat_cpu_pct"] = round(100 * (server1 - server0) / took, 1)
        self.figures["idle_window"] = {
            "threads_cpu_pct": {name: round(100 * (cpu - threads0.get(name, 0.0)) / took, 1)
                                for name, cpu in threads1.items()},
            "sim_cpu_pct": round(100 * (self.workers.cpu() - sim0) / took, 1),
            **{f"{n}_per_s": round((self.workers.total(n) - c) / took, 1)
               for n, c in counts0.items()}}

    def make_users(self, keys):
        server_key = self.install.admin_keys()[0]
        users, opts = [], self.opts
        out = os.path.join(self.install.home, "output")
        for index, (name, path) in enumerate(keys.items()):
            share = opts.jobs // opts.users + (index < opts.jobs % opts.users)
            conn = Connection(self.context, self.install.address,
                              (server_key, *security.load_keypair(path)), name)
            self.connections.append(conn)
            self.poller.register(conn.socket, zmq.POLLIN)
            singles = min(MAX_SINGLES, int(share * opts.singles))
            users.append(SimUser(conn, share, singles, opts.cancels, opts.rate / opts.users,
                                 opts.query_every, out))
        return users

    # -- jobs ---------------------------------------------------------------------------------
    def run_jobs(self):
        opts = self.opts
        self.probe = StatusProbe(self.admin, 1.0)     # placement counters; the round trips
        timer = self.status_timer()                   # are timed by a process of their own
        self.probe.step(time.time())
        while self.probe.in_flight:          # the placement counters before any job
            self.spin()
        self.start = time.time()
        self.mark_cpu("start")
        accepted_at = None
        restarted = False
        while True:
            now = self.spin()
            for user in self.users:
                user.step(now)
            self.probe.step(now)
            self.faults(now, accepted_at)
            if accepted_at is None and all(u.submitted_all for u in self.users):
                accepted_at = now
                self.figures["accept_s"] = round(now - self.start, 2)
                self.mark_cpu("accepted")
            if accepted_at and opts.restart_after and not restarted \
                    and now - accepted_at >= opts.restart_after:
                restarted = True
                self.restart()
            if self.finished(now, accepted_at):
                break
        self.mark_cpu("end")
        self.figures["server_threads_cpu_s"] = self.install.thread_cpu()
        self.figures["agents"] = self.workers.total("held")
        self.figures["sim_user_rtts"] = [r for u in self.users for r in u.query_rtts]
        timer.stdin.close()
        timed = json.loads(timer.stdout.read())
        timer.wait(30)
        self.figures["status_rtts"] = timed["rtts"]
        self.figures["status_lost"] = timed["lost"]
        self.figures["status_worst"] = timed["worst"]

    def finished(self, now, accepted_at):
        opts = self.opts
        if now - self.start > opts.timeout:
            self.figures["timed_out"] = True
            return True
        if opts.window:
            return accepted_at is not None and now - accepted_at >= opts.window
        return accepted_at is not None and self.workers.total("done_acked") >= opts.jobs \
            and self.all_done()

    def all_done(self):
        """The workers' counts say so; the database must agree (a job done twice counts
        twice at the workers)."""
        last = getattr(self, "_checked", 0)
        if time.time() - last < 0.5:
            return False
        self._checked = time.time()
        return simreport.count_done(self.install.db_url, self.cancel_batches()) >= self.opts.jobs

    def cancel_batches(self):
        return [u.cancel_batch for u in self.users if u.cancel_batch]

    def faults(self, now, accepted_at):
        """Hosts silenced or paused --fault-at after the first submission, not before every
        job was accepted (on a loaded machine the last hosts may hold nothing yet)."""
        opts = self.opts
        if self.faulty or now - self.start < opts.fault_at or accepted_at is None \
                or not (opts.silence or opts.pause):
            return
        hosts = self.install.host_list
        silenced = hosts[len(hosts) - opts.silence:] if opts.silence else []
        paused = hosts[len(hosts) - opts.silence - opts.pause:len(hosts) - opts.silence]
        self.workers.command(cmd="silence", hosts=silenced)
        self.workers.command(cmd="pause", hosts=paused, seconds=opts.pause_s)
        self.faulty = set(silenced) | set(paused)
        self.figures["silenced"], self.figures["paused"] = silenced, paused

    def mark_cpu(self, name):
        if getattr(self, "probe", None) is not None and self.probe.last:
            self.cpu_marks[f"placement_{name}"] = (self.probe.last.get("placement_s", 0.0),
                                                   self.probe.last.get("placed", 0))
        server, rss = self.install.server_figures()
        base = self.cpu_marks.get("server_offset", 0.0)
        self.cpu_marks[name] = (time.time(), server + base, self.workers.cpu(),
                                resource.getrusage(resource.RUSAGE_SELF), rss,
                                self.workers.total("done_acked"))

    # -- restart ------------------------------------------------------------------------------
    def restart(self):
        """kill -9 the server and start it again: how long until it serves, dispatches, and
        has every agent back."""
        install, workers = self.install, self.workers
        self.mark_cpu("restart")
        server, rss = install.server_figures()
        self.cpu_marks["server_offset"] = self.cpu_marks.get("server_offset", 0.0) + server
        self.cpu_marks["rss_before_restart"] = rss
        install.kill_server()
        workers.command(cmd="mark")
        begin = time.time()
        listening = install.start_server()
        restart = {"listening_s": round(listening, 2)}
        asked = 0.0
        answered = []
        while not answered and time.time() - begin < 120:
            now = self.spin(0.01)
            if now - asked > 0.2:
                asked = now
                self.admin.request(b"ADMIN", {"command": "info"}, now,
                                   lambda kind, body, rtt: kind and answered.append(time.time()))
        restart["serving_s"] = round(answered[0] - begin, 2) if answered else None
        while time.time() - begin < 300:
            now = self.spin(0.1)
            first_run = workers.mark_first("first_run")
            back = workers.mark_total("registered")
            if first_run and "dispatching_s" not in restart:
                restart["dispatching_s"] = round(first_run - begin, 2)
            if back >= workers.expected - len(self.faulty) and "agents_back_s" not in restart:
                restart["agents_back_s"] = round(now - begin, 2)
            if "dispatching_s" in restart and "agents_back_s" in restart:
                break
        restart["agents_back"] = workers.mark_total("registered")
        self.figures["restart"] = restart


def database(kind):
    """(database to drop at the end or None, URL or None for a SQLite file in the install)."""
    if kind == "mysql":
        db = MysqlDatabase()
        return db, db.url
    if kind.startswith(("sqlite://", "mysql://")):
        return None, kind
    if kind != "sqlite":
        raise SystemExit("--db must be sqlite, mysql or a database URL")
    return None, None


def main(argv=None):
    from docopt import docopt
    opts = Options(docopt(__doc__, argv=argv))
    raise_open_files(1 << 20)
    db, url = database(opts.db)
    install = simulation = None
    try:
        install = SimInstall(url or "sqlite:///", opts.hosts, opts.slots, opts.users,
                             opts.heartbeat, opts.grace, opts.hq)
        if url is None:
            install.db_url = f"sqlite:///{install.root}/hq.sqlite"
            install.env["HQ_DB_URL"] = install.db_url
        install.setup_database()
        simulation = Simulation(install, opts)
        figures = simulation.run()
        install.stop_server()         # first: agents that stop are never seen silent
        simulation.workers.stop()
        figures = simreport.finish(install, simulation, figures)
    finally:
        if simulation is not None and simulation.workers is not None:
            simulation.workers.kill()
        if install is not None:
            install.stop_server()
            if not opts.keep:
                shutil.rmtree(install.root, ignore_errors=True)
        if db is not None and not opts.keep:
            db.drop()
    if opts.keep:
        print(f"kept {install.root} and {install.db_url}")
    simreport.show(figures, opts.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
