"""CURVE keys, the ZAP handler and private state: who may talk to hq-server, as which user.

Keys are zmq.auth certificates in $HQ_HOME/keys/ (server.key*, user.key*; public 0644, secrets
0600); $HQ_HOME is private (0700); the server's public key is published as etc/server.key.
"""

import contextlib
import logging
import os

import zmq
import zmq.auth
from zmq.utils import z85

from hq import config
from hq.errors import CONFIG_ERROR, HQError
from hq.private import (ALWAYS_PRIVATE, PRIVATE_WHEN_MADE, _chmod_own, _mkdir,  # noqa: F401
                        open_private, private_home)

log = logging.getLogger("hq.security")

SERVER_CERT = "server"
USER_CERT = "user"
PUBLISHED_KEY = "server.key"          # in etc/: the server's public key, readable by all
def keys_dir(home):
    path = os.path.join(home, "keys")
    if not os.path.isdir(path):
        private_home(home)
    return path


def cert_paths(home, name):
    base = os.path.join(keys_dir(home), name)
    return base + ".key", base + ".key_secret"


def ensure_keypair(home, name):
    """(public, secret) z85 keys of `name` in $HQ_HOME/keys, created (secret 0600) if missing."""
    public_path, secret_path = cert_paths(home, name)
    if not os.path.exists(secret_path):
        old = os.umask(0o077)
        try:
            zmq.auth.create_certificates(keys_dir(home), name)
        finally:
            os.umask(old)
        log.info("created CURVE keypair %s", secret_path)
    _chmod_own(secret_path, 0o600)
    _chmod_own(public_path, 0o644)      # public: an admin may need to read it
    return load_keypair(secret_path)


def _read_certificate(path):
    """(public, secret or None) z85 keys of a zmq certificate file, or of a file holding just
    the 40 characters of a public key; HQError CONFIG_ERROR naming the file and why not."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 16)
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        raise HQError(CONFIG_ERROR, f"cannot read {path}: {why}") from None
    keys = {}
    for line in data.splitlines():
        name, sep, value = line.strip().partition(b"=")
        if sep and name.strip() in (b"public-key", b"secret-key"):
            keys[name.strip()] = value.strip(b" \t'\"")
    if not keys and len(data.strip()) == 40:
        keys[b"public-key"] = data.strip()
    public = keys.get(b"public-key")
    if public is None or not _is_z85_key(public):
        raise HQError(CONFIG_ERROR, f"{path} holds no CURVE public key")
    return public, keys.get(b"secret-key")


def _is_z85_key(key):
    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError, IndexError):
        return False


def load_keypair(secret_path):
    public, secret = _read_certificate(secret_path)
    if secret is None:
        raise HQError(CONFIG_ERROR, f"{secret_path} holds no secret key")
    return public, secret


def read_public_key(path):
    """The z85 public key in a certificate file (public or secret), or in a file that holds
    just the key; '-' reads standard input."""
    if path == "-":
        return _read_certificate("/dev/stdin")[0]
    return _read_certificate(path)[0]


def server_key_paths(settings, home):
    """Where clients look for hq-server's public key, in order: HQ_SERVER_KEY, [security]
    server_key (relative to etc/), etc/server.key (published by the server), and the
    server's own $HQ_HOME/keys/server.key (the admin, or a shared home)."""
    named = os.environ.get("HQ_SERVER_KEY") or settings.server_key
    if named:
        return [os.path.join(settings.etc, os.path.expanduser(named))]
    return [os.path.join(settings.etc, PUBLISHED_KEY), cert_paths(home, SERVER_CERT)[0]]


def server_key_path(settings, home):
    """The first of server_key_paths that exists (else the first)."""
    paths = server_key_paths(settings, home)
    return next((path for path in paths if os.path.exists(path)), paths[0])


def server_public_key(settings, home):
    paths = server_key_paths(settings, home)
    path = server_key_path(settings, home)
    if not os.path.exists(path):
        raise HQError(CONFIG_ERROR, f"no hq-server public key at {' or '.join(paths)}: the "
                      "admin publishes it by starting hq-server or 'hq-dbadmin "
                      "--add-standard-entries' (etc/ writable), else name a copy in "
                      "HQ_SERVER_KEY or etc/hq.cfg [security] server_key")
    return read_public_key(path)


def publish_server_key(home, etc):
    """Copy the server's public key to etc/server.key (0644) for every user; (path, None), or
    (None, why) when etc/ is not writable."""
    source = cert_paths(home, SERVER_CERT)[0]
    target = os.path.join(etc, PUBLISHED_KEY)
    with open(source, "rb") as handle:
        data = handle.read()
    try:
        with open(target, "rb") as handle:
            if handle.read() == data:
                _chmod_own(target, 0o644)
                return target, None
    except OSError:
        pass
    temporary = f"{target}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(data)
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return None, (f"cannot publish the server's public key as {target}: "
                      f"{(exc.strerror or str(exc)).lower()}; copy {source} there (mode "
                      "0644) or name a copy in etc/hq.cfg [security] server_key")
    log.info("published the server's public key as %s", target)
    return target, None


def make_server_socket(socket, public, secret):
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True


def make_client_socket(socket, server_public, public, secret):
    socket.curve_serverkey = server_public
    socket.curve_publickey = public
    socket.curve_secretkey = secret
def user_keys(users):
    """{z85 public key (bytes): user} of the users that have a key, enabled or not: a disabled
    user only cannot submit (the SUBMIT handler refuses it); their agents still connect and
    report, and their other requests work (a disabled admin can still act)."""
    return {info["key"].encode(): name for name, info in users.items() if info.get("key")}


def register_local_user(store, home, user, etc=None, warn=None):
    """Make the server keypair (published in etc/), and register `user` with the user key of
    this HQ_HOME unless the user already has a key (which hq-admin adduser set: it is kept,
    with a warning). Returns the published path or None; `warn` (default: the log) is told
    why the key could not be published."""
    private_home(home)
    ensure_keypair(home, SERVER_CERT)
    published, why = publish_server_key(home, etc or config.etc_dir())
    if why:
        (warn or log.warning)(why)
    public = ensure_keypair(home, USER_CERT)[0].decode()
    known = store.load_users().get(user)
    if known and known["public_key"] and known["public_key"] != public:
        log.warning("user %s is registered with another key than %s: kept", user,
                    cert_paths(home, USER_CERT)[0])
        return published
    store.set_user_key(user, public, ["USER", "ADMIN"])
    return published
