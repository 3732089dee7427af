"""The faults of tools/chaos.py, each done to a running Cluster: kill -9 of hq-server, an agent
or the user-server; a full $HQ_HOME; a database outage (SQLite's disk full, MariaDB stopped)."""

import os
import signal

from tools.cluster import kill_pid, read_pid
from tools.faults import fill, free


def kill_server(cluster, restart=True):
    cluster.server.send_signal(signal.SIGKILL)
    cluster.server.wait(10)
    cluster.server = None
    if restart:
        cluster.start_server()


def kill_agent(cluster, host):
    kill_pid(read_pid(os.path.join(cluster.home, "run", f"agent-{host}.pid")), signal.SIGKILL)


def kill_user_server(cluster):
    kill_pid(cluster.user_server_pid(), signal.SIGKILL)


class Kills:
    """kill -9 of one of hq-server, an agent (of `hosts`), the user-server."""
    targets = ("server", "agent", "user-server")

    def __init__(self, hosts):
        self.hosts = hosts

    def strike(self, cluster, rng, target=None, restart_server=True):
        """Kill `target` (a random one by default); its name."""
        target = target or rng.choice(self.targets)
        if target == "server":
            kill_server(cluster, restart_server)
        elif target == "agent":
            kill_agent(cluster, rng.choice(self.hosts))
        else:
            kill_user_server(cluster)
        return target


class DiskFull:
    """A file system (a tmpfs at `directory`) filled to the last byte, then freed."""

    def __init__(self, name, directory):
        self.name = name
        self.directory = directory
        self.database = False      # hq-server can restart during it

    def begin(self):
        fill(self.directory)

    def end(self):
        free(self.directory)


class SqliteFull(DiskFull):
    """SQLite's disk full: every commit fails until it is freed."""

    def __init__(self, directory):
        super().__init__("db", directory)
        self.database = True       # hq-server cannot start until it ends


class MysqlDown:
    """A private MariaDB (tools/private_mysql.py) stopped, then started again (same port)."""

    def __init__(self, private):
        self.name = "db"
        self.private = private
        self.database = True

    def begin(self):
        self.private.kill(signal.SIGTERM)

    def end(self):
        self.private.start()
