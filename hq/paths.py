"""Where the user-server's socket and pidfile live in $HQ_HOME/run (shared by the user-server
and its clients; a module of its own so that command lines import little)."""

import os


def socket_path(home):
    return os.path.join(home, "run", "user.sock")


def pid_path(home):
    return os.path.join(home, "run", "user-server.pid")


def stream_path(home):
    """The user-server's plain stream socket (hq.client.fast), beside the ZeroMQ one."""
    return os.path.join(home, "run", "user-stream.sock")
