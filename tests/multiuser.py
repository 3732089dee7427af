"""Real Unix users for hq's multi-user tests: users made with useradd (removed afterwards), a
world-readable venv they run hq from, commands run as them with runuser, and a JSON driver.

`python -m tests.multiuser drive` (run as a test user) reads one JSON request a line from
standard input and answers one JSON line: requests through hq.Client, or raw CURVE messages.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "bin")
SYSTEM_PYTHON = "/usr/bin/python3"
GECOS = "hq-test pid="          # marks the users these tests made (and which run made them)
VENV_PARENT = "/var/tmp"
UMASK = 0o022                   # of the users' commands unless a test says otherwise


# -- can we? -------------------------------------------------------------------------------------

def why_impossible():
    """None when users can be made here; else why not (one line)."""
    if os.geteuid() != 0:
        return "the multi-user tests need root (useradd, runuser)"
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} is missing"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing (the test users' venv is made from it)"
    return None


def require():
    """Skip (with a printed reason) when users cannot be made; under CI=true, fail loudly."""
    from tests.helpers import unavailable
    reason = why_impossible()
    if reason is None:
        return
    unavailable(reason, "the multi-user tests")


# -- a venv every user can run -------------------------------------------------------------------

def shared_venv():
    """A venv of SYSTEM_PYTHON with requirements.txt, readable by all, built once per
    requirements.txt (VENV_PARENT/hq-test-venv-HASH; a lock keeps parallel runs apart)."""
    with open(os.path.join(REPO, "requirements.txt"), "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:16]
    path = os.path.join(VENV_PARENT, f"hq-test-venv-{digest}")
    done = os.path.join(path, ".complete")
    if os.path.exists(done):
        return path
    with open(os.path.join(VENV_PARENT, "hq-test-venv.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(done):
            _build_venv(path)
            open(done, "w").close()
    return path


def _build_venv(path):
    shutil.rmtree(path, ignore_errors=True)
    old = os.umask(0o022)
    try:
        for command in ([SYSTEM_PYTHON, "-m", "venv", path],
                        [os.path.join(path, "bin", "python"), "-m", "pip", "install", "--quiet",
                         "--disable-pip-version-check", "-r",
                         os.path.join(REPO, "requirements.txt")]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                shutil.rmtree(path, ignore_errors=True)
                raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
    finally:
        os.umask(old)


# -- Unix users ----------------------------------------------------------------------------------

class UnixUser:
    """A real user with a home under /home, made by useradd and removed by `remove()`."""

    def __init__(self, role):
        self.role = role                       # "alice", "bob"
        self.name = f"hqt{role}{os.getpid() % 100000}"
        self.home = f"/home/{self.name}"
        self.uid = None

    def create(self):
        remove_user(self.name)       # a leftover of a run with the same pid
        subprocess.run(["useradd", "--create-home", "--home-dir", self.home, "--shell",
                        "/bin/sh", "--comment", f"{GECOS}{os.getpid()}", self.name],
                       check=True, capture_output=True, timeout=30)
        self.uid = pwd.getpwnam(self.name).pw_uid
        return self

    def remove(self):
        remove_user(self.name)


def user_pids(uid):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def kill_user_processes(uid, timeout=5.0):
    """SIGKILL each process of `uid` by its id (every one was started by these tests)."""
    from tests.helpers import wait_until

    def none_left():
        pids = user_pids(uid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not pids
    wait_until(none_left, timeout, 0.05, f"the processes of uid {uid} to end after SIGKILL")


def remove_user(name):
    """Kill the user's processes and remove it with its home (only users these tests made)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return
    if not entry.pw_gecos.startswith(GECOS):
        raise RuntimeError(f"user {name} exists and was not made by hq's tests: not touched")
    kill_user_processes(entry.pw_uid)
    subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=30)
    shutil.rmtree(entry.pw_dir, ignore_errors=True)


def remove_stale_users():
    """Users left by an earlier run that died (its pid is gone)."""
    for entry in pwd.getpwall():
        if entry.pw_gecos.startswith(GECOS):
            pid = entry.pw_gecos[len(GECOS):]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                remove_user(entry.pw_name)


# -- an installation shared by an admin (root) and the users -------------------------------------

