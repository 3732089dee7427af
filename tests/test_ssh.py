"""Remote agents over ssh (paramiko) against a real OpenSSH sshd on a loopback port: a job for
the ssh host runs there; unknown and changed host keys are refused; an unreachable address is
reported in lscluster; every value reaches the remote shell quoted."""

import configparser
import json
import os
import signal
import socket
import subprocess
import types

import pytest

from hq import config
from hq.user import launch
from tests.helpers import Cluster, free_port, pid_alive, unavailable, wait_until

SSHD = "/usr/sbin/sshd"


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (path.parent / (path.name + ".pub")).read_text().split()[:2]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sshd(tmp_path):
    """sshd -D on a free loopback port, a host key and a user key of its own; the 'user home'
    holds .ssh/id_ed25519 and an empty known_hosts."""
    if not os.path.exists(SSHD):
        reason = f"{SSHD} missing (apt-get install openssh-server)"
        unavailable(reason, "the ssh tests")
    d = tmp_path / "sshd"
    home = tmp_path / "userhome"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    d.mkdir()
    host_key = keygen(d / "host_key")
    user_key = keygen(home / ".ssh" / "id_ed25519")
    (d / "authorized_keys").write_text(" ".join(user_key) + "\n")
    (home / ".ssh" / "known_hosts").write_text("")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nLogLevel VERBOSE\n")
    os.makedirs("/run/sshd", exist_ok=True)     # privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(d / "log")])
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 10, message="sshd")
        assert proc.poll() is None, (d / "log").read_text()
        yield types.SimpleNamespace(port=port, home=home, host_key=host_key,
                                    known_hosts=home / ".ssh" / "known_hosts",
                                    log=d / "log", address=f"127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def trust(sshd, key=None):
    kind, blob = key or sshd.host_key
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")


def ssh_settings(sshd, policy="reject"):
    return config.Settings(ssh_known_hosts=str(sshd.known_hosts), ssh_unknown_host_keys=policy,
                           ssh_connect_timeout_s=10)


def test_host_with_its_own_port_is_remote():
    assert not config.is_local_address("127.0.0.1:2222")
    assert config.is_local_address("127.0.0.1:22") and config.is_local_address("localhost")
    assert config.split_address("[::1]:2200") == ("::1", 2200)


def test_host_keys_unknown_refused_changed_refused_accept_new_adds(sshd, tmp_path):
    os.environ["HOME"], old_home = str(sshd.home), os.environ.get("HOME")
    try:
        with pytest.raises(launch.LaunchError, match="not in known_hosts: refused"):
            launch.ssh_run("box", sshd.address, "true", ssh_settings(sshd))
        trust(sshd, keygen(tmp_path / "other_key"))
        with pytest.raises(launch.LaunchError, match="host key differs"):
            launch.ssh_run("box", sshd.address, "true", ssh_settings(sshd))
        sshd.known_hosts.write_text("")
        assert launch.ssh_run("box", sshd.address, "echo hi", ssh_settings(sshd, "accept-new")) \
            == "hi"
        assert f"[127.0.0.1]:{sshd.port}" in sshd.known_hosts.read_text()
        assert launch.ssh_run("box", sshd.address, "echo again", ssh_settings(sshd)) == "again"
        with pytest.raises(launch.LaunchError, match="cannot connect"):
            launch.ssh_run("gone", f"127.0.0.1:{free_port()}", "true", ssh_settings(sshd))
    finally:
        os.environ["HOME"] = old_home or ""


def test_remote_script_quotes_every_value(sshd, tmp_path):
    """Hostile host name and home path go through the real remote shell as plain text."""
    trust(sshd)
    os.environ["HOME"], old_home = str(sshd.home), os.environ.get("HOME")
    marker = tmp_path / "pwned"
    home = tmp_path / f"a home $(touch {marker}) `touch {marker}`"
    name = f"x'; touch {marker}; echo '"
    try:
        script = launch.remote_script(str(home), name, "tcp://127.0.0.1:1", "u", 1, 1, "",
                                      "/bin/echo")
        out = launch.ssh_run("box", sshd.address, script, ssh_settings(sshd))
        assert out.startswith("started ")
        log_file = launch.agent_files(str(home), name)[0]
        text = wait_until(lambda: os.path.exists(log_file) and open(log_file).read(), 10,
                          message="the echoed agent command line")
        assert "--host-name=" + name in text and not marker.exists()
    finally:
        os.environ["HOME"] = old_home or ""


SLOW_TIMEOUT_S = 30


@pytest.fixture
def ssh_cluster(sshd, tmp_path):
    """Hosts: this machine, sshbox (the sshd), deadbox (nothing listens), slowbox (accepts
    TCP, never says a word: ssh waits for its banner until the timeout)."""
    dead = free_port()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite",
                hosts=(("localhost", "1", "local", "127.0.0.1"),
                       ("sshbox", "2", "remote", sshd.address),
                       ("deadbox", "1", "remote", f"127.0.0.1:{dead}"),
                       ("slowbox", "1", "remote", f"127.0.0.1:{silent.getsockname()[1]}")))
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(c.etc, "hq.cfg"))
    cfg["ssh"]["connect_timeout_s"] = str(SLOW_TIMEOUT_S)
    with open(os.path.join(c.etc, "hq.cfg"), "w") as handle:
        cfg.write(handle)
    c.env["HOME"] = str(sshd.home)         # the user's ~/.ssh: key and known_hosts
    c.env.pop("SSH_AUTH_SOCK", None)
    try:
        with c.running():
            yield c
    finally:
        silent.close()
        pidfile = launch.agent_pidfile(c.home, "sshbox")
        from tests.helpers import kill_pid, read_pid
        kill_pid(read_pid(pidfile))


