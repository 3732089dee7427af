"""Starts a user's hq-exec-server on a host: a detached local process for this machine
(ssh with paramiko for other hosts). Every value passed on is quoted, never interpolated."""

import logging
import os
import shlex
import subprocess
import sys

from hq.config import is_local_address

log = logging.getLogger("hq.launch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                  server_key="", key_file=""):
    command = [sys.executable, "-m", "agents.exec_server", f"--server={server}",
               f"--host-name={host_name}", f"--user={user}", f"--heartbeat={heartbeat_s}",
               f"--orphan={orphan_s}", f"--log-file={log_file}", f"--pidfile={pidfile}"]
    if server_key:   # public: fine on a command line; the secret stays in the key file
        command += [f"--server-key={server_key}", f"--key-file={key_file}"]
    return command


def start_agent(home, host_name, address, server, user, heartbeat_s, orphan_s, server_key=""):
    """Start the user's agent for `host_name` unless one runs. Returns a one-line outcome."""
    if not is_local_address(address):
        return f"host {host_name} ({address}) is remote: starting agents over ssh is not " \
               "available in this version"
    if agent_alive(home, host_name):
        return f"agent on {host_name} already running"
    log_dir = os.path.join(home, "log")
    os.makedirs(log_dir, exist_ok=True)
    log_file = os.path.join(log_dir, f"agent-{os.path.basename(agent_pidfile(home, host_name))[6:-4]}.log")
    pidfile = agent_pidfile(home, host_name)
    key_file = os.path.join(home, "keys", "user.key_secret")
    command = agent_command(server, host_name, user, heartbeat_s, orphan_s, log_file, pidfile,
                            server_key, key_file)
    env = dict(os.environ, HQ_HOME=home)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    with open(os.devnull, "rb") as null_in, open(log_file, "ab") as out:
        proc = subprocess.Popen(command, stdin=null_in, stdout=out, stderr=out, env=env,
                                cwd="/", start_new_session=True, close_fds=True)
    with open(pidfile, "w") as handle:
        handle.write(f"{proc.pid}\n")
    log.info("started agent on %s: pid %s (%s)", host_name, proc.pid, shlex.join(command))
    return f"started agent on {host_name}, pid {proc.pid}"
