"""A private MariaDB for a user without admin rights (`make sql`), made from the system's mariadbd
in $HQ_HOME/mysql on a port of its own on 127.0.0.1; tests use throw-away ones they may kill.

Usage: private_mysql.py start|stop|status [--dir DIR] [--port N]

start: the first time, creates the data directory (mariadb-install-db), a database `hq`, a user
`hq` with a generated password (no other account), and DIR/hq-db.cfg (0600) for hq's etc/; then
starts mariadbd detached (data, socket, log and pid file in DIR). Needs only Python's stdlib.
"""

import argparse
import configparser
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

INSTALL = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
SERVER = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
NAME = "private_mysql"


class Error(Exception):
    """A one-line failure for the command line, with hq's error code."""

    def __init__(self, message, code="DATABASE_ERROR"):
        super().__init__(message)
        self.code = code


def available():
    return bool(INSTALL) and os.path.exists(SERVER)


def _free_port():
    """A free port below the kernel's ephemeral range: tests stop this server and start it
    again on its port, and no port the kernel hands out meanwhile (a bind to port 0 by a test
    of another worker, a connection's own end) can be one of these."""
    low = _ephemeral_low()
    choices = random.Random()
    for _ in range(200):
        port = choices.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _as_root():
    """mariadbd and mariadb-install-db refuse root unless told --user=root; others must not."""
    return ["--user=root"] if os.geteuid() == 0 else []


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _setup_sql(password):
    """Run by mariadb-install-db: only `hq` (all rights, with a password) can log in."""
    users = ("'hq'@'127.0.0.1'", "'hq'@'localhost'")
    return "\n".join(["FLUSH PRIVILEGES;",     # account statements need the grant tables
                      "DELETE FROM mysql.global_priv WHERE User IN ('root', '');",
                      "FLUSH PRIVILEGES;",
                      "CREATE DATABASE hq CHARACTER SET utf8mb4;",
                      *[f"CREATE USER {u} IDENTIFIED BY '{password}';" for u in users],
                      *[f"GRANT ALL PRIVILEGES ON *.* TO {u} WITH GRANT OPTION;" for u in users],
                      ""])


class PrivateMysql:
    """Data, socket, log, pid file and hq-db.cfg in `root` (a new temporary one by default)."""

    def __init__(self, root=None, port=None):
        self.root = os.path.abspath(root or tempfile.mkdtemp(prefix="hqmy"))
        self.datadir = os.path.join(self.root, "data")
        self.socket = os.path.join(self.root, "mysqld.sock")
        self.pid_file = os.path.join(self.root, "mysqld.pid")
        self.log = os.path.join(self.root, "mysqld.log")
        self.cfg = os.path.join(self.root, "hq-db.cfg")
        self.password = None
        self.port = port
        self.process = None
        if os.path.exists(self.cfg):
            self._read_cfg()
        self.port = port or self.port or _free_port()

    @property
    def url(self):
        return f"mysql://hq:{self.password}@127.0.0.1:{self.port}/hq"

    def installed(self):
        return os.path.isdir(os.path.join(self.datadir, "mysql")) and self.password is not None

    def _read_cfg(self):
        cfg = configparser.ConfigParser(interpolation=None)
        cfg.read(self.cfg)
        self.password = cfg.get("database", "password", fallback=None)
        self.port = cfg.getint("database", "port", fallback=None)

    def write_cfg(self):
        _write_private(self.cfg, "\n".join([
            f"# hq's database: the private MariaDB in {self.root} (tools/private_mysql.py).",
            "# Copy this file into hq's etc/ (HQ_CONF); it holds a password: keep it 0600.",
            "[database]", "backend = mysql", "host = 127.0.0.1", f"port = {self.port}",
            "user = hq", f"password = {self.password}", "database = hq", "pool_size = 4", ""]))

    def install(self):
        """A new data directory with database and user `hq`; writes hq-db.cfg."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.password = secrets.token_hex(16)
        sql = os.path.join(self.root, "setup.sql")
        _write_private(sql, _setup_sql(self.password))
        try:
            result = subprocess.run(
                [INSTALL, "--no-defaults", f"--datadir={self.datadir}", *_as_root(),
                 "--auth-root-authentication-method=normal", "--skip-test-db",
                 f"--extra-file={sql}"], capture_output=True, text=True, timeout=120)
        finally:
            os.unlink(sql)
        if result.returncode != 0:
            errors = [line for line in result.stdout.splitlines() + result.stderr.splitlines()
                      if "ERROR" in line] or result.stderr.strip().splitlines()[-1:]
            raise Error(f"mariadb-install-db failed: {' '.join(errors)[-300:]}")
        self.write_cfg()

    def pid(self):
        """The pid of our running mariadbd, or None."""
        if self.process is not None:
            return self.process.pid if self.process.poll() is None else None
        try:
            with open(self.pid_file) as handle:
                pid = int(handle.read().strip())
            with open(f"/proc/{pid}/comm") as handle:      # not a stale file's reused pid
                return pid if handle.read().strip() == "mariadbd" else None
        except (OSError, ValueError):
            return None

    def listening(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self, timeout=30):
        """Start mariadbd in its own session (it outlives this process) and wait for its port."""
        if self.listening():
            raise Error(f"port {self.port} on 127.0.0.1 is taken: start with --port N")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [SERVER, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                 "--bind-address=127.0.0.1", f"--socket={self.socket}", *_as_root(),
                 f"--pid-file={self.pid_file}", f"--log-error={self.log}", "--skip-name-resolve",
                 "--innodb-buffer-pool-size=64M"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.listening():
            if self.process.poll() is not None:
                raise Error(f"mariadbd exited: {self.last_error()} (log: {self.log})")
            if time.monotonic() >= deadline:
                raise Error(f"mariadbd did not listen on {self.port} within {timeout}s "
                            f"(log: {self.log})")
            time.sleep(0.05)

    def last_error(self):
        try:
            with open(self.log, errors="replace") as handle:
                lines = [line.strip() for line in handle if "ERROR" in line]
        except OSError:
            return "no log"
        return lines[-1] if lines else "no error logged"

    def kill(self, sig=signal.SIGKILL, timeout=60):
        """Send `sig` to mariadbd and wait until it is gone."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.process = None

    def _alive(self, pid):
        if self.process is not None:
            return self.process.poll() is None
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

    def close(self):
        self.kill(signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)


