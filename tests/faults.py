"""Helpers of the fault tests: real faults from tools/faults.py (tmpfs, filler, ledger) and a
private MariaDB, skipped with a printed reason unless CI=true, and waits that tolerate outages."""

import contextlib
import shutil

import pytest

from hq.errors import HQError
from tests.helpers import holds_for, unavailable, wait_until  # noqa: F401 (holds_for: re-exported)
from tools import faults
from tools.faults import fill, free, ledger_command, ledger_counts, ledger_lines

__all__ = ["fill", "free", "ledger_command", "ledger_counts", "ledger_lines",
           "need_mounts", "small_tmpfs", "home_on_tmpfs", "private_mysql", "settled",
           "wait_settled", "holds_for"]

TERMINAL = {"done", "failed", "cancelled", "lost"}


def need_mounts():
    """Skip (or fail under CI=true) where this process cannot mount a tmpfs."""
    why = faults.can_mount()
    if why:
        unavailable(why)


@contextlib.contextmanager
def small_tmpfs(size="8m", path=None):
    """A tmpfs of `size` at `path` (or a new directory) for the `with` body, unmounted after."""
    need_mounts()
    try:
        mount = faults.tmpfs(size, None if path is None else str(path))
        mounted = mount.__enter__()
    except faults.FaultError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield mounted
    finally:
        mount.__exit__(None, None, None)


@contextlib.contextmanager
def home_on_tmpfs(cluster, size="16m"):
    """The cluster's $HQ_HOME on a tmpfs of `size` for the `with` body (the cluster runs in
    it); the cluster's directory is removed after the unmount."""
    try:
        with small_tmpfs(size, cluster.home) as home:
            with cluster.running():
                yield home
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)


@contextlib.contextmanager
def private_mysql():
    """A throw-away private MariaDB (tools/private_mysql.py) that the test may stop."""
    from tools.private_mysql import PrivateMysql, available
    if not available():
        unavailable("mariadb-install-db/mariadbd not installed")
    db = PrivateMysql()
    try:
        db.install()
        db.start()
        yield db
    finally:
        db.close()


def settled(client, ids):
    """The jobs' details once every one of them has ended, else None (also while the server
    or its database cannot answer)."""
    try:
        jobs = client.details(ids)
    except HQError:
        return None
    return jobs if all(job["state"] in TERMINAL for job in jobs) else None


def wait_settled(client, ids, timeout=40):
    return wait_until(lambda: settled(client, ids), timeout, 0.2, f"jobs {ids} to end")



