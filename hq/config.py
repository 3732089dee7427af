"""Finds and parses hq's configuration: etc/hq.cfg, etc/users, etc/cluster.tab, etc/hq-db.cfg.

Environment overrides: HQ_CONF (etc dir), HQ_HOME (per-user state), HQ_DB_URL, HQ_SERVER.
"""

import configparser
import getpass
import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from hq.errors import CONFIG_ERROR, HQError

DEFAULT_PORT = 10101
LOCAL_ADDRESSES = {"localhost", "127.0.0.1", "::1", ""}


def etc_dir():
    if os.environ.get("HQ_CONF"):
        return os.environ["HQ_CONF"]
    base = os.environ.get("HQPATH") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(base, "etc")


def home_dir():
    return os.path.abspath(os.path.expanduser(os.environ.get("HQ_HOME") or "~/.hq"))


def run_dir(home=None):
    """$HQ_HOME/run, created private (0700) so the OS keeps other users off our sockets."""
    path = os.path.join(home or home_dir(), "run")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def current_user():
    return getpass.getuser()


def split_address(address, default_port=None):
    """(host, port) from 'host', 'host:port' or '[v6]:port'; port is default_port if absent."""
    if address.startswith("[") and "]" in address:
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, ""
    if port and not port.isdigit():
        raise HQError(CONFIG_ERROR, f"address {address!r}: port must be a number")
    return host, int(port) if port else default_port


def is_local_address(address):
    """True for this machine. 'host:port' with a port other than 22 names an ssh server of
    its own (a container, a tunnel): remote, even on a loopback address."""
    host, port = split_address(address, 22)
    if port != 22:
        return False
    if host in LOCAL_ADDRESSES:
        return True
    import socket       # here: command lines that never ask start faster
    names = {socket.gethostname(), socket.gethostname().split(".")[0], socket.getfqdn()}
    return host in names


@dataclass
class Settings:
    """Values from etc/hq.cfg after environment overrides."""
    server_host: str = "localhost"
    port: int = DEFAULT_PORT
    bind: str = "127.0.0.1"
    heartbeat_s: float = 2.0
    max_message_bytes: int = 64 * 1024 * 1024
    io_threads: int = 4                 # libzmq's I/O threads (connections, CURVE handshakes)
    user_server_idle_s: float = 3600.0
    request_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    agent_orphan_s: float = 600.0
    agent_idle_s: float = 600.0
    spawn_retry_s: float = 15.0
    requeue_grace_s: float = 10.0
    lease_s: float = 0.0                # agents' lease (fencing); 0: agent_lease_s below
    standby: bool = False               # servers share a lease in MySQL: one active, others wait
    server_lease_s: float = 5.0         # the active server's lease (renewed every second)
    server_urls: tuple = ()             # from HQ_SERVER (tcp://HOST:PORT, comma separated)
    commit_interval_s: float = 0.03
    metrics_interval_s: float = 60.0
    metrics_retention_s: float = 86400.0
    job_retention_days: float = 0.0     # 0: keep finished jobs for ever
    default_retries: int = 1
    max_live_jobs_per_user: int = 50000
    outside_load: bool = True
    slurm_env: bool = True              # jobs also get SLURM_JOB_ID, SLURM_CPUS_PER_TASK, ...
    reserve_after_s: float = 300.0
    placement_limit: int = 1000
    server_key: str = ""
    ssh_unknown_host_keys: str = "reject"
    ssh_known_hosts: str = "~/.ssh/known_hosts"
    ssh_user: str = ""
    ssh_connect_timeout_s: float = 10.0
    ssh_python: str = ""
    etc: str = ""

    @property
    def server_addresses(self):
        """Every hq-server address clients try, in order: `[server] host` may list several
        (an active server and its standbys), comma separated; HQ_SERVER likewise."""
        if self.server_urls:
            return list(self.server_urls)
        return [f"tcp://{host.strip()}:{self.port}" for host in self.server_host.split(",")
                if host.strip()]

    @property
    def server_address(self):
        return ",".join(self.server_addresses)

    @property
    def requeue_after_s(self):
        """The least time from the last message the server heard from an agent to the requeue
        of its jobs: 3 heartbeats of silence, then the grace."""
        return 3 * self.heartbeat_s + self.requeue_grace_s

    @property
    def agent_lease_s(self):
        """How long an agent may go on running jobs after a request the server answered: its
        jobs are killed at the end, before the server may requeue them. Default: 3 heartbeats
        and half the grace (11 s of the 16 s), the other half a margin for clock rates."""
        return self.lease_s or 3 * self.heartbeat_s + self.requeue_grace_s / 2