class MultiUserCluster:
    """hq-server run by root (a tests.helpers.Cluster), and users who run hq as themselves
    from the shared venv with HQ_HOME in their home. etc/ is readable by everyone."""

    def __init__(self, cluster, venv, users, home_name=".hq"):
        self.cluster = cluster
        self.venv = venv
        self.users = {user.role: user for user in users}
        self.home_name = home_name
        self.first = {}          # role -> the CompletedProcess of the user's first command
        os.chmod(cluster.root, 0o755)
        for folder, _, files in os.walk(cluster.etc):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)

    def hq_home(self, role):
        return os.path.join(self.users[role].home, self.home_name)

    def env(self, role, **extra):
        user = self.users[role]
        env = {"HOME": user.home, "USER": user.name, "LOGNAME": user.name, "LANG": "C.UTF-8",
               "PATH": "/usr/local/bin:/usr/bin:/bin", "HQ_CONF": self.cluster.etc,
               "HQ_SERVER": self.cluster.env["HQ_SERVER"], "HQPATH": REPO,
               "HQ_VE_PATH": self.venv, "HQ_HOME": self.hq_home(role), "PYTHONPATH": REPO}
        env.update(extra)
        return env

    def command(self, role, argv, umask=UMASK, **extra):
        """runuser argv: `argv` run as the user with a clean environment and `umask`."""
        if umask is not None:
            argv = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *argv]
        env = [f"{k}={v}" for k, v in self.env(role, **extra).items()]
        return ["runuser", "-u", self.users[role].name, "--", "env", "-i", *env, *argv]

    def run(self, role, *args, input=None, timeout=60, umask=UMASK, check=False, **extra):
        """Run bin/ARGS[0] as the user, in their home; the CompletedProcess (text)."""
        argv = [os.path.join(BIN, args[0]), *args[1:]]
        result = subprocess.run(self.command(role, argv, umask, **extra), input=input,
                                capture_output=True, text=True, timeout=timeout,
                                cwd=self.users[role].home)
        if check and result.returncode != 0:
            raise AssertionError(f"{role}: {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.strip()}")
        return result

    def admin(self, *args, check=True, **kwargs):
        """Run an hq command as the admin (root, the server's own user)."""
        return self.cluster.run(*args, check=check, **kwargs)

    def register_all(self):
        """Each user's first command (all at once) makes their key and is refused; then the
        admin registers each key. `first[role]` keeps what the first command said."""
        argv = [os.path.join(BIN, "hq-client"), "status"]
        started = {role: subprocess.Popen(self.command(role, argv), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True,
                                          cwd=self.users[role].home) for role in self.users}
        for role, proc in started.items():
            out, err = proc.communicate(timeout=60)
            self.first[role] = subprocess.CompletedProcess(argv, proc.returncode, out, err)
            assert "PERMISSION_DENIED" in err, err
            key = os.path.join(self.hq_home(role), "keys", "user.key")
            self.admin("hq-admin", "adduser", self.users[role].name, f"--key={key}")

    def driver(self, role, umask=UMASK):
        return Driver(self, role, umask)

    def stop_user(self, role):
        """Kill a user's user-server, agents and jobs (by pid: all are the tests' own)."""
        kill_user_processes(self.users[role].uid)

    def restart_user(self, role, umask=UMASK):
        """Kill the user's user-server, agents and jobs, start them again and wait until the
        new agent on localhost has registered (so that no job goes to the dead one)."""
        from tests.helpers import wait_until
        line = f"agent of {self.users[role].name} registered on host localhost"
        before = self.cluster.server_log().count(line)
        self.stop_user(role)
        self.run(role, "hq-client", "status", umask=umask, check=True)
        with self.driver(role, umask) as driver:   # not invokeservers: the server may still
            driver.call(op="start_agent", host="localhost")   # count the dead agent as alive
        wait_until(lambda: self.cluster.server_log().count(line) > before, 20,
                   message=f"{role}'s new agent to register")

    # -- what the tests ask as users -------------------------------------------------------------
    def submit(self, role, *args, **kwargs):
        """hq-submit as the user; the (first) job id."""
        result = self.run(role, "hq-submit", *args, **kwargs)
        assert result.returncode == 0, f"{role}: {result.stderr}"
        return int(result.stdout.split()[0])

    def state(self, role, job):
        result = self.run(role, "hq-client", "details", "--json", str(job), check=True)
        return json.loads(result.stdout)[0]["state"]

    def wait_job(self, role, job, timeout):
        """hq-client wait --timeout as the user: the CompletedProcess (exit 0: done)."""
        return self.run(role, "hq-client", "wait", f"--timeout={timeout}", str(job),
                        timeout=timeout + 30)

    def cancel_all(self, role):
        """Cancel every live job of the user (a test's leftovers)."""
        while True:
            jobs = json.loads(self.run(role, "hq-client", "list", "--json", "--state",
                                       "held,pending,dispatched,running", check=True).stdout)
            if not jobs:
                return
            self.run(role, "hq-client", "cancel", *[str(j["id"]) for j in jobs], check=True)

    def hosts(self):
        """{name: host} as the admin's lscluster --json shows them."""
        reply = json.loads(self.admin("hq-admin", "lscluster", "--json").stdout)
        return {host["name"]: host for host in reply["hosts"]}


HOSTS = (("localhost", "2", "local", "127.0.0.1"), ("ghost", "1", "-", "127.0.0.1:2"))


