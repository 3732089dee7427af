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
