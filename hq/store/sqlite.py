"""SQLite backend (standard library, WAL mode): the embedded default, no server needed.

One connection per store; hq-server is its only writer, other tools read alongside (WAL).
A new database file is made 0600 (its -wal and -shm files take the same mode from SQLite).
"""

import contextlib
import os
import sqlite3

from hq.errors import DATABASE_ERROR, HQError
from hq.store.base import SqlStore


class SqliteStore(SqlStore):
    dialect = "sqlite"
    insert_ignore = "INSERT OR IGNORE"
    db_errors = (sqlite3.Error,)

    def __init__(self, path, create_dir=True):
        self.path = path
        if create_dir and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            _create_private(path)
            self._conn = sqlite3.connect(path, timeout=30, isolation_level="DEFERRED",
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as exc:
            raise HQError(DATABASE_ERROR, f"cannot open SQLite database {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None

    @contextlib.contextmanager
    def connection(self):
        yield self._conn

    def close(self):
        self._conn.close()

    def describe(self):
        return f"sqlite:///{self.path}"


def _create_private(path):
    """Make the database file 0600 before SQLite creates it with the umask's mode."""
    if path == ":memory:" or os.path.exists(path):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
