"""Test helpers: the cluster helpers of tools/cluster.py (one copy, shared with the benchmarks
and chaos), under the names the tests have always imported from here."""

import os
import time

from tools.cluster import (BIN, MYSQL, REPO, Cluster, MysqlDatabase, free_port, kill_pid,
                           pid_alive, read_pid, wait_until)

__all__ = ["BIN", "MYSQL", "REPO", "Cluster", "MysqlDatabase", "free_port", "kill_pid",
           "pid_alive", "read_pid", "wait_until", "holds_for"]


def holds_for(seconds, condition, message):
    """Assert that `condition()` stays true for `seconds` (polled): what must keep working
    while a fault lasts."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), message
        time.sleep(0.1)


def unavailable(reason, what="this test"):
    """Skip with a printed reason where a test's needs (root, sshd, MySQL...) are missing;
    under CI=true it must run, so fail instead."""
    import pytest
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: {what} must run)", pytrace=False)
    print(f"\nskipping {what}: {reason}")
    pytest.skip(reason)


def user_socket(cluster, user, **options):
    """A raw CURVE DEALER to the cluster's hq-server as `user`: a key made in a home of its
    own and registered with `hq-admin adduser` (the user must be in etc/users). `options`:
    socket options set before connecting (e.g. RCVHWM)."""
    import zmq
    from hq import security
    home = os.path.join(cluster.root, user)
    public, secret = security.ensure_keypair(home, security.USER_CERT)
    cluster.run("hq-admin", "adduser", user,
                f"--key={security.cert_paths(home, security.USER_CERT)[0]}", check=True)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    server_key = security.read_public_key(os.path.join(cluster.home, "keys", "server.key"))
    security.make_client_socket(sock, server_key, public, secret)
    sock.connect(f"tcp://127.0.0.1:{cluster.port}")
    return sock
