"""A real hq installation for tools and tests: free ports, polling with a deadline, a MySQL
database of its own, and a cluster (hq-server, user-server, agents as processes) in a temp dir."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "bin")
MYSQL = {"host": os.environ.get("HQ_TEST_MYSQL_HOST", "127.0.0.1"),
         "port": int(os.environ.get("HQ_TEST_MYSQL_PORT", "3306")),
         "user": os.environ.get("HQ_TEST_MYSQL_USER", "root"),
         "password": os.environ.get("HQ_TEST_MYSQL_PASSWORD", "")}


REQUEUE_GRACE_S = 4.0    # test clusters: the agents' lease (3 heartbeats + half of it) is 3.5 s


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout=10.0, interval=0.02, message="condition"):
    """Poll `condition()` until it returns a true value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def pid_alive(pid):
    """True while any thread of the process still runs (a zombie leader whose other threads
    are still exiting still holds its files and locks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as handle:
                if handle.read().split(") ", 1)[1][0] not in "ZX":
                    return True
        except OSError:
            continue
    return False


def read_pid(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def kill_pid(pid, sig=signal.SIGTERM, timeout=5.0):
    if not pid or not pid_alive(pid):
        return
    try:
        os.kill(pid, sig)
        wait_until(lambda: not pid_alive(pid), timeout, message=f"pid {pid} to exit")
    except (ProcessLookupError, AssertionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class MysqlDatabase:
    """A database of its own for one test session, dropped at the end."""

    def __init__(self):
        import pymysql
        self.name = f"hq_test_{os.getpid()}_{int(time.time())}"
        self.conn = pymysql.connect(connect_timeout=3, autocommit=True, **MYSQL)
        self.conn.cursor().execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")

    @property
    def url(self):
        pw = f":{MYSQL['password']}" if MYSQL["password"] else ""
        return f"mysql://{MYSQL['user']}{pw}@{MYSQL['host']}:{MYSQL['port']}/{self.name}"

    def drop(self):
        self.conn.cursor().execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        self.conn.close()


class Cluster:
    """A real hq installation in a temporary directory: etc/, HQ_HOME, a database."""

    def __init__(self, db_url, hosts=(("localhost", "-", "local", "127.0.0.1"),),
                 heartbeat_s=0.5, users="", outside_load=False):
        self.root = tempfile.mkdtemp(prefix="hq")   # short: ipc:// paths have a length limit
        self.home = os.path.join(self.root, "home")
        self.etc = os.path.join(self.root, "etc")
        os.makedirs(self.home)
        shutil.copytree(os.path.join(REPO, "etc"), self.etc)
        self.port = free_port()
        self.db_url = db_url
        self.heartbeat_s = heartbeat_s
        self.requeue_grace_s = REQUEUE_GRACE_S
        self.outside_load = outside_load    # off by default: the test machine is shared
        self.write_cluster(hosts)
        with open(os.path.join(self.etc, "users"), "w") as handle:
            handle.write(users)
        self._set_cfg()
        self.server = None
        self.env = dict(os.environ, HQ_HOME=self.home, HQ_CONF=self.etc, HQ_DB_URL=db_url,
                        HQ_SERVER=f"tcp://127.0.0.1:{self.port}", HQPATH=REPO)
        self.env["HQ_VE_PATH"] = os.path.dirname(os.path.dirname(sys.executable))

    def _set_cfg(self):
        self.set_config("server", "heartbeat_s", str(self.heartbeat_s))
        self.set_config("server", "spawn_retry_s", "2")
        self.set_config("server", "requeue_grace_s", str(REQUEUE_GRACE_S))
        self.set_config("user-server", "connect_timeout_s", "2")
        self.set_config("user-server", "request_timeout_s", "5")
        self.set_config("scheduler", "outside_load", "yes" if self.outside_load else "no")

    def set_config(self, section, key, value):
        """Change one value of this cluster's etc/hq.cfg (read by processes started later)."""
        import configparser
        path = os.path.join(self.etc, "hq.cfg")
        cfg = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
        cfg.read(path)
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg[section][key] = value
        with open(path, "w") as handle:
            cfg.write(handle)

    def write_cluster(self, hosts):
        with open(os.path.join(self.etc, "cluster.tab"), "w") as handle:
            for host in hosts:
                handle.write("\t".join(host) + "\n")

    def run(self, *args, input=None, timeout=30, check=False, cwd=None, env=None):
        """Run an hq command (bin/NAME ARGS) with this cluster's environment (or `env`)."""
        command = [os.path.join(BIN, args[0]), *args[1:]]
        result = subprocess.run(command, env=env or self.env, input=input, capture_output=True,
                                text=True, timeout=timeout, cwd=cwd or self.root)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.strip()}")
        return result

    @contextlib.contextmanager
    def running(self):
        """Database set up and hq-server serving for the `with` body; all stopped after."""
        try:
            self.setup_database()
            self.start_server()
            yield self
        finally:
            self.close()

    def setup_database(self):
        self.run("hq-dbadmin", "--drop-tables", "--yes", "--create-tables",
                 "--add-standard-entries", check=True)

    def start_server(self, *args):
        log = open(os.path.join(self.root, "server.log"), "ab")
        self.server = subprocess.Popen([os.path.join(BIN, "hq-server"), "--log-level=DEBUG", *args],
                                       env=self.env, stdout=log, stderr=log, cwd=self.root)
        log.close()
        wait_until(lambda: "listening on" in self.server_log() or self.server.poll() is not None,
                   10, message="hq-server to listen")
        if self.server.poll() is not None:
            raise AssertionError(f"hq-server exited: {self.server_log()}")

    def server_log(self):
        try:
            with open(os.path.join(self.root, "server.log")) as handle:
                return handle.read()
        except OSError:
            return ""

    def stop_server(self, sig=signal.SIGTERM):
        if self.server is not None:
            if self.server.poll() is None:
                self.server.send_signal(sig)
                try:
                    self.server.wait(10)
                except subprocess.TimeoutExpired:
                    self.server.kill()
                    self.server.wait()
            self.server = None

    def client(self):
        """A Python API client bound to this cluster (sets the process environment)."""
        for key in ("HQ_HOME", "HQ_CONF", "HQ_DB_URL", "HQ_SERVER"):
            os.environ[key] = self.env[key]
        from hq.client.api import Client
        return Client(home=self.home)

    def agent_pids(self):
        run = os.path.join(self.home, "run")
        if not os.path.isdir(run):
            return []
        return [read_pid(os.path.join(run, f)) for f in os.listdir(run) if f.startswith("agent-")]

    def user_server_pid(self):
        return read_pid(os.path.join(self.home, "run", "user-server.pid"))

    def close(self):
        self.stop_server()
        for pid in [self.user_server_pid(), *self.agent_pids()]:
            kill_pid(pid)
        if os.environ.get("HQ_TEST_KEEP"):
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
