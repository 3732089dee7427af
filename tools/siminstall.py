"""The installation tools/simcluster.py plays against: a tools/cluster.py Cluster whose
cluster.tab lists N simulated hosts at unreachable addresses, users with keys of their own, and
a real hq-server (INFO log in a file) that can be killed and started again.

No agent or ssh is ever started for the simulated hosts: hq-server asks only user-servers (that
said HELLO) to start agents, the simulated users have none, and each address is NAME.invalid
(RFC 6761: never resolves), so even a user-server would fail to reach it.
"""

import os
import re
import signal
import subprocess
import time

import psutil

from hq import security
from tools.cluster import BIN, Cluster, wait_until

DOWN = re.compile(r"host (\S+) down: ")
GONE = re.compile(r"agent of (\S+) on (\S+) gone: ")


def host_names(count):
    return [f"sim{i:05d}" for i in range(count)]


class SimInstall(Cluster):
    """etc/, HQ_HOME, database and hq-server for a simulated cluster."""

    def __init__(self, db_url, hosts, slots, users, heartbeat_s, grace_s, tree=None):
        self.host_list = host_names(hosts)
        self.user_names = [f"simu{i:03d}" for i in range(users)]
        rows = [(name, str(slots), "sim", f"{name}.invalid") for name in self.host_list]
        super().__init__(db_url, hosts=rows, heartbeat_s=heartbeat_s,
                         users="".join(f"{u} USER\n" for u in self.user_names))
        self.set_config("server", "requeue_grace_s", str(grace_s))
        self.set_config("server", "spawn_retry_s", "15")
        self.bin = os.path.join(tree, "bin") if tree else BIN
        if tree:            # bin/ scripts run the hq package of HQPATH
            self.env["HQPATH"] = os.path.abspath(tree)
        self.log_path = os.path.join(self.root, "server.log")
        self.process = None

    def user_keys(self):
        """Each simulated user's CURVE keypair in a home of its own: {user: secret key file}."""
        files = {}
        for user in self.user_names:
            home = os.path.join(self.root, "users", user)
            security.ensure_keypair(home, security.USER_CERT)
            files[user] = security.cert_paths(home, security.USER_CERT)[1]
        return files

    def admin_keys(self):
        """(server public, admin public, admin secret): the server's own user, whose key the
        server registers from this HQ_HOME at start."""
        server = security.read_public_key(security.cert_paths(self.home, security.SERVER_CERT)[0])
        return (server, *security.load_keypair(
            security.cert_paths(self.home, security.USER_CERT)[1]))

    @property
    def address(self):
        return f"tcp://127.0.0.1:{self.port}"

    def start_server(self, *args):
        """Start hq-server; returns seconds until it listens (its store loaded)."""
        start = time.monotonic()
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        with open(self.log_path, "ab") as log:
            self.server = subprocess.Popen(
                [os.path.join(self.bin, "hq-server"), f"--log-file={self.log_path}", *args],
                env=self.env, stdout=log, stderr=log, cwd=self.root)
        wait_until(lambda: "listening on" in self.server_log(offset)
                   or self.server.poll() is not None, 600, 0.05, "hq-server to listen")
        if self.server.poll() is not None:
            raise SystemExit(f"hq-server exited: {self.server_log(offset)[-2000:]}")
        self.process = psutil.Process(self.server.pid)
        return time.monotonic() - start

    def server_log(self, offset=0):
        try:
            with open(self.log_path, errors="replace") as handle:
                handle.seek(offset)
                return handle.read()
        except OSError:
            return ""

    def kill_server(self):
        """kill -9: nothing is flushed, nothing said goodbye."""
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        self.server = None

    def downs(self):
        """Hosts the server logged down and (user, host) agents it logged gone."""
        text = self.server_log()
        return set(DOWN.findall(text)), set(GONE.findall(text))

    def thread_cpu(self):
        """CPU seconds of each thread of the running hq-server: the loop (named after the
        process), libzmq's I/O thread (CURVE), the ZAP handler."""
        pid, figures = self.process.pid, {}
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            with open(f"/proc/{pid}/task/{tid}/stat") as handle:
                fields = handle.read().rsplit(") ", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/comm") as handle:
                name = handle.read().strip()
            name = "loop" if tid == str(pid) else name
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if cpu:
                figures[f"{name}:{tid}" if name in figures or name != "loop" else name] = cpu
        return {name: round(cpu, 2) for name, cpu in figures.items()}

    def server_figures(self):
        """(CPU seconds, peak RSS in MB) of the running hq-server."""
        times = self.process.cpu_times()
        with open(f"/proc/{self.process.pid}/status") as handle:
            peak = next((int(line.split()[1]) for line in handle
                         if line.startswith("VmHWM:")), 0)
        return times.user + times.system, peak / 1024