def _read_ini(path, required=False):
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    if not os.path.exists(path):
        if required:
            raise HQError(CONFIG_ERROR, f"{path}: file not found")
        return parser
    try:
        parser.read(path)
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise HQError(CONFIG_ERROR, f"{path}: {first}") from None
    return parser


def _get(parser, path, section, key, kind, default):
    try:
        if kind is float:
            return parser.getfloat(section, key, fallback=default)
        if kind is int:
            return parser.getint(section, key, fallback=default)
        if kind is bool:
            return parser.getboolean(section, key, fallback=default)
        return parser.get(section, key, fallback=default)
    except ValueError:
        what = "on or off" if kind is bool else f"a {kind.__name__}"
        raise HQError(CONFIG_ERROR, f"{path}: [{section}] {key} must be {what}") from None


def load_settings(etc=None):
    etc = etc or etc_dir()
    path = os.path.join(etc, "hq.cfg")
    p = _read_ini(path)
    d = Settings()
    s = Settings(
        server_host=_get(p, path, "server", "host", str, d.server_host),
        port=_get(p, path, "server", "port", int, d.port),
        bind=_get(p, path, "server", "bind", str, d.bind),
        heartbeat_s=_get(p, path, "server", "heartbeat_s", float, d.heartbeat_s),
        max_message_bytes=_get(p, path, "server", "max_message_bytes", int, d.max_message_bytes),
        io_threads=_get(p, path, "server", "io_threads", int, d.io_threads),
        default_retries=_get(p, path, "server", "default_retries", int, d.default_retries),
        max_live_jobs_per_user=_get(p, path, "server", "max_live_jobs_per_user", int,
                                    d.max_live_jobs_per_user),
        spawn_retry_s=_get(p, path, "server", "spawn_retry_s", float, d.spawn_retry_s),
        requeue_grace_s=_get(p, path, "server", "requeue_grace_s", float, d.requeue_grace_s),
        lease_s=_get(p, path, "server", "lease_s", float, d.lease_s),
        standby=_get(p, path, "server", "standby", bool, d.standby),
        server_lease_s=_get(p, path, "server", "server_lease_s", float, d.server_lease_s),
        commit_interval_s=_get(p, path, "server", "commit_interval_s", float,
                               d.commit_interval_s),
        metrics_interval_s=_get(p, path, "server", "metrics_interval_s", float,
                                d.metrics_interval_s),
        metrics_retention_s=_get(p, path, "server", "metrics_retention_s", float,
                                 d.metrics_retention_s),
        job_retention_days=_get(p, path, "server", "job_retention_days", float,
                                d.job_retention_days),
        slurm_env=_get(p, path, "server", "slurm_env", bool, d.slurm_env),
        user_server_idle_s=_get(p, path, "user-server", "idle_s", float, d.user_server_idle_s),
        request_timeout_s=_get(p, path, "user-server", "request_timeout_s", float,
                               d.request_timeout_s),
        connect_timeout_s=_get(p, path, "user-server", "connect_timeout_s", float,
                               d.connect_timeout_s),
        agent_orphan_s=_get(p, path, "agent", "orphan_s", float, d.agent_orphan_s),
        outside_load=_get(p, path, "scheduler", "outside_load", bool, d.outside_load),
        reserve_after_s=_get(p, path, "scheduler", "reserve_after_s", float, d.reserve_after_s),
        placement_limit=_get(p, path, "scheduler", "placement_limit", int, d.placement_limit),
        agent_idle_s=_get(p, path, "agent", "idle_s", float, d.agent_idle_s),
        server_key=_get(p, path, "security", "server_key", str, d.server_key),
        ssh_unknown_host_keys=_get(p, path, "ssh", "unknown_host_keys", str,
                                   d.ssh_unknown_host_keys),
        ssh_known_hosts=_get(p, path, "ssh", "known_hosts", str, d.ssh_known_hosts)
        or d.ssh_known_hosts,
        ssh_user=_get(p, path, "ssh", "user", str, d.ssh_user),
        ssh_connect_timeout_s=_get(p, path, "ssh", "connect_timeout_s", float,
                                   d.ssh_connect_timeout_s),
        ssh_python=_get(p, path, "ssh", "python", str, d.ssh_python),
        etc=etc,
    )
    if not 0 <= s.commit_interval_s <= 1:
        raise HQError(CONFIG_ERROR, f"{path}: [server] commit_interval_s must be between 0 and "
                      f"1 (seconds), not {s.commit_interval_s}")
    if s.lease_s and not 3 * s.heartbeat_s < s.lease_s < s.requeue_after_s:
        raise HQError(CONFIG_ERROR, f"{path}: [server] lease_s must be longer than 3 heartbeats "
                      f"({3 * s.heartbeat_s:g}s) and shorter than 3 heartbeats + requeue_grace_s "
                      f"({s.requeue_after_s:g}s: the agent must kill its jobs before the server "
                      f"requeues them), not {s.lease_s:g}; 0 chooses "
                      f"{3 * s.heartbeat_s + s.requeue_grace_s / 2:g}")
    if not 1 <= s.io_threads <= 64:
        raise HQError(CONFIG_ERROR, f"{path}: [server] io_threads must be between 1 and 64, "
                      f"not {s.io_threads}")
    if s.ssh_unknown_host_keys not in ("reject", "accept-new"):
        raise HQError(CONFIG_ERROR, f"{path}: [ssh] unknown_host_keys must be reject or "
                      f"accept-new, not {s.ssh_unknown_host_keys!r}")
    if not 2 <= s.server_lease_s <= 60:
        raise HQError(CONFIG_ERROR, f"{path}: [server] server_lease_s must be between 2 and 60 "
                      f"(seconds), not {s.server_lease_s:g}")
    if s.standby and s.server_lease_s + 2 > s.agent_lease_s:
        raise HQError(CONFIG_ERROR, f"{path}: [server] server_lease_s ({s.server_lease_s:g}s) "
                      f"must be at least 2 s shorter than the agents' lease "
                      f"({s.agent_lease_s:g}s), or agents kill their jobs in every takeover")
    env = os.environ.get("HQ_SERVER")
    if env:
        urls = [url.strip() for url in env.split(",")]
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme != "tcp" or not parts.hostname or not parts.port:
                raise HQError(CONFIG_ERROR, f"HQ_SERVER={env!r}: expected tcp://HOST:PORT "
                              "(several: comma separated)")
        first = urlsplit(urls[0])
        s.server_host, s.port, s.server_urls = first.hostname, first.port, tuple(urls)
    return s


