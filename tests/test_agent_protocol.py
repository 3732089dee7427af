"""A real agent process driven by a small ROUTER socket that plays hq-server (real ZeroMQ):
REGISTER replies, RUN, KILL, acknowledged EVENTS, exactly as the tests need them."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from agents.jobfiles import read_journal
from hq import protocol as p
from tests.helpers import REPO, free_port, holds_for, kill_pid, unavailable, wait_until


NO_FIELDS = types.MappingProxyType({})


class PlayServer:
    """Binds a ROUTER; start_agent() runs `python -m agents.exec_server` against it.
    `pump()` reads what the agent sent: heartbeats and BYE are answered, EVENTS are kept in
    `events` (acknowledged while `ack` is true), REGISTER bodies in `registers` (answered
    with `register_reply` unless it is None; answer_register() answers by hand)."""

    def __init__(self, home, register_reply=NO_FIELDS, log_file=None):
        self.home = str(home)
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.port = free_port()
        self.socket.bind(f"tcp://127.0.0.1:{self.port}")
        self.register_reply = register_reply
        self.heartbeat_reply = {}       # fields of every heartbeat's answer
        self.identity = None
        self.registers, self.events, self.heartbeats = [], [], []
        self.reports = []               # seq of each EVENTS, resent ones too
        self.ack = True
        self.answering = True           # heartbeats answered (False: a server far behind)
        self.numbered = False           # REGISTER and HEARTBEAT answers repeat `n`
        self.agent = None
        self.log_file = str(log_file or os.path.join(self.home, "agent.log"))

    def start_agent(self, *args, host="hostA", heartbeat=0.5, env=None, log_level="DEBUG"):
        environ = dict(os.environ, HQ_HOME=self.home, PYTHONPATH=REPO, **(env or {}))
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agents.exec_server", f"--server=tcp://127.0.0.1:{self.port}",
             f"--host-name={host}", f"--heartbeat={heartbeat}", f"--log-level={log_level}",
             f"--log-file={self.log_file}", *args],
            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        return self.agent

    def log(self):
        try:
            with open(self.log_file) as handle:
                return handle.read()
        except OSError:
            return ""

    def pump(self, timeout=0.05):
        """Handle every message that arrives within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if not self.socket.poll(max(0, int(left * 1000))):
                return
            identity, *frames = self.socket.recv_multipart()
            kind, body = p.decode(frames)
            self.identity = identity
            if kind == p.REGISTER:
                self.registers.append(body)
                if self.register_reply is not None:
                    self.send(p.OK, {"req": body["req"], **self.register_reply,
                                     **(p.request_number(body) if self.numbered else {})})
            elif kind == p.HEARTBEAT:
                self.heartbeats.append(body)
                if self.answering:
                    self.send(p.OK, {"req": body["req"], **self.heartbeat_reply,
                                     **(p.request_number(body) if self.numbered else {})})
            elif kind == p.EVENTS:
                self.reports.append(body["seq"])
                self.events.extend(body["events"])
                if self.ack:
                    self.send(p.OK, {"req": "events", "seq": body["seq"]})
            elif kind == p.BYE:
                self.send(p.OK, {"req": "bye", "bye": False})

    def pump_into(self, seen):
        """Read without answering: (kind, body) of what came, appended to `seen`."""
        while self.socket.poll(20):
            self.identity, *frames = self.socket.recv_multipart()
            seen.append(p.decode(frames))
        return False

    def answer_register(self, **reply):
        self.send(p.OK, {"req": "register", **reply})

    def send(self, kind, body):
        self.socket.send_multipart([self.identity, *p.encode(kind, body)])

    def wait(self, condition, timeout=20, message="condition"):
        """Pump messages until `condition()` is true."""
        def check():
            self.pump(0.02)
            return condition()
        return wait_until(check, timeout, 0, message)

    def registered(self, count=1, timeout=20):
        self.wait(lambda: len(self.registers) >= count, timeout, f"{count} REGISTER")
        return self.registers[count - 1]

    def run(self, specs, env=None, slots=2, **extra):
        batches = {str(s.get("batch", 1)): env or {"PATH": os.environ["PATH"]} for s in specs}
        self.send(p.RUN, {"jobs": specs, "envs": batches, "slots": slots, **extra})

    def kill(self, pairs):
        self.send(p.KILL, {"jobs": [list(pair) for pair in pairs]})

    def finished(self, job_id, attempt=1):
        return [e for e in self.events if e["type"] == "finished"
                and (e["job"], e["attempt"]) == (job_id, attempt)]

    def wait_finished(self, job_id, attempt=1, timeout=20):
        self.wait(lambda: self.finished(job_id, attempt), timeout,
                  f"job {job_id} attempt {attempt} to be reported finished")
        return self.finished(job_id, attempt)[0]

    def close(self):
        if self.agent is not None and self.agent.poll() is None:
            kill_pid(self.agent.pid)
            self.agent.wait()
        self.socket.close(linger=0)


