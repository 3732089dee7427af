"""A private MariaDB server in a temporary directory, on its own loopback port, that tests and
tools may kill and restart without touching the machine's shared server."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

INSTALL = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
SERVER = shutil.which("mariadbd") or "/usr/sbin/mariadbd"


def available():
    return bool(INSTALL) and os.path.exists(SERVER)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateMysql:
    def __init__(self, root=None, port=None):
        self.root = root or tempfile.mkdtemp(prefix="hqmy")
        self.datadir = os.path.join(self.root, "data")
        self.port = port or _free_port()
        self.process = None

    @property
    def url(self):
        return f"mysql://root@127.0.0.1:{self.port}/hq"

    def install(self):
        result = subprocess.run(
            [INSTALL, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {result.stderr.strip()[-300:]}")

    def start(self, timeout=30):
        log = open(os.path.join(self.root, "server.log"), "ab")
        self.process = subprocess.Popen(
            [SERVER, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.root}/sock", "--user=root",
             f"--pid-file={self.root}/pid", "--skip-name-resolve", "--innodb-buffer-pool-size=64M"],
            stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited; see {self.root}/server.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mariadbd did not listen on {self.port} within {timeout}s")

    def kill(self, sig=signal.SIGKILL):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)
        self.process = None

    def close(self):
        self.kill(signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)
