"""hq-server's limits: every agent and user-server connection is a file descriptor, so the soft
open-files limit is raised to the hard limit at start, and a hard limit too low is named; the
listening socket's backlog holds the connections of thousands of agents coming back at once;
a port already taken is named before the load (the server binds only once loaded)."""

import logging
import re
import resource
import socket

from hq.errors import CONFIG_ERROR, HQError

log = logging.getLogger("hq.server")

SPARE_FILES = 256      # the database, logs, ZAP, metrics and clients besides the agents
SOMAXCONN = "/proc/sys/net/core/somaxconn"
DEFAULT_BACKLOG, MAX_BACKLOG = 4096, 65535


def listen_backlog(path=SOMAXCONN):
    """The backlog for the server's listening socket: the kernel's cap (somaxconn). libzmq's
    default of 100 overflowed when 10,000 agents reconnected to a restarted server: the kernel
    dropped their handshakes and each came back only after TCP's retransmission backoff
    (1, 3, 7, 15 ... s), long after its lease had ended."""
    try:
        with open(path) as handle:
            cap = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_BACKLOG
    return max(100, min(cap, MAX_BACKLOG))


def check_port(address):
    """Refuse at once a tcp://HOST:PORT address whose port another process holds (as libzmq
    binds: SO_REUSEADDR). Addresses it cannot read are left to libzmq's own bind."""
    match = re.fullmatch(r"tcp://\[?([^\]]*?)\]?:(\d+)", address)
    if not match:
        return
    host, port = match.group(1), int(match.group(2))
    host = "" if host == "*" else host
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror:
            return
        except OSError as exc:
            raise HQError(CONFIG_ERROR, f"cannot listen on {address}: {exc.strerror}") \
                from None


def raise_open_files():
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (before the socket binds: libzmq
    accepts connections from then on); returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
    return soft


def check_open_files(hosts, users):
    """Log an error when the limit cannot hold one agent connection per user per host;
    returns the connections wanted."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    wanted = hosts * max(1, users) + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.error("open-files limit %d is below the %d that agents of %d users on %d hosts need: "
                  "connections beyond it are refused. Raise the hard limit of the user running "
                  "hq-server (ulimit -Hn; nofile in /etc/security/limits.conf; LimitNOFILE= for "
                  "systemd)", soft, wanted, users, hosts)
    return wanted
