"""hq-server's open-files limit: every agent and user-server connection is a file descriptor,
so the soft limit is raised to the hard limit at start, and a hard limit too low is named."""

import logging
import resource

log = logging.getLogger("hq.server")

SPARE_FILES = 256      # the database, logs, ZAP, metrics and clients besides the agents


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
