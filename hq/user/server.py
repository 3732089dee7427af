"""hq-user-server: one per user per submit host. Listens on ipc:// in the user's private
$HQ_HOME/run/, forwards requests to hq-server, starts the user's agents when asked.

Usage:
  hq-user-server [--idle=S] [--log-level=LEVEL]
  hq-user-server (-h | --help)

Options:
  --idle=S           Exit after this many seconds without requests (default: etc/hq.cfg).
  --log-level=LEVEL  DEBUG, INFO, WARNING or ERROR [default: INFO].
"""

import errno
import fcntl
import logging
import os
import re
import signal
import sys
import time

import zmq

from hq import config, logs, protocol as p, security, text
from hq.user import launch
from hq.user.streams import Streams
from hq.errors import NOT_ACTIVE, PERMISSION_DENIED, SERVER_UNREACHABLE, TOO_LARGE, HQError
from hq.paths import pid_path, socket_path

log = logging.getLogger("hq.user-server")

HELLO_EVERY_S = 10.0
ROTATE_S = 1.0            # several server addresses: not connected for this long, try the next
MAX_LEASE_S = 3600.0      # longest a ZeroMQ client's WATCH lasts without renewal
READ_KINDS = {p.STATUS, p.LIST, p.DETAILS, p.PING, p.AGENTS}     # no answer: nothing changed