def bound(socket, port):
    """Bind `socket` to the port a closed socket held (libzmq frees it a moment later)."""
    try:
        socket.bind(f"tcp://127.0.0.1:{port}")
        return True
    except zmq.ZMQError:
        return False


def job_spec(tmp_path, job_id, command, attempt=1, **extra):
    out = os.path.join(str(tmp_path), "out", f"{job_id}.{attempt}")
    return {"id": job_id, "attempt": attempt, "command": command, "shell": "/bin/sh",
            "cwd": str(tmp_path), "stdout": out + ".out", "stderr": out + ".err",
            "logfile": "", "cores": 1, "time_limit": 0, "batch": 1, "name": "t",
            "host": "hostA", "entry": "", **extra}


@contextlib.contextmanager
def small_tmpfs(path, size="1m", options=""):
    """A tmpfs of `size` mounted at `path` (made) for the `with` body, unmounted after. Needs
    root: skipped with a printed reason elsewhere, but under CI=true it must run."""
    if os.geteuid() != 0:
        reason = "needs root to mount a small tmpfs"
        unavailable(reason, "this test")
    os.makedirs(path, exist_ok=True)
    opts = f"size={size}" + (f",{options}" if options else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path}: {done.stderr.strip()}", pytrace=False)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory):
    """Fill the file system of `directory` to the last byte (its file `filler`)."""
    fd = os.open(os.path.join(str(directory), "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (b"x" * 65536, b"x" * 512, b"x"):
            try:
                while os.write(fd, chunk):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def journal_lines(home, host="hostA"):
    with open(os.path.join(str(home), "run", f"jobs-{host}", "journal")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_agent_runs_a_job_for_a_played_server(tmp_path):
    """The driver itself: an agent registers, runs a job from RUN, reports it once."""
    server = PlayServer(tmp_path)
    try:
        server.start_agent()
        server.registered()
        server.run([job_spec(tmp_path, 1, "echo hello")])
        event = server.wait_finished(1)
        assert event["exit_code"] == 0 and event.get("error") is None
        assert (tmp_path / "out" / "1.1.out").read_text() == "hello\n"
        assert server.agent.poll() is None
    finally:
        server.close()


def stop_agent(server, sig=signal.SIGKILL):
    server.agent.send_signal(sig)
    server.agent.wait(10)


def test_an_agent_heartbeats_as_often_as_the_server_tells_it_and_says_so(tmp_path):
    """Catches an agent that ignores the interval in HEARTBEAT replies (a host's other users'
    agents heartbeat less often than its reporter) or does not declare the interval it keeps
    (the server counts it gone after 3 of them)."""
    server = PlayServer(tmp_path, register_reply={"heartbeat_s": 0.1})
    server.heartbeat_reply = {"every": 0.4}
    try:
        server.start_agent(heartbeat=0.1, log_level="INFO")
        server.registered()
        server.wait(lambda: len(server.heartbeats) >= 2, 10, "heartbeats")
        count, start = len(server.heartbeats), time.monotonic()
        server.wait(lambda: len(server.heartbeats) >= count + 4, 10, "4 more heartbeats")
        assert time.monotonic() - start >= 3 * 0.4
        assert server.heartbeats[-1]["every"] == 0.4
    finally:
        server.close()


def test_a_silent_server_is_asked_again_on_the_same_connection(tmp_path):
    """Catches an agent that opens a new connection each time the server is silent: after a
    restart 10,000 agents did, and each new connection cost the server a CURVE handshake and
    dropped what was queued on the old one. The REGISTER is sent again on the same one, and
    no heartbeat goes while it is unanswered."""
    server = PlayServer(tmp_path, register_reply=None)
    monitor = server.socket.get_monitor_socket(zmq.EVENT_ACCEPTED)
    try:
        server.start_agent(heartbeat=0.2)
        server.registered(3, timeout=15)
        accepted = 0
        while monitor.poll(100):
            accepted += 1
            recv_monitor_message(monitor)
        assert accepted == 1, f"{accepted} connections for 3 REGISTERs"
        assert server.heartbeats == []
        assert len({r["n"] for r in server.registers}) == 3, "REGISTERs not numbered apart"
        server.answer_register(heartbeat_s=0.2)
        server.wait(lambda: len(server.heartbeats) >= 2, 10, "heartbeats once answered")
    finally:
        server.socket.disable_monitor()
        monitor.close(linger=0)
        server.close()


def test_a_connection_that_comes_back_carries_a_register_first(tmp_path):
    """Catches an agent whose heartbeats and reports, queued while its server was away (a
    restart), reach the new server before its REGISTER: each is refused (UNKNOWN_AGENT), and
    with 10,000 agents the REGISTERs waited behind some 25,000 refusals. Once the connection
    is back the first message on it is a REGISTER, and nothing else goes until it is answered."""
    server = PlayServer(tmp_path)
    try:
        server.start_agent(heartbeat=0.2)
        server.registered()
        server.run([job_spec(tmp_path, 1, "sleep 1.5")])
        server.wait(lambda: server.events, 10, "job 1 to start")
        server.socket.close(linger=0)               # the server goes away for 1.5 s
        holds_for(1.5, lambda: server.agent.poll() is None, "the agent exited")
        server.socket = server.context.socket(zmq.ROUTER)
        server.socket.setsockopt(zmq.LINGER, 0)
        server.socket.bind(f"tcp://127.0.0.1:{server.port}")
        server.register_reply, seen = None, []
        wait_until(lambda: server.pump_into(seen) or any(k == p.REGISTER for k, _ in seen),
                   10, 0, "a REGISTER on the new connection")     # (wait() would pump them)
        assert seen[0][0] == p.REGISTER, [k for k, _ in seen]
        assert seen[0][1]["running"] == [[1, 1]] or seen[0][1]["reported"] == [[1, 1]]
        holds_for(1.0, lambda: server.pump_into(seen) or all(k == p.REGISTER for k, _ in seen),
                  "sent before REGISTER's answer")
        server.register_reply = {}
        server.answer_register()
        server.wait_finished(1)
        assert "connection to" in server.log() and "registering again" in server.log()
    finally:
        server.close()


def test_an_agent_with_lease_to_spare_comes_back_later_and_keeps_its_jobs(tmp_path):
    """Catches an agent that gives no way after a server restart (the agents whose leases end
    first must get in first: see Lease.relink_delay), one that stays away past its lease, and
    one that kills its jobs while it waits: its lease holds them."""
    server = PlayServer(tmp_path, register_reply={"lease_s": 2})
    server.heartbeat_reply = {"lease_s": 8}         # a slow heartbeater's longer lease
    try:
        server.start_agent(heartbeat=0.2)
        server.registered()
        server.run([job_spec(tmp_path, 1, "sleep 7")])
        server.wait(lambda: server.events and len(server.heartbeats) >= 2, 10, "job 1 to start")
        server.socket.close(linger=0)               # the server restarts at once
        lost = time.monotonic()
        server.socket = server.context.socket(zmq.ROUTER)
        server.socket.setsockopt(zmq.LINGER, 0)
        wait_until(lambda: bound(server.socket, server.port), 5, 0.01, "the port free again")
        server.wait(lambda: len(server.registers) >= 2, 15, "the REGISTER on the new connection")
        back = time.monotonic() - lost              # surplus: about 8 - 0.2 - 2 = 5.8 s
        assert 2.5 <= back <= 6.5, back
        assert server.registers[1]["running"] == [[1, 1]]
        assert server.wait_finished(1)["exit_code"] == 0
        assert "again in" in server.log() and "fenced" not in server.log()
    finally:
        server.close()


def test_one_report_is_in_flight_until_acknowledged_or_the_server_says_it_cannot_record(
        tmp_path):
    """Catches an agent that sends a report every 5 ms to a server behind (queued at its
    connection, its heartbeats behind them went unanswered past the lease: 1,759 to 85,000
    jobs fenced with 10,000 agents on MySQL), and one that keeps waiting for an
    acknowledgement the server cannot give while its commits fail (it then never hears of
    jobs' ends, and a released job found no free slot)."""
    server = PlayServer(tmp_path)
    server.numbered, server.ack = True, False
    try:
        server.start_agent(heartbeat=0.5)
        server.registered()
        server.run([job_spec(tmp_path, 1, "true")])
        server.wait(lambda: any(e["type"] == "started" for e in server.events), 10,
                    "job 1's start")
        server.wait(lambda: "job 1 attempt 1 ended" in server.log(), 10, "job 1 to end")
        holds_for(1.5, lambda: server.pump(0.05) or not server.finished(1),
                  "a second report sent while the first was unacknowledged")
        server.send(p.OK, {"req": "unrecorded"})        # read, but its commit failed
        server.wait(lambda: server.finished(1), 5, "job 1's end reported without an ack")
        server.ack = True
        for seq in server.reports:
            server.send(p.OK, {"req": "events", "seq": seq})
        server.run([job_spec(tmp_path, 2, "true")])
        server.wait(lambda: server.finished(2), 10, "job 2's end")
    finally:
        server.close()


def test_reports_go_again_once_a_later_request_is_answered_not_to_a_server_only_behind(
        tmp_path):
    """Catches an agent resending unacknowledged reports every 5 s to a server that is only
    behind (10,000 agents' copies grew its backlog until no heartbeat was answered within the
    lease), and one that never resends reports whose answer was lost: once the server answers
    a heartbeat sent after them, they go again."""
    server = PlayServer(tmp_path)
    server.numbered, server.ack = True, False
    try:
        server.start_agent(heartbeat=2.5)
        server.registered()
        server.run([job_spec(tmp_path, 1, "true")])

        def started():
            return [e for e in server.events if e["type"] == "started" and e["job"] == 1]
        server.wait(started, 10, "the started report")
        server.answering = False                    # far behind: nothing answered for 6 s
        seen_at = time.monotonic()
        holds_for(6, lambda: server.pump(0.05) or len(started()) == 1,
                  "the report sent again to a server only behind")
        assert len(server.finished(1)) <= 1         # (with it, or waiting for its answer)
        server.answering = server.ack = True        # it answers a heartbeat sent after it
        server.wait(lambda: len(started()) == 2, 10, "the report sent again")
        server.wait_finished(1)
        assert time.monotonic() - seen_at >= 6 and len(server.registers) == 1
        journal = os.path.join(str(tmp_path), "run", "jobs-hostA", "journal")
        server.wait(lambda: list(read_journal(journal)) == [], 10,
                    "the acknowledged report's job forgotten")
    finally:
        server.close()
