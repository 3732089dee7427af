"""Schema upgrades: numbered steps that bring any earlier hq schema to SCHEMA_VERSION in place.

Our own short list, not a migration library: yoyo-migrations (raw SQL on SQLite and MySQL) keeps
its own tables beside `schema_version`, hq's public record of the version, and runs plain SQL
that fails when re-run, while hq's steps must look first: databases marked 1 or 2 exist in more
than one shape in hq's history, and MySQL commits each ALTER by itself, so a crash can leave a
step half done. Each step adds only what the catalogue says is missing; the version row moves
after each step. On SQLite the whole upgrade is one transaction; on MySQL a re-run finishes it.
"""

import contextlib
import secrets
from collections import namedtuple

from hq.errors import DATABASE_ERROR, HQError
from hq.store import introspect
from hq.store.schema import LEASE_COLUMNS, SCHEMA_VERSION, column_sql, create_table_sql

Column = namedtuple("Column", "table definition")    # NOT NULL columns start as '' (text only)
Index = namedtuple("Index", "table name columns")
DropIndex = namedtuple("DropIndex", "table name")     # one a new index makes redundant
Table = namedtuple("Table", "name columns key")
Setting = namedtuple("Setting", "name make")

STEPS = {
    2: [Column("hosts", "foreign_load REAL"), Column("jobs", "depends_on TEXT NOT NULL"),
        Column("jobs", "reservation STR64 NOT NULL"), Column("host_metrics", "foreign_load REAL"),
        Index("host_metrics", "host_metrics_time", "time"),
        Table("reservations", ["code STR64 NOT NULL", "host STR255 NOT NULL",
                               "slots INT NOT NULL", "user STR64 NOT NULL",
                               "created REAL NOT NULL"], "code, host")],
    3: [Column("jobs", "entry TEXT NOT NULL")],
    4: [Column("jobs", "script TEXT NOT NULL"), Column("jobs", "array_index INT"),
        Column("batches", "umask INT"), Column("reservations", "users TEXT"),
        Setting("database_id", lambda: secrets.token_hex(8))],
    5: [Index("jobs", "jobs_user_id", "user, id"),     # a listing page without a sort of all
        Table("server_lease", LEASE_COLUMNS, "id")],
    6: [Index("jobs", "jobs_batch_state", "batch, state"),   # a batch's status: index only
        DropIndex("jobs", "jobs_batch")],
}


def upgrade(store, steps=STEPS, target=SCHEMA_VERSION, say=lambda text: None):
    """Bring the store's schema to `target`; returns (version before, version after)."""
    with store.upgrade_connection() as conn:
        cur, current = conn.cursor(), None
        try:
            with _exclusive(store, cur):
                before = current = read_version(cur, store.dialect)
                problem = version_problem(current, store.describe(), target, upgrading=True)
                if problem:
                    raise problem
                for number in range(current + 1, target + 1):
                    apply_step(cur, store.dialect, steps[number])
                    cur.execute(store.sql("UPDATE schema_version SET version = ?"), (number,))
                    if store.dialect == "mysql":
                        conn.commit()       # its DDL is committed already: record the step
                    current = number
                    say(f"schema {number - 1} -> {number}")
                conn.commit()
                return before, current
        except store.db_errors as exc:
            _rollback(conn)
            where = ("nothing changed" if store.dialect == "sqlite" or current is None else
                     f"stopped before schema {current + 1}; run it again")
            raise HQError(DATABASE_ERROR, f"upgrade failed ({where}): "
                          f"{' '.join(str(exc).split())[:300]}") from None
        except BaseException:
            _rollback(conn)         # e.g. a newer schema: SQLite's write lock goes too
            raise
        finally:
            cur.close()


def _rollback(conn):
    with contextlib.suppress(Exception):
        conn.rollback()


@contextlib.contextmanager
def _exclusive(store, cur):
    """One upgrade at a time, and no other writer meanwhile on SQLite (its write lock)."""
    if store.dialect == "sqlite":
        cur.execute("BEGIN IMMEDIATE")
        yield
        return
    name = f"hq-upgrade-{store.config.database}"
    cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
    if cur.fetchone()[0] != 1:
        raise HQError(DATABASE_ERROR, f"another upgrade of {store.describe()} is running")
    try:
        yield
    finally:
        cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
        cur.fetchall()


def read_version(cur, dialect):
    """The schema version, or None when there is no `schema_version` table."""
    if "schema_version" not in introspect.tables(cur, dialect):
        return None
    cur.execute("SELECT MAX(version) FROM schema_version")
    return cur.fetchone()[0]


def version_problem(version, where, target=SCHEMA_VERSION, upgrading=False):
    """The error to raise for a database at `version`, or None when it is `target`."""
    if version is None:
        return HQError(DATABASE_ERROR, f"no hq tables in {where}: "
                       "run 'hq-dbadmin --create-tables --add-standard-entries'")
    if version > target:
        return HQError(DATABASE_ERROR, f"schema version {version} in {where} is newer than "
                       f"this hq's ({target}): use the hq that wrote it, or a newer one")
    if version < target and not upgrading:
        return HQError(DATABASE_ERROR, f"schema version {version} in {where} is older than "
                       f"this hq's ({target}): stop hq-server, then run "
                       "'hq-dbadmin --upgrade --backup=FILE'")
    return None


def apply_step(cur, dialect, ops):
    """Add what `ops` name and the database lacks: tables, columns (one ALTER per table on
    MySQL), indexes, settings; drop the indexes they replace."""
    present = introspect.tables(cur, dialect)
    for op in ops:
        if isinstance(op, Table) and op.name not in present:
            cur.execute(create_table_sql(op.name, op.columns, op.key, dialect))
    missing = {}
    for op in ops:
        if isinstance(op, Column):
            if op.definition.split()[0] not in introspect.columns(cur, dialect, op.table):
                missing.setdefault(op.table, []).append(_add_column(op.definition, dialect))
    for table, adds in missing.items():
        statements = [", ".join(adds)] if dialect == "mysql" else adds
        for add in statements:
            cur.execute(f"ALTER TABLE {table} {add}")
    for op in ops:
        if isinstance(op, Index) and op.name not in introspect.indexes(cur, dialect, op.table):
            cur.execute(f"CREATE INDEX {op.name} ON {op.table} ({op.columns})")
        if isinstance(op, DropIndex) and op.name in introspect.indexes(cur, dialect, op.table):
            cur.execute(f"DROP INDEX {op.name}" + (f" ON {op.table}" if dialect == "mysql"
                                                    else ""))
        if isinstance(op, Setting):
            _ensure_setting(cur, dialect, op)


def _add_column(definition, dialect):
    """SQLite needs a default to add a NOT NULL column; MySQL fills existing rows with the
    type's implicit default ('' for text) and keeps the column without one, as a new table."""
    sql = "ADD COLUMN " + column_sql(definition, dialect)
    if dialect == "sqlite" and definition.endswith("NOT NULL"):
        sql += " DEFAULT ''"
    return sql


def _ensure_setting(cur, dialect, op):
    mark = "?" if dialect == "sqlite" else "%s"
    cur.execute(f"SELECT COUNT(*) FROM settings WHERE name = {mark}", (op.name,))
    if cur.fetchone()[0] == 0:
        cur.execute(f"INSERT INTO settings (name, value) VALUES ({mark}, {mark})",
                    (op.name, op.make()))