def load_users(etc=None):
    """[(name, [roles])] from etc/users: `<Username> <ROLE1>,<ROLE2>` a line."""
    path = os.path.join(etc or etc_dir(), "users")
    users = []
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) > 2:
            raise HQError(CONFIG_ERROR, f"{path} line {number}: expected '<user> <ROLE>,<ROLE>'")
        roles = [r.strip().upper() for r in (parts[1] if len(parts) > 1 else "USER").split(",")]
        bad = [r for r in roles if r not in ("USER", "ADMIN")]
        if bad:
            raise HQError(CONFIG_ERROR, f"{path} line {number}: unknown role {bad[0]!r}")
        users.append((parts[0], roles))
    return users


@dataclass
class HostEntry:
    """One line of etc/cluster.tab."""
    name: str
    max_slots: int = 0
    groups: tuple = ()
    address: str = ""
    state: str = "active"
    extra: dict = field(default_factory=dict)


def load_cluster(etc=None):
    """[HostEntry] from etc/cluster.tab: name, max slots ('-' = cores), groups, address, state."""
    path = os.path.join(etc or etc_dir(), "cluster.tab")
    hosts, seen = [], set()
    for number, line in _lines(path):
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) == 1:
            cols = line.split()
        name = cols[0]
        where = f"{path} line {number}"
        if name in seen:
            raise HQError(CONFIG_ERROR, f"{where}: host {name!r} listed twice")
        seen.add(name)
        slots = cols[1] if len(cols) > 1 else "-"
        if slots not in ("-", "") and not slots.isdigit():
            raise HQError(CONFIG_ERROR, f"{where}: max slots must be a number or '-', not {slots!r}")
        groups = tuple(g for g in (cols[2] if len(cols) > 2 else "").split(",") if g and g != "-")
        address = cols[3] if len(cols) > 3 and cols[3] != "-" else name
        state = (cols[4] if len(cols) > 4 and cols[4] else "active").lower()
        if state not in ("active", "inactive"):
            raise HQError(CONFIG_ERROR, f"{where}: state must be active or inactive, not {state!r}")
        hosts.append(HostEntry(name, int(slots) if slots.isdigit() else 0, groups, address, state))
    return hosts


