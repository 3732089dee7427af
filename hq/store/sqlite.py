"""SQLite backend (standard library, WAL mode): the embedded default, no server needed.

One connection per store; hq-server is its only writer, other tools read alongside (WAL).
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
            self._conn = sqlite3.connect(path, timeout=30, isolation_level="DEFERRED",
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise HQError(DATABASE_ERROR, f"cannot open SQLite database {path}: {exc}") from None

    @contextlib.contextmanager
    def connection(self):
        yield self._conn

    def close(self):
        self._conn.close()

    def describe(self):
        return f"sqlite:///{self.path}"
