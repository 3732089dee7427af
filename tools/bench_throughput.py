"""Throughput benchmark: N trivial jobs piped into `hq-submit -` on one local host (slots =
cores), end to end, beside the machine's floor (the same commands through `xargs -P<slots>`).

Three runs per backend, each right after its own floor (this machine's speed drifts by 10% in a
minute): hq's default of two output files per job on the fresh server ("cold": its output
directory is new), the same again ("warm"), and output discarded (`-o /dev/null -e /dev/null`,
as the plain floor keeps no output per command). The floor for the runs with files writes the
same two files per command (creating files is far from free on some file systems, and slower
while a directory is new).

Usage:
  bench_throughput.py [--jobs=N] [--accept=N] [--backends=LIST] [--cli-runs=N]

Options:
  --jobs=N          Jobs per end-to-end run [default: 10000].
  --accept=N        Lines for the acceptance run (held jobs; 0: skip) [default: 100000].
  --backends=LIST   Comma-separated: sqlite, mysql [default: sqlite,mysql].
  --cli-runs=N      Runs of `hq-submit true` for its median wall time [default: 20].

Every run has its own temporary HQ_HOME, etc/, free port and fresh database (a MySQL database
made for the run and dropped after it). Nothing is left running.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tools.cluster import BIN, Cluster, MysqlDatabase, wait_until  # noqa: E402


def floor(n, slots, out_dir=None, tag=""):
    """Jobs per second of `xargs -P<slots>` running `sh -c true` n times (writing stdout and
    stderr files per command into `out_dir`, if given)."""
    if out_dir:
        lines = "".join(f"true >{out_dir}/{tag}{i}.out 2>{out_dir}/{tag}{i}.err\n"
                        for i in range(n))
    else:
        lines = "true\n" * n
    start = time.monotonic()
    subprocess.run(["xargs", f"-P{slots}", "-I{}", "sh", "-c", "{}"], input=lines.encode(),
                   check=True)
    return n / (time.monotonic() - start)


class BenchCluster(Cluster):
    """A Cluster whose server logs at INFO level into a file, as in production."""

    def start_server(self):
        log = os.path.join(self.root, "server.log")
        self.server = subprocess.Popen([os.path.join(BIN, "hq-server"), f"--log-file={log}"],
                                       env=self.env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, cwd=self.root)
        wait_until(lambda: " live jobs" in self.server_log() or self.server.poll() is not None,
                   20, message="hq-server to load")
        if self.server.poll() is not None:
            raise SystemExit(f"hq-server exited: {self.server_log()}")

    def server_log(self):
        try:
            with open(os.path.join(self.root, "server.log")) as handle:
                return handle.read(4096)
        except OSError:
            return ""

    def warm_up(self):
        """Start the user-server and agent; return psutil processes of server/agent/user-server."""
        result = self.run("hq-submit", "--wait", "-q", "true", timeout=60)
        if result.returncode != 0:
            raise SystemExit(f"warm-up job failed: {result.stderr}")
        agents = [pid for pid in self.agent_pids() if pid]
        return {"server": psutil.Process(self.server.pid),
                "agent": psutil.Process(agents[0]),
                "user-server": psutil.Process(self.user_server_pid())}


def cpu(process):
    times = process.cpu_times()
    return times.user + times.system


def peak_rss(process):
    """Peak resident set size in bytes (VmHWM)."""
    with open(f"/proc/{process.pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def store_of(cluster):
    from hq.config import parse_db_url
    from hq.store import open_store
    return open_store(parse_db_url(cluster.db_url))


def end_to_end(cluster, n, processes, options=()):
    """Figures of one run: n `true` jobs piped into `hq-submit -`, until all are done."""
    before = {name: cpu(p) for name, p in processes.items()}
    lines = "true\n" * n
    start = time.time()
    submit = subprocess.run([os.path.join(BIN, "hq-submit"), "-q", *options, "-"],
                            input=lines.encode(),
                            env=cluster.env, cwd=cluster.root, capture_output=True, timeout=600)
    accepted = time.time()
    if submit.returncode != 0:
        raise SystemExit(f"hq-submit failed: {submit.stderr.decode()}")
    store = store_of(cluster)
    batch = store.query("SELECT MAX(id) AS b FROM batches")[0]["b"]
    wait_until(lambda: store.count_states(batch=batch).get("done", 0) >= n, 600, 0.2,
               "every job to be done")
    after = {name: cpu(p) for name, p in processes.items()}
    rows = store.query("SELECT submitted, started FROM jobs WHERE batch = ?", (batch,))
    last_done = store.query("SELECT MAX(e.time) AS t FROM job_events e JOIN jobs j ON "
                            "j.id = e.job_id WHERE j.batch = ? AND e.state = 'done'",
                            (batch,))[0]["t"]
    store.close()
    latency = sorted(r["started"] - r["submitted"] for r in rows)
    figures = {"rate": n / (last_done - start), "submit_rate": n / (accepted - start),
               "p50": latency[len(latency) // 2], "p90": latency[int(len(latency) * 0.9)],
               "peak_rss": peak_rss(processes["server"])}
    for name in processes:
        figures[f"cpu_{name}"] = (after[name] - before[name]) * 1000 / n
    return figures


def idle_latency(cluster, runs=20):
    """Median submit-to-start of single jobs on an idle cluster."""
    client = cluster.client()
    values = []
    for _ in range(runs):
        job = client.wait([client.submit("true")], timeout=30)[0]
        values.append(_seconds(job["started"]) - _seconds(job["submitted"]))
    client.close()
    return statistics.median(values)


def _seconds(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def cli_wall(cluster, runs):
    times = []
    for _ in range(runs):
        start = time.monotonic()
        cluster.run("hq-submit", "-q", "--hold", "true", check=True)
        times.append(time.monotonic() - start)
    return statistics.median(times)


def acceptance(cluster, n, processes):
    """Seconds to get n lines accepted (ids printed) while the cluster is deactivated (they
    stay pending), server RSS with them pending, and peak RSS of hq-submit (GNU time) and of
    the user-server."""
    cluster.run("hq-admin", "deactivate", check=True)   # keep them pending: nothing runs
    start = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", os.path.join(BIN, "hq-submit"), "-"],
                            env=cluster.env,
                            input=b"true\n" * n, capture_output=True, cwd=cluster.root,
                            timeout=300)
    seconds = time.monotonic() - start
    if result.returncode != 0 or len(result.stdout.split()) != n:
        raise SystemExit(f"acceptance run failed: {result.stderr.decode()}")
    peak_kb = result.stderr.decode().strip().splitlines()[-1]
    return {"accept_s": seconds, "accept_rss": processes["server"].memory_info().rss,
            "cli_peak": int(peak_kb) * 1024 if peak_kb.isdigit() else None,
            "user_peak": peak_rss(processes["user-server"])}


def run_backend(backend, args, slots):
    database = MysqlDatabase() if backend == "mysql" else None
    cluster = None
    try:
        url = database.url if database else None
        cluster = BenchCluster(url or "sqlite:///", heartbeat_s=2)
        if not url:
            cluster.db_url = f"sqlite:///{cluster.root}/hq.sqlite"
            cluster.env["HQ_DB_URL"] = cluster.db_url
        cluster.setup_database()
        cluster.start_server()
        processes = cluster.warm_up()
        figures = {"runs": []}
        with tempfile.TemporaryDirectory(prefix="hqfloor") as out_dir:
            for output, options, files in (("2 files, cold", (), "a"), ("2 files, warm", (), "b"),
                                           ("/dev/null", ("-o", "/dev/null", "-e", "/dev/null"),
                                            None)):
                base = floor(args["jobs"], slots, out_dir if files else None, files or "")
                figures["runs"].append((output, end_to_end(cluster, args["jobs"], processes,
                                                           options), base))
        figures["idle_p50"] = idle_latency(cluster)
        if args["cli_runs"]:
            figures["cli"] = cli_wall(cluster, args["cli_runs"])
        if args["accept"]:
            figures.update(acceptance(cluster, args["accept"], processes))
        return figures
    finally:
        if cluster is not None:
            cluster.close()
        if database is not None:
            database.drop()


def report(results, args, slots):
    print(f"\n{args['jobs']} `true` jobs, 1 host, {slots} slots (cores), all changes committed")
    print(f"floor: xargs -P{slots} sh -c true (writing the same two output files per command "
          "for the runs with files), measured right before each run\n")
    head = (f"{'backend':<8} {'output':<14} {'floor':>6} {'jobs/s':>7} {'x floor':>7} "
            f"{'submit/s':>9} "
            f"{'p50 ms':>7} {'p90 ms':>7} {'srv cpu':>7} {'agent cpu':>9} {'usr cpu':>7} "
            f"{'peak RSS':>8}")
    print(head + "\n" + "-" * len(head))
    for backend, f in results.items():
        for output, row, floor_rate in f["runs"]:
            print(f"{backend:<8} {output:<14} {floor_rate:>6.0f} {row['rate']:>7.0f} "
                  f"{row['rate'] / floor_rate:>7.2f} "
                  f"{row['submit_rate']:>9.0f} {row['p50'] * 1000:>7.0f} "
                  f"{row['p90'] * 1000:>7.0f} {row['cpu_server']:>6.2f}s "
                  f"{row['cpu_agent']:>8.2f}s {row['cpu_user-server']:>6.2f}s "
                  f"{row['peak_rss'] / 2**20:>6.0f}MB")
    print("(cpu: seconds per 1,000 jobs; p50/p90: submit-to-start with the whole backlog "
          "queued; x floor: against the floor with the same output)")
    for backend, f in results.items():
        print(f"{backend}: submit-to-start p50 on an idle cluster {f['idle_p50'] * 1000:.1f} ms")
        if "cli" in f:
            print(f"{backend}: `hq-submit true` median wall time {f['cli'] * 1000:.0f} ms")
        if "accept_s" in f:
            print(f"{backend}: {args['accept']} lines accepted in {f['accept_s']:.1f} s "
                  f"({args['accept'] / f['accept_s']:.0f}/s); server RSS with them pending "
                  f"{f['accept_rss'] / 2**20:.0f} MB; peak RSS of hq-submit "
                  + (f"{f['cli_peak'] / 2**20:.0f} MB" if f["cli_peak"] else "(not measured)")
                  + f", of hq-user-server {f['user_peak'] / 2**20:.0f} MB")


def main(argv=None):
    from docopt import docopt
    raw = docopt(__doc__, argv=argv)
    args = {"jobs": int(raw["--jobs"]), "accept": int(raw["--accept"]),
            "cli_runs": int(raw["--cli-runs"])}
    slots = psutil.cpu_count() or 1
    results = {}
    for backend in raw["--backends"].split(","):
        results[backend] = run_backend(backend, args, slots)
        rates = ", ".join(f"{name} {row['rate']:.0f} (floor {base:.0f})"
                          for name, row, base in results[backend]["runs"])
        print(f"{backend} done: {rates} jobs/s", flush=True)
    report(results, args, slots)


if __name__ == "__main__":
    sys.exit(main())
