"""CURVE end to end on a real hq-server: unknown keys and plain clients get nothing, users see
and cancel only their own jobs, agents run only their user's jobs, admin needs the role."""

import getpass
import json
import os

import pytest
import zmq

from hq import protocol as p, security
from tests.helpers import pid_alive, read_pid, wait_until


def submit(cluster, *args, env=None):
    result = cluster.run("hq-submit", *args, env=env)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def details(cluster, job_id, env=None):
    result = cluster.run("hq-client", "details", "--json", str(job_id), env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def dealer(cluster, keys=None):
    """A DEALER to hq-server: plain when keys is None, else CURVE as (public, secret)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        server_key = security.read_public_key(os.path.join(cluster.home, "keys", "server.key"))
        security.make_client_socket(sock, server_key, *keys)
    sock.connect(f"tcp://127.0.0.1:{cluster.port}")
    return sock


def answer(sock, kind, body, timeout=5.0):
    """Send one request; its (kind, body) reply, or None when nothing comes within timeout."""
    try:
        sock.send_multipart(p.encode(kind, body), zmq.NOBLOCK)
    except zmq.Again:     # no connection the server accepted to queue it on
        return None
    if not sock.poll(timeout * 1000):
        return None
    return p.decode(sock.recv_multipart(), kinds={p.OK, p.ERROR, p.SPAWN})


@pytest.fixture
def sqlite_cluster(tmp_path):
    from tests.helpers import Cluster
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite", users="bob USER\n")
    with c.running():
        yield c


def bob_env(cluster):
    """A second user: own HQ_HOME and key, finding the server key through HQ_SERVER_KEY."""
    home = os.path.join(cluster.root, "bob")
    os.makedirs(home, exist_ok=True)
    return dict(cluster.env, HQ_HOME=home,
                HQ_SERVER_KEY=os.path.join(cluster.home, "keys", "server.key"))


def stop_user_server(home):
    from tests.helpers import kill_pid
    kill_pid(read_pid(os.path.join(home, "run", "user-server.pid")))
    run = os.path.join(home, "run")
    for name in os.listdir(run) if os.path.isdir(run) else []:
        if name.startswith("agent-"):
            kill_pid(read_pid(os.path.join(run, name)))


def test_keys_are_private_and_made_once(sqlite_cluster):
    keys = os.path.join(sqlite_cluster.home, "keys")
    for name in ("server.key_secret", "user.key_secret"):
        assert os.stat(os.path.join(keys, name)).st_mode & 0o777 == 0o600
    assert os.stat(keys).st_mode & 0o777 == 0o700
    before = security.read_public_key(os.path.join(keys, "server.key"))
    sqlite_cluster.run("hq-dbadmin", "--add-standard-entries", check=True)
    assert security.read_public_key(os.path.join(keys, "server.key")) == before


def test_plain_client_gets_nothing_and_server_stays_healthy(sqlite_cluster):
    sock = dealer(sqlite_cluster)
    try:
        me = getpass.getuser()
        assert answer(sock, p.LIST, {"req": 1, "user": me}, timeout=2) is None
    finally:
        sock.close()
    assert sqlite_cluster.run("hq-submit", "--wait", "true").returncode == 0


def test_unregistered_key_cannot_submit_or_read(sqlite_cluster):
    public, secret = zmq.curve_keypair()
    sock = dealer(sqlite_cluster, (public, secret))
    try:
        for kind, body in ((p.SUBMIT, {"jobs": [{"command": "true"}]}), (p.LIST, {}),
                           (p.PING, {})):
            assert answer(sock, kind, dict(body, req=1, user="root"), timeout=1.5) is None
    finally:
        sock.close()
    assert "refused connection with unregistered key" in sqlite_cluster.server_log()
    # through the command line: a clear refusal, not a hang or a traceback
    env = bob_env(sqlite_cluster)
    result = sqlite_cluster.run("hq-submit", "true", env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "PERMISSION_DENIED" in result.stderr and "hq-admin adduser" in result.stderr
    assert sqlite_cluster.run("hq-submit", "--wait", "true").returncode == 0
    stop_user_server(env["HQ_HOME"])


def test_users_see_and_cancel_only_their_own_jobs(sqlite_cluster):
    c = sqlite_cluster
    env = bob_env(c)
    bob_key = security.cert_paths(env["HQ_HOME"], security.USER_CERT)[0]
    security.ensure_keypair(env["HQ_HOME"], security.USER_CERT)
    try:
        c.run("hq-admin", "adduser", "bob", f"--key={bob_key}", check=True)
        # issue 14: bob's key is registered now, so it is the role check that refuses him
        # (before, bob's unregistered key was refused and the role check never ran)
        result = c.run("hq-admin", "adduser", "mallory", f"--key={bob_key}", env=env)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert "'adduser' needs the ADMIN role; user bob" in result.stderr, result.stderr
        users = json.loads(c.run("hq-admin", "lsusers", "--json", check=True).stdout)["users"]
        assert "mallory" not in {u["name"] for u in users}
        alice_job = submit(c, "sleep 60")
        wait_until(lambda: details(c, alice_job)["state"] == "running", 20,
                   message="the admin's job to run")
        for command in (("details", str(alice_job)), ("cancel", str(alice_job))):
            result = c.run("hq-client", *command, env=env)
            assert result.returncode != 0 and "UNKNOWN_JOB" in result.stderr
        listed = json.loads(c.run("hq-client", "list", "--json", env=env, check=True).stdout)
        assert listed == []
        assert details(c, alice_job)["state"] == "running"
        denied = c.run("hq-admin", "deactivatehost:localhost", env=env)
        assert denied.returncode != 0 and "PERMISSION_DENIED" in denied.stderr
        # bob's job runs on bob's own agent (its parent), not on the admin's
        out = os.path.join(c.root, "bob-ppid")
        bob_job = submit(c, "--wait", "-o", out, "echo $PPID", env=env)
        bob_agent = read_pid(os.path.join(env["HQ_HOME"], "run", "agent-localhost.pid"))
        assert bob_agent and pid_alive(bob_agent)
        with open(out) as handle:
            assert int(handle.read()) == bob_agent
        assert "agent of bob registered on host localhost" in c.server_log()
        mine = json.loads(c.run("hq-client", "list", "--json", check=True).stdout)
        assert [j["id"] for j in mine] == [alice_job]
        assert details(c, bob_job, env)["state"] == "done"
        # a message that names another user still acts for the key's user
        keys = security.load_keypair(security.cert_paths(env["HQ_HOME"], "user")[1])
        sock = dealer(c, keys)
        try:
            kind, body = answer(sock, p.LIST, {"req": 7, "user": "root"})
            assert kind == p.OK and [j["id"] for j in body["jobs"]] == [bob_job]
            kind, body = answer(sock, p.CANCEL, {"req": 8, "user": "root", "ids": [alice_job]})
            assert kind == p.ERROR and body["code"] == "UNKNOWN_JOB"
        finally:
            sock.close()
        c.run("hq-client", "cancel", str(alice_job), check=True)
    finally:
        stop_user_server(env["HQ_HOME"])


def umask_run(cluster, umask, *args, env=None):
    """An hq command run under `umask` (as a shell that set it would run it)."""
    from tests.helpers import BIN
    import subprocess
    command = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh",
               os.path.join(BIN, args[0]), *args[1:]]
    return subprocess.run(command, env=env or cluster.env, capture_output=True, text=True,
                          timeout=60, cwd=cluster.root)


def mode(path):
    return os.stat(path).st_mode & 0o777


def test_new_home_is_private_and_finds_the_published_server_key(sqlite_cluster):
    """Catches HQ_HOME, log/, output/ made 0755 under umask 022, a public key only its owner
    can read, and a first command that cannot find the server's key (no HQ_SERVER_KEY)."""
    c = sqlite_cluster
    home = os.path.join(c.root, "newcomer")
    env = dict(c.env, HQ_HOME=home)
    try:
        result = umask_run(c, 0o022, "hq-client", "status", env=env)
        # found etc/server.key: refused only because this key is not registered
        assert "PERMISSION_DENIED" in result.stderr, result.stderr
        assert "no hq-server public key" not in result.stderr
        for folder in ("", "run", "log", "keys", "output"):
            assert mode(os.path.join(home, folder)) == 0o700, folder
        assert mode(os.path.join(home, "keys", "user.key")) == 0o644
        assert mode(os.path.join(home, "keys", "user.key_secret")) == 0o600
        assert mode(os.path.join(home, "log", "user-server.log")) == 0o600
        assert mode(os.path.join(home, "run", "user.sock")) == 0o600
    finally:
        stop_user_server(home)


def test_server_key_is_published_in_etc(sqlite_cluster):
    """Catches a server key readable only by the admin: etc/server.key is the server's public
    key, 0644, written again when missing or stale; secrets stay 0600."""
    c = sqlite_cluster
    published = os.path.join(c.etc, "server.key")
    own = os.path.join(c.home, "keys", "server.key")
    assert mode(published) == 0o644 and mode(own) == 0o644
    assert security.read_public_key(published) == security.read_public_key(own)
    with open(published, "w") as handle:
        handle.write("stale\n")
    c.stop_server()
    c.start_server()
    wait_until(lambda: "secret" not in open(published).read() and "public-key" in
               open(published).read(), 10, message="the server to publish its key again")
    assert security.read_public_key(published) == security.read_public_key(own)
    env = dict(c.env, HQ_SERVER_KEY="")     # the default places only
    assert c.run("hq-submit", "--wait", "true", env=env).returncode == 0


def test_unpublishable_server_key_is_a_warning(sqlite_cluster):
    """Catches a crash (or silence) when etc/ cannot take server.key: one warning line."""
    c = sqlite_cluster
    published = os.path.join(c.etc, "server.key")
    os.unlink(published)
    os.mkdir(published)         # root may write anywhere: a folder in the way stands for it
    result = c.run("hq-dbadmin", "--add-standard-entries")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot publish the server's public key" in lines[0], lines


def test_adduser_key_file_errors_are_one_line(sqlite_cluster):
    """Catches the misleading 'Invalid certificate file' (and tracebacks) of adduser: a
    missing or keyless file is named with the reason; '-' reads the key from stdin."""
    c = sqlite_cluster
    missing = os.path.join(c.root, "nope.key")
    result = c.run("hq-admin", "adduser", "bob", f"--key={missing}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"hq-admin: cannot read {missing}: no such file or "
                                     "directory (the key is public: ask bob for a copy of "
                                     "their $HQ_HOME/keys/user.key, or pipe it into --key=-) "
                                     "[CONFIG_ERROR]")
    junk = os.path.join(c.root, "junk.key")
    with open(junk, "w") as handle:
        handle.write("public-key = \"\x1b[2Jnot a key\"\n")
    result = c.run("hq-admin", "adduser", "bob", f"--key={junk}")
    assert result.returncode == 1 and "holds no CURVE public key" in result.stderr
    home = bob_env(c)["HQ_HOME"]
    public = security.ensure_keypair(home, security.USER_CERT)[0].decode()
    with open(security.cert_paths(home, security.USER_CERT)[0]) as handle:
        result = c.run("hq-admin", "adduser", "bob", "--key=-", "--json", input=handle.read())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["key"] == public


def test_no_server_key_anywhere_is_one_clear_line(sqlite_cluster):
    """Catches a hang or traceback when no server key can be found: one line saying where
    it looked and how the admin publishes it."""
    c = sqlite_cluster
    os.unlink(os.path.join(c.etc, "server.key"))
    env = dict(c.env, HQ_HOME=os.path.join(c.root, "lost"))
    result = c.run("hq-client", "status", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no hq-server public key at" in lines[0]
    assert "etc/server.key" in lines[0] and "hq-dbadmin --add-standard-entries" in lines[0]


def test_a_disabled_user_keeps_their_key_across_a_restart(sqlite_cluster):
    """Issue 14: catches the ZAP key set made of enabled users only (security.user_keys): after
    a server restart a disabled user's key was refused, so their agent could not report the
    job it ran and every request of theirs was PERMISSION_DENIED for an unregistered key.
    Disabled, bob cannot submit, but his other requests work and his agent connects again
    and reports his running job. Checked with the `enabled` filter put back: bob's `list`
    fails with the adduser hint and his job never ends."""
    c = sqlite_cluster
    env = bob_env(c)
    bob_key = security.cert_paths(env["HQ_HOME"], security.USER_CERT)[0]
    security.ensure_keypair(env["HQ_HOME"], security.USER_CERT)
    go = os.path.join(c.root, "go")
    try:
        c.run("hq-admin", "adduser", "bob", f"--key={bob_key}", check=True)
        job = submit(c, f"while [ ! -e {go} ]; do sleep 0.05; done", env=env)
        wait_until(lambda: details(c, job, env)["state"] == "running", 20,
                   message="bob's job to run")
        c.run("hq-admin", "disableuser:bob", check=True)
        c.stop_server()
        c.start_server()
        listed = c.run("hq-client", "list", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert [j["id"] for j in json.loads(listed.stdout)] == [job]
        refused = c.run("hq-submit", "true", env=env)
        assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr
        assert "adduser" not in refused.stderr, "refused as disabled, not for the key"
        open(go, "w").close()
        wait_until(lambda: details(c, job, env)["state"] == "done", 30,
                   message="bob's agent to report the end of his job after the restart")
    finally:
        stop_user_server(env["HQ_HOME"])
