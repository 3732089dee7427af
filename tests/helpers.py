"""Test helpers: the cluster helpers of tools/cluster.py (one copy, shared with the benchmarks
and chaos), under the names the tests have always imported from here."""

from tools.cluster import (BIN, MYSQL, REPO, Cluster, MysqlDatabase, free_port, kill_pid,
                           pid_alive, read_pid, wait_until)

__all__ = ["BIN", "MYSQL", "REPO", "Cluster", "MysqlDatabase", "free_port", "kill_pid",
           "pid_alive", "read_pid", "wait_until"]
