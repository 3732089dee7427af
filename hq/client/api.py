"""The Python API of hq: `Client` talks to the user's hq-user-server (starting it on first
use), which forwards to hq-server. Every call has a deadline; errors raise HQError."""

import collections
import itertools
import json
import os
import time

from hq import protocol as p
from hq.client.fast import StreamConnection, ZmqConnection, home_dir
from hq.errors import BAD_REQUEST, USER_SERVER_UNREACHABLE, HQError
from hq.text import escape

TRANSPORTS = ("stream", "zmq")    # HQ_TRANSPORT: the plain socket (default) or ZeroMQ
REPLY_KINDS = frozenset({p.OK, p.ERROR}) | p.PUSHES
STATES_CHUNK = 10000  # ids per STATUS {ids} request
QUICK_S = 2.0         # a reply slower than this makes the client read its configured deadline
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # hq/x/y.py
START_TIMEOUT_S = 10.0
CHUNK = 5000          # jobs per SUBMIT message of a streamed submission ...
CHUNK_BYTES = 4 << 20 # ... and bytes of commands at most (see hq/client/cli/lines.py)
WINDOW = 2            # chunks in flight at once


class Client:
    """hq for Python scripts: `Client().submit("echo hi")` returns the job id."""

    def __init__(self, home=None, timeout=None, transport=None):
        self.home = os.path.abspath(home) if home else home_dir()
        self._timeout = timeout
        self._settings = None
        self.transport = transport or os.environ.get("HQ_TRANSPORT") or "stream"
        if self.transport not in TRANSPORTS:
            raise HQError(BAD_REQUEST, f"transport must be {' or '.join(TRANSPORTS)}, not "
                          f"{self.transport!r} (HQ_TRANSPORT)")
        self._ids = itertools.count(1)
        self._conn = None
        self._waiting = set()        # req ids sent and not yet answered
        self._replies = {}           # req id -> (kind, body) received, not yet taken
        self._pushes = []            # (kind, body) pushed by the user-server, not yet taken

    @property
    def settings(self):
        """etc/hq.cfg, read when first needed (a quick command never needs it)."""
        if self._settings is None:
            from hq import config
            self._settings = config.load_settings()
        return self._settings

    @property
    def timeout(self):
        return self._timeout or self.settings.request_timeout_s + 5

    # -- connection ----------------------------------------------------------------------
    def _connect(self):
        if self._conn is None:
            self._conn = connect(self.home, self.transport)
        return self._conn

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._waiting.clear()
        self._replies.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, kind, **body):
        """Send one request; the reply's fields, or HQError."""
        return self.receive(self.send(kind, **body))

    def send(self, kind, **body):
        """Send a request without waiting; returns its req id for `receive`."""
        req = next(self._ids)
        frames = encode_request(kind, {"req": req, **body})
        try:
            self._connect().send(frames)
        except OSError as exc:
            self.close()
            raise HQError(USER_SERVER_UNREACHABLE, f"lost hq-user-server: {exc}") from None
        self._waiting.add(req)
        return req

    def receive(self, req):
        """The reply to request `req` (replies to other outstanding requests, and pushes,
        are kept). The configured deadline is read only if the answer is slow to come."""
        started, deadline = time.monotonic(), None
        while req not in self._replies:
            if deadline is None and time.monotonic() - started >= QUICK_S:
                deadline = started + self.timeout
            limit = started + QUICK_S if deadline is None else deadline
            left = limit - time.monotonic()
            if deadline is not None and left <= 0:
                self.close()
                raise HQError(USER_SERVER_UNREACHABLE,
                              f"no answer from hq-user-server within {self.timeout:g}s "
                              f"(see {os.path.join(self.home, 'log', 'user-server.log')})")
            self._take(self._recv(max(0.0, left)))
        self._waiting.discard(req)
        kind, reply = self._replies.pop(req)
        if kind == p.ERROR:
            raise HQError(reply.get("code", "ERROR"), reply.get("message", "error"),
                          reply.get("index"))
        return reply

    def _recv(self, timeout):
        """The next message's frames (None after `timeout` seconds); HQError when the
        user-server has gone."""
        try:
            if self._conn is None:
                raise ConnectionError("the connection was closed")
            return self._conn.recv(timeout)
        except (ConnectionError, OSError) as exc:
            self.close()
            raise HQError(USER_SERVER_UNREACHABLE, f"lost hq-user-server: {exc} (see "
                          f"{os.path.join(self.home, 'log', 'user-server.log')})") from None

    def _take(self, frames):
        """File a received message: a reply to an outstanding request, or a push."""
        if frames is None:
            return
        kind, body = p.decode(frames, kinds=REPLY_KINDS)
        if kind in p.PUSHES:
            self._pushes.append((kind, body))
        elif body.get("req") in self._waiting:   # else: the late answer to an abandoned one
            self._replies[body["req"]] = (kind, body)

    def pushes(self, timeout):
        """Pushes (kind, body) from the user-server (after WATCH): those already here, else
        the first to come within `timeout` seconds (None: for ever); [] if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pushes:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            self._take(self._recv(left))
        pushes, self._pushes = self._pushes, []
        return pushes

    # -- jobs -----------------------------------------------------------------------------
    def submit(self, command, **options):
        """Submit one command; returns its job id once hq-server has committed it."""
        return self.submit_many([command], **options)[0]

    def submit_many(self, commands, hold=False, cwd=None, env=None, umask=None, **options):
        """Submit many commands with the same options as one batch; returns their ids in
        order. A command may also be a dict {"command": ..., "entry": ...} (HQ_ENTRY), and
        {"command": ..., "array_index": N} (HQ_ARRAY_INDEX). With `script=TEXT` every job runs
        TEXT as a batch script (its #! interpreter), with the shell words of its command
        after the first as arguments: `submit_many(["job.sh 'a b' c"], script=text)`."""
        ids = []
        for _, chunk_ids in self.submit_stream(chunked(commands, CHUNK), hold, cwd, env,
                                               umask=umask, **options):
            ids += chunk_ids
        return ids

    def submit_stream(self, chunks, hold=False, cwd=None, env=None, window=WINDOW, umask=None,
                      **options):
        """Submit an iterable of chunks (lists of commands) as one batch, keeping up to `window`
        chunks in flight. Yields (batch id, ids of the chunk) in order as each is committed.
        A refused chunk raises HQError with `.chunk` (its 0-based number) and `.index` (the
        refused job in it); chunks before it stay accepted, none after it is accepted.
        Jobs get `env` (default: this process's environment) and `umask` (default: this
        process's umask: the jobs create files as the submitting shell would)."""
        body = submission_body(self._defaults(options), hold, cwd, env, umask)
        in_flight, batch, sent, error = collections.deque(), None, 0, None
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                while in_flight and (batch is None or len(in_flight) >= window):
                    batch, ids = self._accepted(in_flight)
                    yield batch, ids
                in_flight.append((sent, self.send(p.SUBMIT, jobs=chunk, batch=batch, **body)))
                sent += 1
        except (HQError, OSError) as exc:   # a refused chunk, or bad input from `chunks`
            error = exc
        while in_flight:      # report what was accepted before a bad chunk
            yield self._accepted(in_flight)
        if error is not None:
            raise error

    def _accepted(self, in_flight):
        number, req = in_flight.popleft()
        try:
            reply = self.receive(req)
        except HQError as exc:
            exc.chunk = number
            for _, later in in_flight:     # refused by the server as the batch is stopped
                self._waiting.discard(later)
            in_flight.clear()
            raise
        return reply["batch"], reply["ids"]

    def _defaults(self, options):
        spec = {k: v for k, v in options.items() if v is not None}
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

    def status(self, batch=None):
        return self.request(p.STATUS, batch=batch)["counts"]

    def states(self, ids):
        """The state of each job, in one request per 10,000 ids: ({id: state}, [ids that
        hq-server does not know, or that are not yours])."""
        ids = [int(i) for i in ids]
        states, unknown = {}, []
        for start in range(0, len(ids), STATES_CHUNK):
            reply = self.request(p.STATUS, ids=ids[start:start + STATES_CHUNK])
            states.update((int(i), state) for i, state in reply["states"].items())
            unknown += reply["unknown"]
        return states, unknown

    def list(self, states=None, limit=0, batch=None):
        """Your jobs in id order: all of them, or the `limit` newest."""
        if isinstance(states, str):
            states = [states]
        return self.request_list(states=list(states or []), limit=limit, batch=batch)

    def request_list(self, **fields):
        """LIST with any of its fields (states, limit, batch, text), page after page: the
        server answers at most a page of jobs per request."""
        return sorted(self.pages(p.LIST, **fields), key=lambda job: job["id"])

    def pages(self, kind, **fields):
        """The jobs of a paged request (LIST, or ADMIN jobs), following the server's cursor
        until `limit` jobs (0: all) have come."""
        wanted = fields.get("limit") or 0
        got = 0
        while True:
            reply = self.request(kind, **fields)
            jobs = reply["jobs"][:wanted - got] if wanted else reply["jobs"]
            yield from jobs
            got += len(jobs)
            if not reply.get("more") or (wanted and got >= wanted):
                return
            fields.update(reply["next"])
            if wanted:
                fields["limit"] = wanted - got

    def agents(self, action="list"):
        """Your agents: action list (lss), start (invokeservers) or stop idle ones (cleanup)."""
        return self.request(p.AGENTS, action=action)

    def details(self, ids=None, events=True):
        return self.request(p.DETAILS, ids=[int(i) for i in ids or []], events=events)["jobs"]

    def cancel(self, ids=(), batch=None):
        """Cancel jobs by id, or every live job of a batch."""
        return self.request(p.CANCEL, ids=[int(i) for i in ids], batch=batch)

    def hold(self, ids):
        return self.request(p.HOLD, ids=[int(i) for i in ids])

    def release(self, ids):
        return self.request(p.RELEASE, ids=[int(i) for i in ids])

    def admin(self, command, arg="", **fields):
        if command == "jobs":       # paged, like LIST
            jobs = self.pages(p.ADMIN, command=command, arg=arg, **fields)
            return {"jobs": sorted(jobs, key=lambda job: job["id"])}
        return self.request(p.ADMIN, command=command, arg=arg, **fields)

    # -- waiting (hq.client.waiting: woken by the user-server's pushes) ---------------------
    def as_completed(self, ids, timeout=None, progress=None, poll_s=0.02):
        """Yield each job (its JSON form) as it ends, in the order they end. `progress`, if
        given, is called with counts by state after every look. HQError TIMEOUT after
        `timeout` seconds."""
        from hq.client.waiting import as_completed
        return as_completed(self, ids, timeout, progress, poll_s)

    def wait(self, ids, timeout=None, progress=None):
        """Block until every job has ended; returns their JSON forms in the order of `ids`."""
        ids = [int(i) for i in ids]
        finished = {job["id"]: job for job in self.as_completed(ids, timeout, progress)}
        return [finished[i] for i in ids]

    def wait_batch(self, batch, timeout=None, progress=None, poll_s=0.02):
        """Block until every job of a batch has ended; returns its counts by state."""
        from hq.client.waiting import wait_batch
        return wait_batch(self, batch, timeout, progress, poll_s)


def encode_request(kind, body):
    """The frames of a request; HQError BAD_REQUEST for what no hq process would accept
    (NaN or infinite numbers, text that is not valid Unicode, values JSON cannot hold)."""
    try:
        raw = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise HQError(BAD_REQUEST, f"cannot send this request: {exc}") from None
    if p.LONE_SURROGATE.search(raw) and p._has_lone_surrogate(body):
        raise HQError(BAD_REQUEST, "cannot send this request: it holds text that is not "
                      "valid Unicode (a lone surrogate)")
    return [p.TAG, kind, raw]


def submission_body(defaults, hold, cwd, env, umask):
    """The fields every chunk of a submission carries; BAD_REQUEST for a bad env or umask."""
    umask = current_umask() if umask is None else umask
    if not isinstance(umask, int) or isinstance(umask, bool) or not 0 <= umask <= 0o777:
        raise HQError(BAD_REQUEST, f"umask must be a number from 0 to 0o777, not {umask!r}")
    return {"defaults": defaults, "hold": bool(hold), "cwd": os.path.abspath(cwd or os.getcwd()),
            "env": checked_env(os.environ if env is None else env), "umask": umask}


def checked_env(env):
    """A copy of `env` if it maps names to values that a job's environment can hold (strings
    of UTF-8 text without NUL, names without '='); else HQError BAD_REQUEST naming the entry."""
    try:
        items = list(env.items())
    except AttributeError:
        raise HQError(BAD_REQUEST, "env must be a mapping of names to values") from None
    for name, value in items:
        shown = escape(repr(name)[:60])
        if not isinstance(name, str) or not isinstance(value, str):
            raise HQError(BAD_REQUEST, f"env {shown}: names and values must be strings")
        if not name or "=" in name or "\0" in name:
            raise HQError(BAD_REQUEST, f"env {shown}: a name must be non-empty, without '=' "
                          "or NUL")
        if "\0" in value:
            raise HQError(BAD_REQUEST, f"env {shown}: the value contains a NUL character")
        try:
            name.encode()
            value.encode()
        except UnicodeEncodeError:
            raise HQError(BAD_REQUEST, f"env {shown}: not valid UTF-8 text") from None
    return dict(items)


def current_umask():
    """This process's umask, read without changing it (Linux); else by setting it back."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)
    os.umask(old)
    return old


def chunked(items, size, max_bytes=CHUNK_BYTES):
    """Lists of up to `size` items from an iterable (for streaming submissions), each with
    at most `max_bytes` of command text (or a single longer command)."""
    chunk, volume = [], 0
    for item in items:
        length = len(item["command"] if isinstance(item, dict) else item)
        if chunk and volume + length > max_bytes:
            yield chunk
            chunk, volume = [], 0
        chunk.append(item)
        volume += length
        if len(chunk) >= size:
            yield chunk
            chunk, volume = [], 0
    if chunk:
        yield chunk


def connect(home, transport):
    """A connection to the user's user-server (started if none runs): the stream socket, or
    ZeroMQ when asked or when the running user-server has no stream socket (an older one)."""
    if transport == "stream":
        try:
            return StreamConnection(home)
        except OSError:
            pass
    ensure_user_server(home)
    if transport == "stream":
        try:
            return StreamConnection(home)
        except OSError:
            pass
    return ZmqConnection(home)


def user_server_running(home):
    """True when a user-server holds the lock on $HQ_HOME/run/user-server.pid."""
    import fcntl
    from hq.paths import pid_path
    try:                # no run/ (or no way in): no user-server
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
    from hq.paths import socket_path
    if os.path.exists(socket_path(home)) and user_server_running(home):
        return
    from hq.private import open_private, private_home   # here: the common case needs neither
    log_dir = os.path.join(private_home(home), "log")
    env = dict(os.environ, HQ_HOME=home)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    import sys
    import subprocess    # here: a CLI that finds its user-server running starts faster
    with open(os.devnull, "rb") as null_in, \
            open_private(os.path.join(log_dir, "user-server.log")) as out:
        proc = subprocess.Popen([sys.executable, "-m", "hq.user.server"], stdin=null_in,
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