def installation(db_url, venv, users, home_name=".hq", max_message_bytes=None):
    """A started MultiUserCluster: root's hq-server on db_url with hosts localhost (2 slots)
    and ghost (inactive, unreachable: only there for its status reason); users registered.
    The caller closes it with `close_installation`."""
    from tests.helpers import Cluster
    cluster = Cluster(db_url, hosts=HOSTS)
    if max_message_bytes:
        cluster.set_config("server", "max_message_bytes", str(max_message_bytes))
    site = MultiUserCluster(cluster, venv, users, home_name)
    try:
        cluster.setup_database()
        cluster.start_server()
        cluster.run("hq-admin", "deactivatehost:ghost", check=True)
        site.register_all()
    except BaseException:
        close_installation(site)
        raise
    return site


def close_installation(site):
    for user in site.users.values():
        if user.uid is not None:
            kill_user_processes(user.uid)
    site.cluster.close()


@contextlib.contextmanager
def two_users():
    """alice and bob, made for the `with` body and removed after (even on failure)."""
    remove_stale_users()
    users = [UnixUser("alice"), UnixUser("bob")]
    try:
        for user in users:
            user.create()
        yield users
    finally:
        for user in users:
            user.remove()


def site_fixture(tmp_path_factory, **options):
    """The body of a module's `site` fixture: a generator of a started installation."""
    require()
    venv = shared_venv()
    with two_users() as users:
        db = tmp_path_factory.mktemp("db")
        site = installation(f"sqlite:///{db}/hq.sqlite", venv, users, **options)
        try:
            yield site
        finally:
            close_installation(site)


class Driver:
    """`python -m tests.multiuser drive` as a user: `call(op=..., ...)` sends one request."""

    def __init__(self, installation, role, umask=UMASK):
        python = os.path.join(installation.venv, "bin", "python")
        self.proc = subprocess.Popen(
            installation.command(role, [python, "-m", "tests.multiuser", "drive"], umask),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=installation.users[role].home)

    def call(self, wait_s=60, **request):
        """The driver's answer to `request` (its fields as keywords) within wait_s seconds."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], wait_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise AssertionError(f"driver gave no answer to {str(request)[:200]}: "
                                 f"{self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- the driver, run as a test user --------------------------------------------------------------

def _client_request(client, kind, body):
    from hq.errors import HQError
    try:
        return {"ok": client.request(kind.encode(), **body)}
    except HQError as exc:
        return {"error": exc.code, "message": exc.message}


def _raw(request):
    """Frames sent straight to hq-server over CURVE with this user's key; the reply or None."""
    import zmq
    from hq import config, protocol as p, security
    settings = config.load_settings()
    home = config.home_dir()
    keys = security.load_keypair(security.cert_paths(home, security.USER_CERT)[1])
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    security.make_client_socket(sock, security.server_public_key(settings, home), *keys)
    sock.connect(settings.server_address)
    try:
        if "frames" in request:
            frames = [b"x" * n for n in request["frames"]]
        else:
            frames = p.encode(request["kind"].encode(), request["body"])
        sock.send_multipart(frames)
        if not sock.poll(request.get("timeout", 5) * 1000):
            return {"reply": None}
        kind, body = p.decode(sock.recv_multipart())
        return {"reply": [kind.decode(), body]}
    finally:
        sock.close(linger=0)


def _submit_wait(client, request):
    """Submit commands and wait for them: their states, or the error."""
    from hq.errors import HQError
    try:
        ids = client.submit_many(request["commands"], **request.get("options", {}))
        jobs = client.wait(ids, timeout=request.get("timeout", 30))
        return {"ok": [job["state"] for job in jobs], "ids": ids}
    except HQError as exc:
        return {"error": exc.code, "message": exc.message}


def _start_agent(host):
    """Start this user's agent for `host` as the user-server would on SPAWN."""
    from hq import config, security
    from hq.user import launch
    s, home = config.load_settings(), config.home_dir()
    key = security.server_public_key(s, home).decode()
    return {"ok": launch.start_agent(home, host, s.server_address, config.current_user(),
                                     s.heartbeat_s, s.agent_orphan_s, key, s.agent_idle_s)}


def drive(stdin=sys.stdin, stdout=sys.stdout):
    from hq.client.api import Client
    client = Client()
    for line in stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "request":
            answer = _client_request(client, request["kind"], request["body"])
        elif op == "raw":
            answer = _raw(request)
        elif op == "submit_wait":
            answer = _submit_wait(client, request)
        elif op == "start_agent":
            answer = _start_agent(request["host"])
        else:
            answer = {"error": "BAD_DRIVER_OP", "message": repr(op)}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()
    client.close()


if __name__ == "__main__" and sys.argv[1:] == ["drive"]:
    drive()
