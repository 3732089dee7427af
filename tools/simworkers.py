"""The processes of tools/simagents.py that tools/simcluster.py starts: each plays the agents of
a range of hosts; their counter lines are read as they come, commands go to all of them.
"""

import json
import os
import subprocess
import sys

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
AGENTS_PER_PROCESS = 1250


class Workers:
    def __init__(self, root, install, keys, opts):
        hosts, users = install.host_list, install.user_names
        count = opts.procs or max(1, -(-len(hosts) * len(users) // AGENTS_PER_PROCESS))
        count = min(count, len(hosts))
        self.expected = len(hosts) * len(users)
        self.processes, self.latest, self.buffers, self.files = [], {}, {}, []
        for number in range(count):
            part = hosts[number * len(hosts) // count:(number + 1) * len(hosts) // count]
            config = {"worker": number, "server": install.address,
                      "server_key": install.admin_keys()[0].decode(), "keys": keys,
                      "agents": [[u, h] for h in part for u in users], "slots": opts.slots,
                      "duration": opts.duration, "heartbeat_s": opts.heartbeat,
                      "seed": number, "connect_rate": max(1.0, opts.connect_rate / count),
                      "started_file": os.path.join(root, f"started-{number}")}
            path = os.path.join(root, f"simagents-{number}.json")
            with open(path, "w") as handle:
                json.dump(config, handle)
            process = subprocess.Popen([sys.executable, os.path.join(HERE, "simagents.py"), path],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            os.set_blocking(process.stdout.fileno(), False)
            self.processes.append(process)
            self.buffers[process.stdout.fileno()] = b""
            self.files.append(config["started_file"])
        self.ps = [psutil.Process(p.pid) for p in self.processes]

    def check(self):
        """A worker that died ends the run (its agents went with it)."""
        for process in self.processes:
            if process.poll() is not None and process.returncode != 0:
                raise SystemExit(f"simulator process {process.pid} exited with "
                                 f"{process.returncode}")

    def fds(self):
        return [p.stdout.fileno() for p in self.processes]

    def read(self, fd):
        """Take the counter lines a worker wrote; the newest per worker is kept."""
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        *lines, self.buffers[fd] = (self.buffers[fd] + data).split(b"\n")
        for line in lines:
            if line.strip():
                stats = json.loads(line)
                self.latest[stats["worker"]] = stats

    def total(self, name):
        return sum(s.get(name, 0) for s in self.latest.values())

    def mark_total(self, name):
        return sum(s["mark"].get(name) or 0 for s in self.latest.values())

    def mark_first(self, name):
        times = [s["mark"].get(name) for s in self.latest.values() if s["mark"].get(name)]
        return min(times) if times else None

    def command(self, **cmd):
        line = (json.dumps(cmd) + "\n").encode()
        for process in self.processes:
            if process.poll() is None:
                process.stdin.write(line)
                process.stdin.flush()

    def cpu(self):
        total = 0.0
        for process in self.ps:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self, timeout=30):
        """Ask every worker to stop; their last counters and the ids of jobs they started."""
        cpu = self.cpu()
        self.command(cmd="stop")
        for process in self.processes:
            try:
                out, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            for line in out.split(b"\n"):
                if line.strip():
                    stats = json.loads(line)
                    self.latest[stats["worker"]] = stats
        return cpu

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def started_ids(self):
        import array
        ids = array.array("q")
        for path in self.files:
            if os.path.exists(path):
                with open(path, "rb") as handle:
                    ids.frombytes(handle.read())
        return ids
