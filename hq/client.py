"""The Python API of hq: `Client` talks to the user's hq-user-server (starting it on first
use), which forwards to hq-server. Every call has a deadline; errors raise HQError."""

import fcntl
import itertools
import os
import subprocess
import sys
import time

import zmq

from hq import config, protocol as p
from hq.errors import TIMEOUT, USER_SERVER_UNREACHABLE, HQError
from hq.model import TERMINAL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT_S = 10.0
CHUNK = 5000


class Client:
    """hq for Python scripts: `Client().submit("echo hi")` returns the job id."""

    def __init__(self, home=None, timeout=None):
        self.home = os.path.abspath(home) if home else config.home_dir()
        self.settings = config.load_settings()
        self.timeout = timeout or self.settings.request_timeout_s + 5
        self._ids = itertools.count(1)
        self._socket = None

    # -- connection ----------------------------------------------------------------------
    def _connect(self):
        if self._socket is None:
            ensure_user_server(self.home)
            from hq.userserver import socket_path
            self._socket = zmq.Context.instance().socket(zmq.DEALER)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(f"ipc://{socket_path(self.home)}")
        return self._socket

    def close(self):
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, kind, **body):
        """Send one request; the reply's fields, or HQError."""
        sock = self._connect()
        req = next(self._ids)
        sock.send_multipart(p.encode(kind, {"req": req, **body}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(left * 1000):
                self.close()
                raise HQError(USER_SERVER_UNREACHABLE,
                              f"no answer from hq-user-server within {self.timeout:g}s "
                              f"(see {os.path.join(self.home, 'log', 'user-server.log')})")
            kind, reply = p.decode(sock.recv_multipart(), kinds={p.OK, p.ERROR})
            if reply.get("req") != req:
                continue   # the late answer to an earlier, abandoned request
            if kind == p.ERROR:
                raise HQError(reply.get("code", "ERROR"), reply.get("message", "error"))
            return reply

    # -- jobs -----------------------------------------------------------------------------
    def submit(self, command, **options):
        """Submit one command; returns its job id once hq-server has committed it."""
        return self.submit_many([command], **options)[0]

    def submit_many(self, commands, hold=False, cwd=None, env=None, **options):
        """Submit many commands with the same options; returns their ids in order."""
        cwd = os.path.abspath(cwd or os.getcwd())
        env = dict(os.environ if env is None else env)
        ids, chunk = [], []
        for command in commands:
            chunk.append(self._spec(command, options))
            if len(chunk) >= CHUNK:
                ids += self._submit_chunk(chunk, cwd, env, hold)
                chunk = []
        if chunk:
            ids += self._submit_chunk(chunk, cwd, env, hold)
        return ids

    def _spec(self, command, options):
        spec = {"command": command}
        spec.update({k: v for k, v in options.items() if v is not None})
        after = spec.pop("after", None)
        if after:
            spec["depends_on"] = after if isinstance(after, str) else ",".join(map(str, after))
        out_dir = os.path.join(self.home, "output")
        spec["stdout"] = self._path(spec.get("stdout") or os.path.join(out_dir, "%j.out"))
        spec["stderr"] = self._path(spec.get("stderr") or os.path.join(out_dir, "%j.err"))
        if spec.get("logfile"):
            spec["logfile"] = self._path(spec["logfile"])
        return spec

    def _path(self, path):
        base = os.getcwd()
        return os.path.abspath(os.path.join(base, os.path.expanduser(path)))

    def _submit_chunk(self, specs, cwd, env, hold):
        reply = self.request(p.SUBMIT, jobs=specs, cwd=cwd, env=env, hold=hold)
        return reply["ids"]

    def status(self):
        return self.request(p.STATUS)["counts"]

    def list(self, states=None, limit=0, batch=None):
        if isinstance(states, str):
            states = [states]
        return self.request(p.LIST, states=list(states or []), limit=limit, batch=batch)["jobs"]

    def request_list(self, **fields):
        """LIST with any of its fields (states, limit, batch, text)."""
        return self.request(p.LIST, **fields)["jobs"]

    def agents(self, action="list"):
        """Your agents: action list (lss), start (invokeservers) or stop idle ones (cleanup)."""
        return self.request(p.AGENTS, action=action)

    def details(self, ids=None, events=True):
        return self.request(p.DETAILS, ids=[int(i) for i in ids or []], events=events)["jobs"]

    def cancel(self, ids):
        return self.request(p.CANCEL, ids=[int(i) for i in ids])

    def hold(self, ids):
        return self.request(p.HOLD, ids=[int(i) for i in ids])

    def release(self, ids):
        return self.request(p.RELEASE, ids=[int(i) for i in ids])

    def admin(self, command, arg="", **fields):
        return self.request(p.ADMIN, command=command, arg=arg, **fields)

    def wait(self, ids, timeout=None, poll_s=0.02):
        """Block until every job has ended; returns their JSON forms. HQError TIMEOUT after
        `timeout` seconds."""
        ids = [int(i) for i in ids]
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining, finished = set(ids), {}
        while remaining:
            for job in self.details(sorted(remaining), events=False):
                if job["state"] in TERMINAL:
                    finished[job["id"]] = job
                    remaining.discard(job["id"])
            if not remaining:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise HQError(TIMEOUT, f"{len(remaining)} of {len(ids)} jobs still running "
                              f"after {timeout:g}s")
            time.sleep(poll_s)
            poll_s = min(1.0, poll_s * 1.5)
        return [finished[i] for i in ids]


def user_server_running(home):
    """True when a user-server holds the lock on $HQ_HOME/run/user-server.pid."""
    from hq.userserver import pid_path
    config.run_dir(home)
    try:
        handle = open(pid_path(home), "a+")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def ensure_user_server(home):
    """Start the user's hq-user-server (detached) unless one runs; wait for its socket."""
    from hq.userserver import socket_path
    if user_server_running(home) and os.path.exists(socket_path(home)):
        return
    log_dir = os.path.join(home, "log")
    os.makedirs(log_dir, exist_ok=True)
    env = dict(os.environ, HQ_HOME=home)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    with open(os.devnull, "rb") as null_in, \
            open(os.path.join(log_dir, "user-server.log"), "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hq.userserver"], stdin=null_in,
                                stdout=out, stderr=out, env=env, cwd="/",
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if os.path.exists(socket_path(home)) and user_server_running(home):
            return
        if proc.poll():     # it said why on its last log line (e.g. no server key)
            raise HQError(USER_SERVER_UNREACHABLE, "hq-user-server did not start: "
                          + _last_line(os.path.join(log_dir, "user-server.log")))
        time.sleep(0.01)
    raise HQError(USER_SERVER_UNREACHABLE, f"hq-user-server did not start within "
                  f"{START_TIMEOUT_S:g}s (see {os.path.join(log_dir, 'user-server.log')})")


def _last_line(path):
    try:
        with open(path, errors="replace") as handle:
            lines = handle.read().strip().splitlines()
    except OSError:
        return f"see {path}"
    return lines[-1] if lines else f"see {path}"
