"""CURVE keys and the ZAP handler: who may talk to hq-server over TCP, and as which user.

Keys are zmq.auth certificates in $HQ_HOME/keys/ (server.key*, user.key*; secrets mode 0600).
"""

import logging
import os

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from hq.errors import CONFIG_ERROR, HQError

log = logging.getLogger("hq.security")

SERVER_CERT = "server"
USER_CERT = "user"


def keys_dir(home):
    path = os.path.join(home, "keys")
    os.makedirs(path, mode=0o700, exist_ok=True)
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
        os.chmod(secret_path, 0o600)
        log.info("created CURVE keypair %s", secret_path)
    return load_keypair(secret_path)


def load_keypair(secret_path):
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
    except (OSError, ValueError) as exc:
        raise HQError(CONFIG_ERROR, f"cannot read key {secret_path}: {exc}") from None
    if secret is None:
        raise HQError(CONFIG_ERROR, f"{secret_path} holds no secret key")
    return public, secret


def read_public_key(path):
    """The z85 public key in a certificate file (public or secret)."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise HQError(CONFIG_ERROR, f"cannot read public key {path}: {exc}") from None
    if public is None or len(public) != 40:
        raise HQError(CONFIG_ERROR, f"{path} holds no CURVE public key")
    return public


def server_key_path(settings, home):
    """Where clients find hq-server's public key: HQ_SERVER_KEY, [security] server_key, or
    the server's own $HQ_HOME/keys/server.key (a shared home makes that the same file)."""
    path = os.environ.get("HQ_SERVER_KEY") or settings.server_key
    if path:
        return os.path.join(settings.etc, os.path.expanduser(path))
    return cert_paths(home, SERVER_CERT)[0]


def server_public_key(settings, home):
    path = server_key_path(settings, home)
    if not os.path.exists(path):
        raise HQError(CONFIG_ERROR, f"no hq-server public key at {path}: copy the server's "
                      "keys/server.key there, or name it in etc/hq.cfg [security] server_key")
    return read_public_key(path)


def make_server_socket(socket, public, secret):
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True


def make_client_socket(socket, server_public, public, secret):
    socket.curve_serverkey = server_public
    socket.curve_publickey = public
    socket.curve_secretkey = secret


class KeyAuthenticator(ThreadAuthenticator):
    """ZAP handler in a thread: accepts registered public keys and names the connection's
    User-Id after the key's user. `keys` (z85 bytes -> user) is replaced whole on change."""

    def __init__(self, context, keys):
        super().__init__(context, log=log)
        self.keys = dict(keys)

    def callback(self, domain, key):
        user = self.keys.get(key)
        if user is None:
            log.warning("refused connection with unregistered key %s", key.decode()[:12])
        return user is not None

    def curve_user_id(self, client_public_key):
        return self.keys.get(zmq.utils.z85.encode(client_public_key), "")

    def set_keys(self, keys):
        self.keys = dict(keys)


def start_authenticator(context, keys):
    auth = KeyAuthenticator(context, keys)
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=auth)
    return auth


def user_keys(users):
    """{z85 public key (bytes): user} of the enabled users that have a key."""
    return {info["key"].encode(): name for name, info in users.items()
            if info.get("key") and info.get("enabled")}


def register_local_user(store, home, user):
    """Make the server keypair, and register `user` with the user key of this HQ_HOME unless
    the user already has a key (which hq-admin adduser set: it is kept, with a warning)."""
    ensure_keypair(home, SERVER_CERT)
    public = ensure_keypair(home, USER_CERT)[0].decode()
    known = store.load_users().get(user)
    if known and known["public_key"] and known["public_key"] != public:
        log.warning("user %s is registered with another key than %s: kept", user,
                    cert_paths(home, USER_CERT)[0])
        return
    store.set_user_key(user, public, ["USER", "ADMIN"])
