"""MySQL/MariaDB backend: PyMySQL connections from a DBUtils PooledDB.

The pool pings a connection before handing it out, so a restarted server is reconnected. A
group commit's statements travel together (multi-statements): each round trip costs both sides
more than the rows it carries.
"""

import contextlib

import pymysql
from dbutils.pooled_db import PooledDB
from pymysql.constants import CLIENT

from hq.errors import DATABASE_ERROR, HQError
from hq.store.base import SqlStore

UNKNOWN_DATABASE = 1049
UPDATE_SLICE = 500          # rows per UPDATE ... CASE statement
BATCH_BYTES = 1 << 20       # statements sent in one round trip, up to about this size


class MysqlStore(SqlStore):
    dialect = "mysql"
    insert_ignore = "INSERT IGNORE"
    db_errors = (pymysql.MySQLError,)

    def __init__(self, config, create_database=False):
        self.config = config
        if create_database:
            self._create_database()
        self._pool = PooledDB(
            creator=pymysql, mincached=0, maxconnections=config.pool_size, blocking=True,
            ping=1, host=config.host, port=config.port, user=config.user,
            password=config.password, database=config.database, charset="utf8mb4",
            autocommit=False, connect_timeout=5, read_timeout=30, write_timeout=30,
            client_flag=CLIENT.MULTI_STATEMENTS)

    def _create_database(self):
        c = self.config
        try:
            conn = pymysql.connect(host=c.host, port=c.port, user=c.user, password=c.password,
                                   connect_timeout=5)
        except pymysql.MySQLError as exc:
            raise HQError(DATABASE_ERROR, f"cannot reach MySQL at {c.host}:{c.port}: "
                          f"{exc.args[-1] if exc.args else exc}") from None
        with conn:
            conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{c.database}` "
                                  "CHARACTER SET utf8mb4")

    @contextlib.contextmanager
    def connection(self):
        conn = self._pool.connection()
        try:
            yield conn
        finally:
            conn.close()  # back to the pool

    @contextlib.contextmanager
    def statements(self, cur):
        """A group commit's statements, gathered and sent in few round trips."""
        batch = StatementBatch(cur)
        yield batch
        batch.send()

    def _update_group(self, cur, table, key, names, rows):
        """One UPDATE ... CASE statement per slice of rows: PyMySQL's executemany sends an
        UPDATE per row, each a round trip to the database."""
        if len(rows) == 1:
            return super()._update_group(cur, table, key, names, rows)
        for start in range(0, len(rows), UPDATE_SLICE):
            part = rows[start:start + UPDATE_SLICE]
            cases, args = [], []
            for index, name in enumerate(names):
                cases.append(f"{name} = CASE {key} " + "WHEN %s THEN %s " * len(part) + "END")
                for row in part:
                    args += (row[-1], row[index])
            args += [row[-1] for row in part]
            cur.execute(f"UPDATE {table} SET {', '.join(cases)} WHERE {key} IN "
                        f"({', '.join(['%s'] * len(part))})", args)

    def sql(self, statement):
        return statement.replace("?", "%s")

    def close(self):
        self._pool.close()

    def describe(self):
        c = self.config
        return f"mysql://{c.user}@{c.host}:{c.port}/{c.database}"


class StatementBatch:
    """A cursor for SqlStore._apply that renders each statement (PyMySQL escapes the values,
    as it does for every query) and sends them joined, as multi-statements."""

    def __init__(self, cursor):
        self.cursor = cursor
        self.statements = []

    def execute(self, statement, args=()):
        self.statements.append(self.cursor.mogrify(statement, args))

    def executemany(self, statement, rows):
        """One multi-row INSERT (as PyMySQL's executemany makes), else a statement a row."""
        head, values = statement.split(" VALUES ", 1) if statement.startswith(
            "INSERT") else (None, None)
        if head is None or not values.startswith("(") or not values.endswith(")"):
            for row in rows:
                self.execute(statement, row)
            return
        if values == "(" + ", ".join(["%s"] * len(rows[0])) + ")":
            rendered = self._render_rows(rows)
        else:
            rendered = [self.cursor.mogrify(values, row) for row in rows]
        for start in range(0, len(rendered), UPDATE_SLICE):
            self.statements.append(f"{head} VALUES {','.join(rendered[start:start + UPDATE_SLICE])}")

    def _render_rows(self, rows):
        """Rows as SQL tuples, each distinct value escaped once: the rows of one submission
        share most of their values (options, paths, user)."""
        mogrify, memo = self.cursor.mogrify, {}
        rendered = []
        for row in rows:
            texts = []
            for value in row:
                key = (type(value), value)
                text = memo.get(key)
                if text is None:
                    text = memo[key] = mogrify("%s", (value,))
                texts.append(text)
            rendered.append(f"({','.join(texts)})")
        return rendered

    def send(self):
        chunk, size = [], 0
        for statement in self.statements + [None]:
            if statement is None or (chunk and size + len(statement) > BATCH_BYTES):
                if chunk:
                    self.cursor.execute(";\n".join(chunk))
                    while self.cursor.nextset():
                        pass
                chunk, size = [], 0
            if statement is not None:
                chunk.append(statement)
                size += len(statement)
        self.statements = []
