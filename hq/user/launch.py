"""Starts a user's hq-exec-server on a host: a detached local process for this machine, or
over ssh (paramiko, in worker threads) for other hosts. Every value passed on is quoted."""

import logging
import os
import shlex
import socket
import subprocess
import sys
import time
import queue
import threading
from concurrent.futures import Future

from hq.config import split_address
from hq.security import open_private, private_home

log = logging.getLogger("hq.user.launch")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # hq/x/y.py


def agent_pidfile(home, host_name):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in host_name)
    return os.path.join(home, "run", f"agent-{safe}.pid")


def agent_alive(home, host_name):
    pid = read_pid(agent_pidfile(home, host_name))
    return pid is not None and pid_alive(pid)


def read_pid(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def agent_command(server, host_name, user, heartbeat_s, orphan_s, log_file, pidfile,
                  server_key="", key_file="", python=None, idle_s=0):
    command = [python or sys.executable, "-m", "agents.exec_server", f"--server={server}",
               f"--host-name={host_name}", f"--user={user}", f"--heartbeat={heartbeat_s}",
               f"--orphan={orphan_s}", f"--idle={idle_s}", f"--log-file={log_file}",
               f"--pidfile={pidfile}"]
    if server_key:   # public: fine on a command line; the secret stays in the key file
        command += [f"--server-key={server_key}", f"--key-file={key_file}"]
    return command


def agent_files(home, host_name):
    """(log file, pidfile, key file) of the user's agent for `host_name`, under HQ_HOME."""
    pidfile = agent_pidfile(home, host_name)
    name = os.path.basename(pidfile)[len("agent-"):-len(".pid")]
    return (os.path.join(home, "log", f"agent-{name}.log"), pidfile,
            os.path.join(home, "keys", "user.key_secret"))


def start_agent(home, host_name, server, user, heartbeat_s, orphan_s, server_key="", idle_s=0):
    """Start the user's agent for `host_name` on this machine unless one runs; an outcome line."""
    if agent_alive(home, host_name):
        return f"agent on {host_name} already running"
    log_file, pidfile, key_file = agent_files(home, host_name)
    private_home(home)
    command = agent_command(server, host_name, user, heartbeat_s, orphan_s, log_file, pidfile,
                            server_key, key_file, idle_s=idle_s)
    env = dict(os.environ, HQ_HOME=home)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    with open(os.devnull, "rb") as null_in, open_private(log_file) as out:
        proc = subprocess.Popen(command, stdin=null_in, stdout=out, stderr=out, env=env,
                                cwd="/", start_new_session=True, close_fds=True)
    with open(pidfile, "w") as handle:
        handle.write(f"{proc.pid}\n")
    log.info("started agent on %s: pid %s (%s)", host_name, proc.pid, shlex.join(command))
    return f"started agent on {host_name}, pid {proc.pid}"


# -- remote hosts over ssh ---------------------------------------------------------------------

class LaunchError(Exception):
    """Starting an agent over ssh failed; the message says why in one line."""


def remote_script(home, host_name, server, user, heartbeat_s, orphan_s, server_key, python,
                  idle_s=0):
    """The `sh -c` line that starts the agent detached on the remote host (own session, log
    and pidfile in HQ_HOME, a shared home directory) unless its pidfile names a live process."""
    log_file, pidfile, key_file = agent_files(home, host_name)
    argv = agent_command(server, host_name, user, heartbeat_s, orphan_s, log_file, pidfile,
                         server_key, key_file, python, idle_s)
    q = shlex.quote
    script = (f'pid=$(cat {q(pidfile)} 2>/dev/null) && kill -0 "$pid" 2>/dev/null '
              f'&& {{ echo "running $pid"; exit 0; }}; '
              f"(umask 077 && mkdir -p {q(os.path.dirname(log_file))} "
              f"{q(os.path.dirname(pidfile))}) && cd / || exit 1; "
              f"{shlex.join(['env', f'HQ_HOME={home}', f'PYTHONPATH={REPO}', 'setsid', *argv])}"
              f" </dev/null >>{q(log_file)} 2>&1 & echo \"started $!\"")
    return "sh -c " + q(script)


class _RefuseUnknown:
    """paramiko's MissingHostKeyPolicy, duck-typed: paramiko is imported only for ssh (it
    costs the user-server's start about 0.1 s)."""

    def missing_host_key(self, client, hostname, key):
        raise LaunchError(f"host key of {hostname} ({key.get_name()}) is not in known_hosts: "
                          "refused; add it (ssh-keyscan, or log in once with ssh) or set "
                          "[ssh] unknown_host_keys = accept-new in etc/hq.cfg")


def ssh_run(host_name, address, command, settings):
    """Run `command` on the host as the current user with the user's keys; its stdout."""
    import paramiko
    hostname, port = split_address(address, 22)
    where = f"{host_name} ({hostname}:{port})"
    client = paramiko.SSHClient()
    known_hosts = os.path.expanduser(settings.ssh_known_hosts)
    try:
        client.load_host_keys(known_hosts)
    except FileNotFoundError:
        pass
    except (OSError, paramiko.SSHException) as exc:
        raise LaunchError(f"cannot read {known_hosts}: {exc}") from None
    accept = settings.ssh_unknown_host_keys == "accept-new"
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if accept else _RefuseUnknown())
    timeout = settings.ssh_connect_timeout_s
    try:
        client.connect(hostname, port, username=settings.ssh_user or None, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        output = stdout.read().decode(errors="replace").strip()
        status = stdout.channel.recv_exit_status()
        errors = stderr.read().decode(errors="replace").strip()
    except LaunchError as exc:
        raise LaunchError(f"ssh to {where}: {exc}") from None
    except paramiko.BadHostKeyException:
        raise LaunchError(f"ssh to {where}: host key differs from the one in {known_hosts}: "
                          "refused (changed host or man in the middle)") from None
    except paramiko.AuthenticationException as exc:
        raise LaunchError(f"ssh to {where}: authentication failed ({exc}); the user's keys "
                          "in ~/.ssh or ssh-agent must be accepted there") from None
    except (socket.timeout, TimeoutError):
        raise LaunchError(f"ssh to {where}: no answer within {timeout:g}s") from None
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise LaunchError(f"ssh to {where}: cannot connect: {_one_line(exc)}") from None
    finally:
        client.close()
    if status != 0:
        raise LaunchError(f"starting the agent on {where} failed (exit {status}): "
                          f"{_one_line(errors or output)}")
    return output


def _one_line(value):
    text = str(value).strip().splitlines()
    return (text[0] if text else type(value).__name__)[:300]


class RemoteStarter:
    """Starts agents on remote hosts in worker threads so that no host blocks the user-server
    or another host. One try per host at a time; a failed host is retried with backoff.

    The workers are daemon threads (a ThreadPoolExecutor's are not): a user-server told to exit
    does not wait for an ssh connection that hangs until its timeout."""

    BACKOFF_START_S, BACKOFF_MAX_S = 5.0, 300.0

    def __init__(self, settings, workers=4):
        self.settings = settings
        self.queue = queue.SimpleQueue()
        self.workers = [threading.Thread(target=self._work, name=f"ssh-{i}", daemon=True)
                        for i in range(workers)]
        for worker in self.workers:
            worker.start()
        self.tries = {}       # host name -> future of the try in flight
        self.failures = {}    # host name -> (failures in a row, time of the next try)

    def request(self, host_name, address, command, now=None):
        """Start a try unless one is in flight or the host is backing off; True if started."""
        now = now or time.time()
        if host_name in self.tries or now < self.failures.get(host_name, (0, 0.0))[1]:
            return False
        future = self.tries[host_name] = Future()
        self.queue.put((future, host_name, address, command))
        return True

    def _work(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            future, *call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(ssh_run(*call, self.settings))
            except BaseException as exc:      # the loop reports it (finished)
                future.set_exception(exc)

    def finished(self, now=None):
        """[(host name, ok, one-line outcome)] of the tries that ended since the last call."""
        now = now or time.time()
        ended = []
        for host_name, future in list(self.tries.items()):
            if not future.done():
                continue
            del self.tries[host_name]
            try:
                ended.append((host_name, True, f"agent on {host_name}: {future.result()}"))
                self.failures.pop(host_name, None)
            except Exception as exc:  # LaunchError, or a paramiko bug: the host backs off
                count = self.failures.get(host_name, (0, 0.0))[0] + 1
                wait = min(self.BACKOFF_MAX_S, self.BACKOFF_START_S * 2 ** (count - 1))
                self.failures[host_name] = (count, now + wait)
                message = str(exc) if isinstance(exc, LaunchError) else f"ssh failed: {exc!r}"
                ended.append((host_name, False, f"{message} (retry in {wait:g}s)"))
        return ended

    def close(self):
        for future in self.tries.values():
            future.cancel()
        for _ in self.workers:
            self.queue.put(None)
