"""MySQL/MariaDB backend: PyMySQL connections from a DBUtils PooledDB.

The pool pings a connection before handing it out, so a restarted server is reconnected. A
group commit's statements travel together (multi-statements, see packets.py).
"""

import contextlib

import pymysql
from dbutils.pooled_db import PooledDB
from pymysql.constants import CLIENT

from hq.errors import DATABASE_ERROR, HQError
from hq.store.base import SqlStore
from hq.store.packets import ROWS_PER_STATEMENT, StatementBatch, StatementTooLarge

ACCESS_DENIED = (1045, 1698)   # ER_ACCESS_DENIED_ERROR, ..._NO_PASSWORD_ERROR: user, password
CONNECT_TIMEOUT_S = 2          # hq-server's loop may wait this long for a connection: well
                               # inside the agents' lease (3 heartbeats)
IO_TIMEOUT_S = 8               # ... and this long for a statement: below the shipped lease (11 s)
LONG_IO_TIMEOUT_S = 30         # a statement of the initial load or of an admin tool


class MysqlStore(SqlStore):
    dialect = "mysql"
    insert_ignore = "INSERT IGNORE"
    db_errors = (pymysql.MySQLError,)

    def __init__(self, config, create_database=False):
        self.config = config
        self._max_packet = None     # @@max_allowed_packet, read once for the pool
        if create_database:
            self._create_database()
        self._io_timeout = LONG_IO_TIMEOUT_S
        self._session = None        # statements every new connection runs first
        self._pool = self._make_pool()

    def serving(self):
        """hq-server has loaded and serves: from now on a statement times out after
        IO_TIMEOUT_S (loading and admin tools may take LONG_IO_TIMEOUT_S)."""
        self._io_timeout = IO_TIMEOUT_S
        self._pool.close()
        self._pool = self._make_pool()

    def end_idle_transactions(self, seconds):
        """MariaDB ends a transaction of ours left idle `seconds` (its client crashed or was
        cut off), so its row locks (the lease row) do not wait for wait_timeout (8 hours).
        False where the server has no such setting (MySQL)."""
        try:
            with self.transaction() as cur:
                cur.execute("SELECT @@idle_transaction_timeout")
        except HQError:
            return False
        self._session = [f"SET SESSION idle_transaction_timeout = {int(seconds)}"]
        self._pool.close()
        self._pool = self._make_pool()
        return True

    def _make_pool(self):
        c = self.config
        return PooledDB(
            creator=pymysql, mincached=0, maxconnections=c.pool_size, blocking=True,
            ping=1, setsession=self._session, host=c.host, port=c.port, user=c.user,
            password=c.password, database=c.database, charset="utf8mb4", autocommit=False,
            connect_timeout=CONNECT_TIMEOUT_S, read_timeout=self._io_timeout,
            write_timeout=self._io_timeout, client_flag=CLIENT.MULTI_STATEMENTS)

    def _create_database(self):
        c = self.config
        try:
            conn = pymysql.connect(host=c.host, port=c.port, user=c.user, password=c.password,
                                   connect_timeout=5, read_timeout=LONG_IO_TIMEOUT_S)
        except pymysql.MySQLError as exc:
            if _code(exc) in ACCESS_DENIED:
                raise HQError(DATABASE_ERROR, self.error_message(exc)) from None
            raise HQError(DATABASE_ERROR, f"cannot reach MySQL at {c.host}:{c.port}: "
                          f"{exc.args[-1] if exc.args else exc}") from None
        with conn:
            conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{c.database}` "
                                  "CHARACTER SET utf8mb4")

    def error_message(self, exc):
        if _code(exc) in ACCESS_DENIED:
            c = self.config
            where = getattr(c, "source", "") or "hq-db.cfg"
            return f"access denied for {c.user}@{c.host}: wrong password in {where}?"
        if _code(exc) == 0:     # a dead connection: the pool swallowed why it cannot reconnect
            exc = self._why_unreachable() or exc
        return super().error_message(exc)

    def reachable(self):
        """Whether a new connection reaches the database and answers (hq.server.dbprobe asks
        from its own thread while commits fail)."""
        c = self.config
        try:
            conn = pymysql.connect(host=c.host, port=c.port, user=c.user, password=c.password,
                                   database=c.database, connect_timeout=CONNECT_TIMEOUT_S,
                                   read_timeout=CONNECT_TIMEOUT_S)
            with conn:
                conn.cursor().execute("SELECT 1")
        except pymysql.MySQLError:
            return False
        return True

    def _why_unreachable(self):
        """The error of a new connection to the server (its refusal), or None if one can be
        made."""
        c = self.config
        try:
            pymysql.connect(host=c.host, port=c.port, user=c.user, password=c.password,
                            database=c.database, connect_timeout=CONNECT_TIMEOUT_S,
                            read_timeout=CONNECT_TIMEOUT_S).close()   # a hung server: no wait
        except pymysql.MySQLError as exc:
            return exc
        return None

    @contextlib.contextmanager
    def connection(self):
        conn = self._pool.connection()
        try:
            yield conn
        finally:
            conn.close()  # back to the pool

    @contextlib.contextmanager
    def upgrade_connection(self):
        """A connection of its own without the pool's read timeout: an ALTER TABLE that
        copies a large table (MySQL without instant ADD COLUMN) may take minutes."""
        c = self.config
        try:
            conn = pymysql.connect(host=c.host, port=c.port, user=c.user, password=c.password,
                                   database=c.database, charset="utf8mb4", autocommit=False,
                                   connect_timeout=5)
        except pymysql.MySQLError as exc:
            raise HQError(DATABASE_ERROR, self.error_message(exc)) from None
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def statements(self, cur):
        """A group commit's statements, gathered and sent in few round trips."""
        batch = StatementBatch(cur, self.max_allowed_packet(cur))
        yield batch
        batch.send()

    def max_allowed_packet(self, cur):
        if self._max_packet is None:
            cur.execute("SELECT @@max_allowed_packet")
            self._max_packet = int(cur.fetchone()[0])
        return self._max_packet

    def _update_group(self, cur, table, key, names, rows):
        """One UPDATE ... CASE statement per slice of rows: PyMySQL's executemany sends an
        UPDATE per row, each a round trip to the database."""
        if len(rows) == 1:
            return super()._update_group(cur, table, key, names, rows)
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            self._update_slice(cur, table, key, names, rows[start:start + ROWS_PER_STATEMENT])

    def _update_slice(self, cur, table, key, names, part):
        """An UPDATE ... CASE of `part`, halved until each statement fits a packet."""
        cases, args = [], []
        for index, name in enumerate(names):
            cases.append(f"{name} = CASE {key} " + "WHEN %s THEN %s " * len(part) + "END")
            for row in part:
                args += (row[-1], row[index])
        args += [row[-1] for row in part]
        try:
            cur.execute(f"UPDATE {table} SET {', '.join(cases)} WHERE {key} IN "
                        f"({', '.join(['%s'] * len(part))})", args)
        except StatementTooLarge:
            if len(part) == 1:
                raise
            half = len(part) // 2
            self._update_slice(cur, table, key, names, part[:half])
            self._update_slice(cur, table, key, names, part[half:])

    def sql(self, statement):
        return statement.replace("?", "%s")

    def close(self):
        self._pool.close()

    def describe(self):
        c = self.config
        return f"mysql://{c.user}@{c.host}:{c.port}/{c.database}"


def _code(exc):
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