def lscluster(cluster):
    reply = json.loads(cluster.run("hq-admin", "lscluster", "--json", check=True).stdout)
    return {h["name"]: h for h in reply["hosts"]}


def test_job_for_ssh_host_runs_there_and_unreachable_host_is_reported(sshd, ssh_cluster):
    trust(sshd)
    out = os.path.join(ssh_cluster.root, "remote.out")
    result = ssh_cluster.run("hq-submit", "--host", "sshbox", "-o", out, "--wait",
                             "echo ran on $HQ_HOST", timeout=90)
    assert result.returncode == 0, result.stderr
    with open(out) as handle:
        assert handle.read() == "ran on sshbox\n"
    # slowbox's ssh try still hangs in its worker thread: it held up no other host
    assert lscluster(ssh_cluster)["slowbox"]["status_reason"] == ""
    assert "Accepted publickey for" in sshd.log.read_text()
    assert os.path.exists(os.path.join(ssh_cluster.home, "log", "agent-sshbox.log"))
    hosts = wait_until(lambda: (lambda h: h if h["deadbox"]["status_reason"] else None)(
        lscluster(ssh_cluster)), 30, message="deadbox's reason in lscluster")
    assert "cannot connect" in hosts["deadbox"]["status_reason"] and "retry in" in hosts["deadbox"]["status_reason"]
    assert hosts["sshbox"]["status"] == "up" and hosts["sshbox"]["status_reason"] == ""
    table = ssh_cluster.run("hq-admin", "lscluster", "--wide", check=True).stdout
    assert "REASON" in table.splitlines()[1] and "cannot connect" in table
    # slowbox's try still hangs: the user-server exits on SIGTERM all the same
    pid = ssh_cluster.user_server_pid()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 3, message="the user-server to exit")


def test_changed_host_key_is_refused_and_reported(sshd, ssh_cluster, tmp_path):
    trust(sshd, keygen(tmp_path / "impostor"))
    result = ssh_cluster.run("hq-submit", "--host", "sshbox", "true")
    assert result.returncode == 0, result.stderr
    hosts = wait_until(lambda: (lambda h: h if h["sshbox"]["status_reason"] else None)(
        lscluster(ssh_cluster)), 40, message="sshbox's reason in lscluster")
    assert "host key differs" in hosts["sshbox"]["status_reason"]
    assert hosts["sshbox"]["status"] != "up"
    assert "Accepted publickey" not in sshd.log.read_text()