def _lines(path):
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise HQError(CONFIG_ERROR, f"{path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].rstrip()
        if line.strip():
            yield number, line.strip(" ")


@dataclass
class DbConfig:
    backend: str
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = "hq"
    pool_size: int = 4
    source: str = "HQ_DB_URL"       # where the password came from, for error messages

    @property
    def url(self):
        if self.backend == "sqlite":
            return f"sqlite:///{self.path}"
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


def parse_db_url(url):
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = "/" + unquote(parts.path).lstrip("/")   # sqlite:///a/b and sqlite:////a/b: /a/b
        if path == "/":
            raise HQError(CONFIG_ERROR, f"HQ_DB_URL={url!r}: expected sqlite:///PATH")
        return DbConfig("sqlite", path=path)
    if parts.scheme == "mysql":
        database = parts.path.lstrip("/")
        if not database:
            raise HQError(CONFIG_ERROR, f"HQ_DB_URL={url!r}: expected mysql://USER:PASS@HOST:PORT/DB")
        return DbConfig("mysql", host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                        user=unquote(parts.username or "root"),
                        password=unquote(parts.password or ""), database=database)
    raise HQError(CONFIG_ERROR, f"HQ_DB_URL={url!r}: scheme must be sqlite or mysql")


def load_db_config(etc=None):
    if os.environ.get("HQ_DB_URL"):
        return parse_db_url(os.environ["HQ_DB_URL"])
    path = os.path.join(etc or etc_dir(), "hq-db.cfg")
    p = _read_ini(path, required=True)
    backend = _get(p, path, "database", "backend", str, "sqlite")
    if backend == "sqlite":
        db_path = os.path.expanduser(_get(p, path, "database", "path", str, "hq.sqlite"))
        return DbConfig("sqlite", path=os.path.join(home_dir(), db_path), source="hq-db.cfg")
    if backend != "mysql":
        raise HQError(CONFIG_ERROR, f"{path}: backend must be sqlite or mysql, not {backend!r}")
    db = DbConfig(
        "mysql", host=_get(p, path, "database", "host", str, "127.0.0.1"),
        port=_get(p, path, "database", "port", int, 3306),
        user=_get(p, path, "database", "user", str, "root"),
        password=_get(p, path, "database", "password", str, ""),
        database=_get(p, path, "database", "database", str, "hq"),
        pool_size=_get(p, path, "database", "pool_size", int, 4), source="hq-db.cfg")
    if db.password:
        _warn_if_readable(path)
    return db


_warned = set()


def _warn_if_readable(path):
    """One warning (stderr, or the log of a daemon) when a file holding the database password
    can be read by group or others."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o044 and path not in _warned:
        _warned.add(path)
        import logging
        logging.getLogger("hq.config").warning(
            "%s holds the database password and is readable by %s: chmod 600 %s", path,
            "group and others" if mode & 0o044 == 0o044 else
            "group" if mode & 0o040 else "others", path)
