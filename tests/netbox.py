"""A cluster in a box for tests: tools/netcluster.py hosts (namespaces, an sshd each) and a real
hq installation whose server binds to their bridge; skipped (with a reason) unless root."""

import json
import os
import shutil
import subprocess
import sys


from tests.helpers import REPO, Cluster, unavailable, wait_until
from tools import netns_hosts

TOOL = os.path.join(REPO, "tools", "netcluster.py")
NEEDS = ("ip", "unshare", "ssh-keygen")


def missing():
    """Why the namespace hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not root (network namespaces and a bridge need root)"
    absent = [tool for tool in NEEDS if shutil.which(tool) is None]
    if not os.path.exists("/usr/sbin/sshd"):
        absent.append("/usr/sbin/sshd")
    return f"missing {', '.join(absent)}" if absent else None


def skip_unless_possible():
    reason = missing()
    if reason is None:
        return
    unavailable(reason, "the netcluster tests")


class NetBox:
    """`hosts` namespace hosts of 2 slots each and a Cluster (shipped timing unless told)
    whose hq-server listens on the bridge; the user's ~/.ssh is a private HOME's."""

    def __init__(self, tmp, hosts=3, settings=()):
        self.prefix = f"hqt{os.getpid() % 100000}"
        self.env = dict(os.environ, HOME=str(tmp / "home"))
        os.makedirs(self.env["HOME"], exist_ok=True)
        self.env.pop("SSH_AUTH_SOCK", None)
        subnet = netns_hosts.free_subnet()
        self.state = json.loads(self.tool("up", f"--hosts={hosts}", f"--subnet={subnet}",
                                          "--slots=2", "--json").splitlines()[-1])
        self.address = self.state["server_address"]
        self.cluster = Cluster(f"sqlite:///{tmp}/hq.sqlite", hosts=[
            tuple(line.split("\t")) for line in self.state["cluster_tab"].splitlines()])
        for section, key, value in (("server", "bind", self.address), *settings):
            self.cluster.set_config(section, key, value)
        self.cluster.env.update(HOME=self.env["HOME"],
                                HQ_SERVER=f"tcp://{self.address}:{self.cluster.port}")
        self.cluster.env.pop("SSH_AUTH_SOCK", None)

    def tool(self, *args, check=True):
        result = subprocess.run([sys.executable, TOOL, f"--prefix={self.prefix}", *args],
                                env=self.env, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"netcluster {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def hq(self, *args, **kwargs):
        return self.cluster.run(*args, **kwargs)

    def hosts(self):
        """lscluster --json: name -> host."""
        out = self.hq("hq-admin", "lscluster", "--json", check=True).stdout
        return {h["name"]: h for h in json.loads(out)["hosts"]}

    def all_up(self, timeout=60):
        """Start the user's agents everywhere and wait until every host is up."""
        self.hq("hq-client", "invokeservers", check=True)
        names = [h["name"] for h in self.state["hosts"]]
        try:
            return wait_until(lambda: all(self.hosts()[n]["status"] == "up" for n in names),
                              timeout, 0.5, "every host up")
        except AssertionError:
            raise AssertionError("hosts not all up: " + "; ".join(
                f"{n} {h['status']} {h['status_reason']}" for n, h in self.hosts().items()))

    def jobs(self, ids):
        out = self.hq("hq-client", "details", "--json", *map(str, ids), check=True).stdout
        reply = json.loads(out)
        return {j["id"]: j for j in (reply if isinstance(reply, list) else reply["jobs"])}

    def close(self):
        try:
            self.cluster.close()
        finally:
            self.tool("down", check=False)
