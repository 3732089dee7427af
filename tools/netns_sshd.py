"""OpenSSH for tools/netcluster.py: one sshd per host namespace (its own host key and, in a UTS
namespace, its own host name), the user's key authorized, host keys in the user's known_hosts."""

import os
import pwd
import socket
import subprocess
import time

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"


class User:
    """Whose ~/.ssh the cluster uses: the user behind sudo, else the current one ($HOME)."""

    def __init__(self):
        sudo_user = os.environ.get("SUDO_USER")
        if os.geteuid() == 0 and sudo_user and sudo_user != "root":
            entry = pwd.getpwnam(sudo_user)
            self.name, self.home, self.uid, self.gid = (sudo_user, entry.pw_dir, entry.pw_uid,
                                                        entry.pw_gid)
        else:
            entry = pwd.getpwuid(os.geteuid())
            self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid
            self.home = os.path.expanduser("~")
        self.ssh_dir = os.path.join(self.home, ".ssh")
        self.known_hosts = os.path.join(self.ssh_dir, "known_hosts")

    def own(self, path):
        os.chown(path, self.uid, self.gid)


def keygen(path, comment):
    """An ed25519 key pair at `path` (no passphrase); its public line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True, stdin=subprocess.DEVNULL)
    with open(path + ".pub") as handle:
        return handle.read().strip()


def user_public_keys(user):
    """The user's public keys, ~/.ssh/id_ed25519 made first if missing: what sshd accepts."""
    if not os.path.isdir(user.ssh_dir):
        os.makedirs(user.ssh_dir, mode=0o700)
        user.own(user.ssh_dir)
    key = os.path.join(user.ssh_dir, "id_ed25519")
    if not os.path.exists(key):
        keygen(key, f"{user.name}@hq-netcluster")
        user.own(key)
        user.own(key + ".pub")
    lines = []
    for name in sorted(os.listdir(user.ssh_dir)):
        if name.startswith("id_") and name.endswith(".pub"):
            with open(os.path.join(user.ssh_dir, name)) as handle:
                lines += [line.strip() for line in handle if line.strip()]
    return lines


def write_host_files(host_dir, address, authorized_keys):
    """Host key, sshd_config (listening on `address`:22 only): the host's public key fields."""
    os.makedirs(host_dir, mode=0o700, exist_ok=True)
    key = os.path.join(host_dir, "host_key")
    if not os.path.exists(key):
        keygen(key, "hq-netcluster host key")
    with open(key + ".pub") as handle:
        kind, blob = handle.read().split()[:2]
    with open(os.path.join(host_dir, "sshd_config"), "w") as handle:
        handle.write(
            f"ListenAddress {address}:22\nHostKey {key}\nPidFile {host_dir}/sshd.pid\n"
            f"AuthorizedKeysFile {authorized_keys}\nStrictModes no\nUsePAM no\nUseDNS no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPrintMotd no\nMaxStartups 50:30:100\n"
            "LogLevel VERBOSE\n")
    return kind, blob


def start_sshd(netns, host_name, host_dir):
    """sshd (daemonizing itself) in the namespace, in a UTS namespace named `host_name`."""
    os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
    config, log = os.path.join(host_dir, "sshd_config"), os.path.join(host_dir, "sshd.log")
    script = 'hostname "$1" && exec "$2" -f "$3" -E "$4"'
    result = subprocess.run(["ip", "netns", "exec", netns, "unshare", "--uts", "--", "sh", "-c",
                             script, "sh", host_name, SSHD, config, log],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"sshd for {host_name} did not start: {result.stderr.strip()}")


def wait_listening(address, port=22, timeout=15.0):
    """True once `address`:`port` accepts a connection (within `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return True
        time.sleep(0.05)
    return False


def marker(prefix):
    return f"hq-netcluster:{prefix}"


def add_known_hosts(user, entries, prefix):
    """One marked line per (address, kind, blob); earlier marked lines of `prefix` go first."""
    remove_known_hosts(user.known_hosts, prefix)
    lines = [f"{address} {kind} {blob} {marker(prefix)}\n" for address, kind, blob in entries]
    new = not os.path.exists(user.known_hosts)
    with open(user.known_hosts, "a") as handle:
        handle.writelines(lines)
    if new:
        user.own(user.known_hosts)


def remove_known_hosts(path, prefix):
    """Drop the lines this tool added for `prefix` (others stay as they are)."""
    try:
        with open(path) as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return
    keep = [line for line in lines if not line.rstrip().endswith(" " + marker(prefix))]
    if len(keep) != len(lines):
        with open(path + ".hq-tmp", "w") as handle:
            handle.writelines(keep)
        stat = os.stat(path)
        os.chown(path + ".hq-tmp", stat.st_uid, stat.st_gid)
        os.chmod(path + ".hq-tmp", stat.st_mode & 0o777)
        os.replace(path + ".hq-tmp", path)
