"""An active hq-server and its standby on hosts of their own (tools/netcluster.py namespaces),
agents on the other hosts, MySQL (reached through tools/tcprelay.py): tests and chaos --net.

Each server runs inside its host's namespace, so `netcluster crash` is a power cut for it too.
"""

import json
import os
import subprocess
import sys

from tools import netns_hosts
from tools.cluster import BIN, MYSQL, REPO, Cluster, MysqlDatabase, wait_until

TOOL = os.path.join(REPO, "tools", "netcluster.py")
SERVER_HOSTS = ("node1", "node2")
SHIPPED = (("server", "heartbeat_s", "2"), ("server", "requeue_grace_s", "10"),
           ("server", "standby", "yes"), ("user-server", "connect_timeout_s", "3"),
           ("user-server", "request_timeout_s", "10"))


class StandbyCluster:
    """node1 and node2 for hq-server, node3.. for agents (2 slots each); `root` a private
    directory (its home/ is the HOME whose ~/.ssh the hosts trust)."""

    def __init__(self, root, agent_hosts=2, settings=SHIPPED, database=None):
        self.prefix = f"hqs{os.getpid() % 100000}"
        self.env = dict(os.environ, HOME=os.path.join(root, "home"))
        self.env.pop("SSH_AUTH_SOCK", None)
        os.makedirs(self.env["HOME"], exist_ok=True)
        self.procs, self.relay, self.cluster = {}, None, None
        self.database = database
        subnet = netns_hosts.free_subnet()
        self.state = json.loads(self.tool("up", f"--hosts={2 + agent_hosts}",
                                          f"--subnet={subnet}", "--slots=2",
                                          "--json").splitlines()[-1])
        try:
            self._install(settings)
        except BaseException:
            self.close()
            raise

    def _install(self, settings):
        self.address = self.state["server_address"]
        self.relay = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "tcprelay.py"),
                                       self.address, f"{MYSQL['host']}:{MYSQL['port']}"],
                                      stdout=subprocess.PIPE, text=True)
        port = int(self.relay.stdout.readline().split()[1])
        self.own_database = self.database is None
        self.database = self.database or MysqlDatabase()
        password = f":{MYSQL['password']}" if MYSQL["password"] else ""
        url = f"mysql://{MYSQL['user']}{password}@{self.address}:{port}/{self.database.name}"
        self.agent_hosts = [h for h in self.state["hosts"] if h["name"] not in SERVER_HOSTS]
        self.cluster = Cluster(url, hosts=[(h["name"], "2", "net", h["address"], "active")
                                           for h in self.agent_hosts])
        for section, key, value in settings:
            self.cluster.set_config(section, key, value)
        self.cluster.env.update(HOME=self.env["HOME"], HQ_SERVER=",".join(
            f"tcp://{self.host_address(h)}:{self.cluster.port}" for h in SERVER_HOSTS))
        self.cluster.env.pop("SSH_AUTH_SOCK", None)
        self.cluster.setup_database()

    def tool(self, *args, check=True):
        result = subprocess.run([sys.executable, TOOL, f"--prefix={self.prefix}", *args],
                                env=self.env, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"netcluster {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def host_address(self, name):
        return next(h["address"] for h in self.state["hosts"] if h["name"] == name)

    def hq(self, *args, **kwargs):
        return self.cluster.run(*args, **kwargs)

    # -- the servers -------------------------------------------------------------------------
    def start_server(self, host):
        """hq-server inside `host`'s namespace (its output and log under the cluster root)."""
        root = self.cluster.root
        with open(os.path.join(root, f"server-{host}.out"), "ab") as out:
            self.procs[host] = subprocess.Popen(
                ["ip", "netns", "exec", f"{self.prefix}-{host}", os.path.join(BIN, "hq-server"),
                 f"--bind={self.host_address(host)}", "--log-level=INFO",
                 f"--log-file={root}/server-{host}.log"],
                env=self.cluster.env, stdout=out, stderr=out, cwd=root)
        return self.procs[host]

    def output(self, host):
        return _read(os.path.join(self.cluster.root, f"server-{host}.out"))

    def log(self, host):
        return _read(os.path.join(self.cluster.root, f"server-{host}.log"))

    def wait_for(self, host, text, timeout=20, count=1):
        """Until the server's output says `text` (`count` times: after restarts)."""
        proc = self.procs[host]
        wait_until(lambda: self.output(host).count(text) >= count or proc.poll() is not None,
                   timeout, 0.1, f"{host}: {text}")
        if self.output(host).count(text) < count:
            raise AssertionError(f"{host}: no {text!r}: {self.output(host)[-2000:]}")

    def start(self):
        """node1 active, node2 its standby, the agents up on every agent host."""
        self.start_server(SERVER_HOSTS[0])
        self.wait_for(SERVER_HOSTS[0], "listening on")
        self.start_server(SERVER_HOSTS[1])
        self.wait_for(SERVER_HOSTS[1], "standby on")
        self.all_up()

    def hosts(self):
        out = self.hq("hq-admin", "lscluster", "--json", check=True).stdout
        return {h["name"]: h for h in json.loads(out)["hosts"]}

    def all_up(self, timeout=90):
        self.hq("hq-client", "invokeservers", check=True)
        names = [h["name"] for h in self.agent_hosts]
        wait_until(lambda: all(self.hosts()[n]["status"] == "up" for n in names), timeout, 0.5,
                   "every agent host up")

    def jobs(self, ids):
        out = self.hq("hq-client", "details", "--json", *map(str, ids), check=True).stdout
        reply = json.loads(out)
        return {j["id"]: j for j in (reply if isinstance(reply, list) else reply["jobs"])}

    def close(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        try:
            if self.cluster is not None:
                self.cluster.close()
        finally:
            self.tool("down", check=False)
            if self.relay is not None:
                self.relay.kill()
                self.relay.wait()
            if self.database is not None and getattr(self, "own_database", False):
                self.database.drop()


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""