def default_dir():
    home = os.environ.get("HQ_HOME") or "~/.hq"
    return os.path.join(os.path.abspath(os.path.expanduser(home)), "mysql")


def describe(db):
    return f"MariaDB (pid {db.pid()}) on 127.0.0.1:{db.port}, data in {db.datadir}"


def cmd_start(db, port_given):
    if db.pid():
        print(f"already running: {describe(db)}; hq's settings: {db.cfg}")
        return 0
    written = not db.installed() or port_given
    if not db.installed():
        db.install()
    elif port_given:
        db.write_cfg()
    db.start()
    print(f"started {describe(db)}")
    print(f"{'wrote' if written else 'settings in'} {db.cfg} (0600: backend mysql, database hq, "
          f"user hq, a generated password): copy it into hq's etc/ (HQ_CONF) to use it")
    return 0


def cmd_stop(db):
    if not db.pid():
        print(f"not running ({db.root})")
        return 0
    pid = db.pid()
    db.kill(signal.SIGTERM)
    if db._alive(pid):
        raise Error(f"mariadbd (pid {pid}) still runs 60 s after SIGTERM")
    print(f"stopped MariaDB (pid {pid}) in {db.root}")
    return 0


def cmd_status(db):
    if not db.installed():
        print(f"not installed in {db.root} (start makes it)")
        return 3
    if db.pid() and db.listening():
        print(f"running: {describe(db)}; hq's settings: {db.cfg}")
        return 0
    print(f"stopped ({db.root}, port {db.port})")
    return 3


def main(argv=None):
    parser = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--dir", default=None, help="default: $HQ_HOME/mysql (~/.hq/mysql)")
    parser.add_argument("--port", type=int, default=None, help="default: the last, or a free one")
    args = parser.parse_args(argv)
    try:
        if not available():
            raise Error("no MariaDB server here (mariadbd and mariadb-install-db): install it "
                        "first, e.g. apt-get install mariadb-server", "CONFIG_ERROR")
        db = PrivateMysql(args.dir or default_dir(), args.port)
        if args.command == "start":
            return cmd_start(db, args.port is not None)
        return cmd_stop(db) if args.command == "stop" else cmd_status(db)
    except (Error, OSError, configparser.Error) as exc:
        print(f"{NAME}: {exc} [{getattr(exc, 'code', 'DATABASE_ERROR')}]", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