class UserServer:
    def __init__(self, settings, home, idle_s):
        self.settings = settings
        self.home = home
        self.idle_s = idle_s
        self.user = config.current_user()
        self.addresses = settings.server_addresses     # an active server and its standbys
        self.server_address = self.addresses[0]
        self.backend_since = 0.0
        # CURVE: (server public, our public, our secret)
        self.server_key = (security.server_public_key(settings, home),
                           *security.ensure_keypair(home, security.USER_CERT))
        self.streams = Streams(home, settings.max_message_bytes + 64)   # first: clients that
        self.watchers = {}      # identity -> until when it gets pushes (a stream: its life)
        self.context = zmq.Context.instance()                               # find it may talk
        self.frontend = self.context.socket(zmq.ROUTER)
        self.frontend.setsockopt(zmq.LINGER, 0)
        path = socket_path(home)
        if os.path.exists(path):
            os.unlink(path)   # stale: we hold the pidfile lock, so nobody else serves it
        self.frontend.bind(f"ipc://{path}")
        os.chmod(path, 0o600)
        self.backend = None
        self.monitor = None     # handshake events of the backend: tells a refused key apart
        self.key_refused = False
        self.waiting = []       # (deadline, client identity, client req, kind, body) not yet sent
        self.in_flight = {}     # our req -> (deadline, identity, client req, kind, body, ...)
        self.counter = 0
        self.remote = launch.RemoteStarter(settings)
        self.last_request = time.time()
        self.next_hello = 0.0
        self.running = True
        self.hello_then_recheck = False
        self.reset_backend()

    def reset_backend(self, rotate=False):
        """Lazy Pirate: a fresh socket drops whatever the old one still queued; with `rotate`
        (no answer, or NOT_ACTIVE) it connects to the next of several server addresses."""
        self.lost_in_flight()
        if rotate and len(self.addresses) > 1:
            self.server_address = self.addresses[
                (self.addresses.index(self.server_address) + 1) % len(self.addresses)]
            log.info("trying hq-server at %s", self.server_address)
        if self.backend is not None:
            self.backend.disable_monitor()
            self.monitor.close(linger=0)
            self.backend.close(linger=0)
        self.backend = self.context.socket(zmq.DEALER)
        self.monitor = self.backend.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_DISCONNECTED)
        # Not ZMQ_IMMEDIATE: with it, libzmq drops replies still unread when the peer
        # disconnects (e.g. the answer to 'shutdown'). Sending is gated on `connected` instead.
        self.connected = False
        self.backend.setsockopt(zmq.LINGER, 0)
        if len(self.addresses) > 1:     # a crashed server's host sends no reset: notice it
            self.backend.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            self.backend.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        if self.server_key:
            security.make_client_socket(self.backend, *self.server_key)
        self.backend.connect(self.server_address)
        self.backend_since = time.time()
        self.next_hello = 0.0

    # -- loop --------------------------------------------------------------------------------
    def serve_forever(self):
        while self.running:
            poller = zmq.Poller()
            poller.register(self.frontend, zmq.POLLIN)
            poller.register(self.backend, zmq.POLLIN)
            poller.register(self.monitor, zmq.POLLIN)
            for fd, writing in self.streams.fds():
                poller.register(fd, zmq.POLLIN | (zmq.POLLOUT if writing else 0))
            ready = dict(poller.poll(self.poll_ms()))
            now = time.time()
            if self.monitor in ready:
                self.handshake_events()
            if self.frontend in ready:
                self.from_clients(now)
            self.from_streams(ready, now)
            for identity in self.streams.stalled():
                self.watchers.pop(identity, None)
            if self.backend in ready:
                self.from_server()
            if now >= self.next_hello:      # before requests: the server learns who we are
                sent = self.forward_raw(p.HELLO, {"req": "hello", "user": self.user})
                self.next_hello = now + (HELLO_EVERY_S if sent else 0.2)
                if sent and self.hello_then_recheck:    # ends missed while the link was down
                    self.hello_then_recheck = False     # are seen by the clients' next look,
                    self.push(p.RECHECK, {})            # which the server reads after HELLO
            self.send_waiting(now)
            self.expire(now)
            if not self.connected and len(self.addresses) > 1 and \
                    now - self.backend_since > ROTATE_S:
                self.reset_backend(rotate=True)
            self.reap_children()
            self.remote_outcomes()
            self.expire_watchers(now)
            if not self.in_flight and not self.waiting and not self.watchers and \
                    now - self.last_request > self.idle_s:
                log.info("idle for %.0fs: exiting", now - self.last_request)
                self.running = False

    def poll_ms(self):
        return 20 if self.waiting or not self.next_hello else 200

    def from_clients(self, now):
        while True:
            try:
                frames = self.frontend.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.client_message(frames[0], frames[1:], now)

    def from_streams(self, ready, now):
        for fd, _ in self.streams.fds():
            events = ready.get(fd, 0)
            if not events:
                continue
            messages, closed = self.streams.ready(fd, events & zmq.POLLIN, events & zmq.POLLOUT)
            for identity in closed:
                self.watchers.pop(identity, None)
            for identity, frames in messages:
                if frames is None:
                    self.to_client(identity, p.error(None, TOO_LARGE, "message too large"))
                    self.streams.drop(self.streams.by_identity[identity])
                    self.watchers.pop(identity, None)
                    break
                self.client_message(identity, frames, now)

    def client_message(self, identity, frames, now):
        """A request of a client (ZeroMQ or stream): queued for hq-server, or WATCH."""
        self.last_request = now
        try:
            kind, body = p.decode(frames, kinds=p.USER_SERVER_KINDS,
                                  max_body=self.settings.max_message_bytes)
        except HQError as exc:    # answered with the req id, or the client waits in vain
            self.to_client(identity, p.error(request_id(frames), exc.code, exc.message))
            return
        if kind == p.WATCH:
            self.watch(identity, body, now)
            return
        body["user"] = self.user
        deadline = now + self.settings.connect_timeout_s * len(self.addresses)
        self.waiting.append((deadline, identity, body.get("req"), kind, body))
        if self.key_refused:    # zmq does not retry a refused key: try again (registered?)
            self.key_refused = False
            self.reset_backend()

    def to_client(self, identity, frames):
        if isinstance(identity, tuple):
            self.streams.send(identity, frames)
        else:
            self.frontend.send_multipart([identity, *frames])

    # -- pushes: ENDED from hq-server to the clients that WATCH -------------------------------
    def watch(self, identity, body, now):
        """A client waits for jobs: it gets every ENDED of this user, and RECHECK."""
        lease = body.get("lease_s")
        if isinstance(identity, tuple):
            until = float("inf")
        elif p.is_number(lease) and 0 < lease:
            until = now + min(float(lease), MAX_LEASE_S)
        else:
            until = now + MAX_LEASE_S
        self.watchers[identity] = until
        self.to_client(identity, p.ok(body.get("req"), watching=True))

    def push(self, kind, body):
        frames = p.encode(kind, body)
        for identity in list(self.watchers):
            self.to_client(identity, frames)

    def expire_watchers(self, now):
        for identity in [i for i, until in self.watchers.items() if until <= now]:
            del self.watchers[identity]

    def send_waiting(self, now):
        still = []
        for deadline, identity, client_req, kind, body in self.waiting:
            self.counter += 1
            req = self.counter
            if self.forward_raw(kind, dict(body, req=req)):
                self.in_flight[req] = (now + self.settings.request_timeout_s, identity,
                                       client_req, kind, body, deadline)
            elif now >= deadline:
                self.reply_error(identity, client_req, self.unreachable("cannot connect to"))
            else:
                still.append((deadline, identity, client_req, kind, body))
        self.waiting = still

    def forward_raw(self, kind, body):
        if not self.connected:
            return False
        try:
            self.backend.send_multipart(p.encode(kind, body), zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def from_server(self):
        while True:
            try:
                frames = self.backend.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                kind, body = p.decode(frames, kinds={p.OK, p.ERROR, p.SPAWN, p.ENDED})
            except HQError as exc:
                log.warning("bad message from server: %s", exc)
                continue
            if kind == p.SPAWN:
                self.spawn(body)
                continue
            if kind == p.ENDED:
                self.push(p.ENDED, body)
                continue
            entry = self.in_flight.pop(body.get("req"), None)
            if kind == p.ERROR and body.get("code") == NOT_ACTIVE:
                self.not_active(entry)
                return
            if entry is None:
                continue     # hello replies, or answers that came after their deadline
            _, identity, client_req = entry[:3]
            body["req"] = client_req
            self.to_client(identity, p.encode(kind, body))

    def lost_in_flight(self):
        """Requests sent on a socket being replaced get no answer any more: they are told at
        once (not resent: the server may have carried them out before it went silent)."""
        lost, self.in_flight = self.in_flight, {}
        for _, identity, client_req, *_ in lost.values():
            self.reply_error(identity, client_req, f"lost the connection to hq-server at "
                             f"{self.server_address} before its answer: the request may or may "
                             "not have been carried out (look before doing it again)")

    def not_active(self, entry):
        """A standby answered: it did nothing with the request, which goes again (to the next
        address). Requests still in flight on this socket are not resent: they may have
        reached a server that had become active, so they get an error when they expire."""
        if entry is not None:
            _, identity, client_req, kind, body, deadline = entry
            self.waiting.append((max(deadline, time.time() + self.settings.connect_timeout_s),
                                 identity, client_req, kind, body))
        log.info("hq-server at %s is a standby", self.server_address)
        self.reset_backend(rotate=True)

    def handshake_events(self):
        while True:
            try:
                event = monitor_event(self.monitor)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self.connected = False
                continue
            self.connected = event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
            if self.connected:      # a (restarted) server learns at once where we are
                self.next_hello = 0.0
                self.hello_then_recheck = True
            refused = event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            if refused and not self.key_refused:
                log.error("hq-server refused our key %s", self.key_file())
            self.key_refused = refused

    def key_file(self):
        return security.cert_paths(self.home, security.USER_CERT)[0]

    def expire(self, now):
        late = [req for req, entry in self.in_flight.items() if now >= entry[0]]
        if not late:
            return
        for req in late:
            _, identity, client_req, kind = self.in_flight.pop(req)[:4]
            message = self.unreachable(f"no answer within {self.settings.request_timeout_s:g}s "
                                       "from")
            if kind not in READ_KINDS:      # it may have been recorded all the same
                message = (f"no answer within {self.settings.request_timeout_s:g}s from "
                           f"hq-server at {self.server_address}: the {kind.decode().lower()} "
                           "may still be recorded; look ('hq-client list') before trying "
                           "again")
            self.reply_error(identity, client_req, message)
        self.reset_backend(rotate=True)

    def unreachable(self, what):
        return (f"{what} hq-server at {self.server_address}; is it running? "
                "Start it with 'make run' or 'hq-server'")

    def reply_error(self, identity, client_req, message):
        code = SERVER_UNREACHABLE
        if self.key_refused:
            code = PERMISSION_DENIED
            message = (f"hq-server at {self.server_address} refused the key of {self.user} "
                       f"({self.key_file()}); send that file (it is public) to an hq admin, "
                       f"who registers it with 'hq-admin adduser {self.user} --key=FILE'")
        log.warning("%s", message)
        self.to_client(identity, p.error(client_req, code, message))

    def spawn(self, body):
        for host in body.get("hosts", []):
            if not isinstance(host, dict):
                continue
            name, address = str(host.get("name")), str(host.get("address") or host.get("name"))
            try:
                outcome = self.start_agent(name, address)
            except (OSError, HQError) as exc:
                outcome = f"cannot start agent on {name}: {exc}"
            log.info("%s", outcome)

    def start_agent(self, name, address):
        server_key = self.server_key[0].decode() if self.server_key else ""
        s = self.settings
        if config.is_local_address(address):
            return launch.start_agent(self.home, name, ",".join(self.addresses), self.user,
                                      s.heartbeat_s, s.agent_orphan_s, server_key, s.agent_idle_s)
        command = launch.remote_script(self.home, name, ",".join(self.addresses), self.user,
                                       s.heartbeat_s, s.agent_orphan_s, server_key,
                                       s.ssh_python or None, s.agent_idle_s)
        if self.remote.request(name, address, command):
            return f"starting agent on {name} ({address}) over ssh"
        return f"agent on {name}: an ssh try is under way or the host is backing off"

    def remote_outcomes(self):
        """Log finished ssh tries; tell hq-server why a host could not be reached."""
        for name, ok, outcome in self.remote.finished():
            if ok:
                log.info("%s", outcome)
                continue
            log.warning("%s", outcome)
            self.forward_raw(p.UNREACHABLE, {"req": "unreachable", "user": self.user,
                                             "host": name, "reason": outcome})

    def reap_children(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def close(self):
        self.streams.close()
        self.remote.close()
        self.monitor.close(linger=0)
        self.frontend.close(linger=0)
        self.backend.close(linger=0)
        try:
            os.unlink(socket_path(self.home))
        except OSError:
            pass


def monitor_event(monitor):
    """The next event of a socket monitor, as zmq.utils.monitor.recv_monitor_message gives it
    (that module imports asyncio: a tenth of a second of the user-server's start)."""
    import struct
    frames = monitor.recv_multipart(zmq.NOBLOCK)
    event, value = struct.unpack("=hi", frames[0][:6])
    return {"event": event, "value": value, "endpoint": frames[1]}


REQ_AT_START = re.compile(rb'\{\s*"req"\s*:\s*(-?\d{1,18})\s*[,}]')


def request_id(frames):
    """The req id of a message that cannot be decoded (bad JSON, NaN, too large...), read
    from the start of its body where hq.Client puts it; None if it is not there."""
    if len(frames) != 3:
        return None
    match = REQ_AT_START.match(bytes(frames[2][:64]))
    return int(match.group(1)) if match else None


def take_lock(home):
    """An exclusive lock on the pidfile, held for life; None if another user-server has it."""
    config.run_dir(home)
    handle = open(pid_path(home), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        from docopt import docopt
        args = docopt(__doc__, argv=argv)
    else:           # as clients start it: no docopt to import
        args = {"--idle": None, "--log-level": "INFO"}
    from hq.proctitle import set_title
    set_title(f"hq-user-server {config.current_user()}")
    home = config.home_dir()
    logs.setup(args["--log-level"])
    security.private_home(home)
    lock = take_lock(home)
    if lock is None:
        log.info("another hq-user-server serves %s: exiting", home)
        return 0
    try:
        settings = config.load_settings()
        idle = float(args["--idle"]) if args["--idle"] else settings.user_server_idle_s
        server = UserServer(settings, home, idle)
    except (HQError, ValueError, zmq.ZMQError) as exc:
        print(f"hq-user-server: {text.escape(str(exc))}", file=sys.stderr)
        return 1

    def stop(signum, frame):
        server.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("user-server of %s (pid %s) serving %s, forwarding to %s", server.user,
             os.getpid(), socket_path(home), server.server_address)
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
