"""SQL shared by both backends: schema set-up, loading, group-commit `apply`, queries.

Statements use `?` placeholders; a backend converts them and supplies connections.
"""

import contextlib
import json
import secrets
import time

from hq.errors import DATABASE_ERROR, HQError
from hq.model import TERMINAL
from hq.store import migrations
from hq.store.retention import Retention
from hq.store.schema import SCHEMA_VERSION, TABLE_NAMES, ddl

TERMINAL_SQL = ", ".join(f"'{s}'" for s in sorted(TERMINAL))
WAITING_SQL = "'pending', 'held'"


class SqlStore(Retention):
    dialect = None
    insert_ignore = None
    db_errors = ()
    fence = None        # fence(cursor): the first statement of every writing transaction

    # -- backend hooks -------------------------------------------------------------------
    def connection(self):
        """Context manager yielding a DB-API connection (committed by the caller)."""
        raise NotImplementedError

    def upgrade_connection(self):
        """The connection a schema upgrade runs on (a backend may give one without timeouts)."""
        return self.connection()

    def sql(self, statement):
        return statement

    def close(self):
        pass

    # -- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, writes=False):
        """A cursor whose statements commit together, or roll back and raise DATABASE_ERROR.
        A transaction that `writes` starts with the fence (a standby's lease: hq/server/
        lease.py), so a server that lost the lease changes nothing."""
        try:
            with self.connection() as conn:
                cursor = conn.cursor()
                try:
                    if writes and self.fence is not None:
                        self.fence(cursor)
                    yield cursor
                    conn.commit()
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                    raise
                finally:
                    cursor.close()
        except self.db_errors as exc:
            raise HQError(DATABASE_ERROR, self.error_message(exc)) from None

    def error_message(self, exc):
        """One line for a database error (a backend may say more about known ones)."""
        return f"database error: {_one_line(exc)}"

    def query(self, statement, args=()):
        with self.transaction() as cur:
            cur.execute(self.sql(statement), args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def execute(self, statement, args=()):
        with self.transaction(writes=True) as cur:
            cur.execute(self.sql(statement), args)
            return cur.rowcount

    # -- schema --------------------------------------------------------------------------
    def create_tables(self):
        """Create the current schema (harmless when it exists); an older or newer one is
        refused: it needs `hq-dbadmin --upgrade`, or a newer hq."""
        with self.transaction() as cur:
            version = migrations.read_version(cur, self.dialect)
            if version is not None and version != SCHEMA_VERSION:
                raise migrations.version_problem(version, self.describe())
            for statement in ddl(self.dialect):
                cur.execute(statement)
            cur.execute("SELECT COUNT(*) FROM schema_version")
            if cur.fetchone()[0] == 0:
                cur.execute(self.sql("INSERT INTO schema_version (version) VALUES (?)"),
                            (SCHEMA_VERSION,))
                self._set_setting(cur, "database_id", secrets.token_hex(8))

    def database_id(self):
        """The identity of this database, made with its tables: records that agents and
        user-servers keep are matched only against the database that made them."""
        return self.get_setting("database_id")

    def drop_tables(self):
        with self.transaction() as cur:
            for table in reversed(TABLE_NAMES):
                cur.execute(f"DROP TABLE IF EXISTS {table}")

    def schema_version(self):
        """The schema version, or None when the tables do not exist (other errors raise)."""
        with self.transaction() as cur:
            return migrations.read_version(cur, self.dialect)

    def check_schema(self):
        """Refuse a database without hq's tables, or with an older or newer schema."""
        problem = migrations.version_problem(self.schema_version(), self.describe())
        if problem:
            raise problem

    def describe(self):
        return self.dialect

    # -- standard entries ----------------------------------------------------------------
    def add_users(self, users, now=None):
        """Insert users not yet known: [(name, roles)]; known users keep their database state."""
        now = now or time.time()
        rows = [(name, ",".join(roles), 1, None, now) for name, roles in users]
        with self.transaction(writes=True) as cur:
            cur.executemany(self.sql(
                f"{self.insert_ignore} INTO users (name, roles, enabled, public_key, created) "
                "VALUES (?, ?, ?, ?, ?)"), rows)

    def set_user_key(self, name, public_key, roles=("USER",)):
        """Register a CURVE public key (z85 text) for `name`, adding the user if unknown."""
        self.add_users([(name, list(roles))])
        self.execute("UPDATE users SET public_key = ? WHERE name = ?", (public_key, name))

    def set_user_roles(self, name, roles):
        self.execute("UPDATE users SET roles = ? WHERE name = ?", (",".join(roles), name))

    def add_hosts(self, entries):
        """Insert hosts from cluster.tab not yet known; refresh slots, groups and address of
        known ones. Administrative state is set only for new hosts: it survives restarts."""
        with self.transaction(writes=True) as cur:
            cur.execute("UPDATE hosts SET in_config = 0")
            for e in entries:
                cur.execute(self.sql(
                    "UPDATE hosts SET address = ?, max_slots = ?, host_groups = ?, in_config = 1 "
                    "WHERE name = ?"), (e.address, e.max_slots, ",".join(e.groups), e.name))
                if cur.rowcount == 0:
                    cur.execute(self.sql(
                        f"{self.insert_ignore} INTO hosts (name, address, max_slots, host_groups,"
                        " state, status, in_config) VALUES (?, ?, ?, ?, ?, 'unknown', 1)"),
                        (e.name, e.address, e.max_slots, ",".join(e.groups), e.state))

    def get_setting(self, name, default=None):
        rows = self.query("SELECT value FROM settings WHERE name = ?", (name,))
        return rows[0]["value"] if rows else default

    def _set_setting(self, cur, name, value):
        """Replace a setting (statements that need no row count: see packets.StatementBatch)."""
        cur.execute(self.sql("DELETE FROM settings WHERE name = ?"), (name,))
        cur.execute(self.sql("INSERT INTO settings (name, value) VALUES (?, ?)"), (name, value))

    # -- loading at server start ---------------------------------------------------------
    def load_users(self):
        return {r["name"]: r for r in self.query("SELECT * FROM users")}

    def load_hosts(self):
        return self.query("SELECT * FROM hosts ORDER BY name")

    def load_reservations(self):
        return self.query("SELECT * FROM reservations ORDER BY code, host")

    def load_live_jobs(self, limit_per_user=None):
        """Live jobs; with a limit, every dispatched and running job but only the first
        `limit_per_user` pending and held jobs of each user (the rest stay parked)."""
        if limit_per_user is None:
            return self.query(f"SELECT * FROM jobs WHERE state NOT IN ({TERMINAL_SQL}) "
                              "ORDER BY id")
        rows = self.query(f"SELECT * FROM jobs WHERE state NOT IN ({TERMINAL_SQL}) AND "
                          f"state NOT IN ({WAITING_SQL})")
        for user in self.query(f"SELECT DISTINCT user FROM jobs WHERE state IN ({WAITING_SQL})"):
            rows += self.parked_jobs(user["user"], 0, limit_per_user)
        return sorted(rows, key=lambda r: r["id"])

    def count_parked(self, user, batch, first_id):
        """Pending and held jobs of a batch from id `first_id` on (0 when it is None)."""
        if first_id is None:
            return 0
        return self.query(f"SELECT COUNT(*) AS n FROM jobs WHERE batch = ? AND user = ? AND "
                          f"id >= ? AND state IN ({WAITING_SQL})",
                          (batch, user, first_id))[0]["n"]

    def parked_jobs(self, user, first_id, limit):
        """Pending and held jobs of `user` from id `first_id` on, in id order."""
        return self.query(f"SELECT * FROM jobs WHERE id >= ? AND user = ? AND state IN "
                          f"({WAITING_SQL}) ORDER BY id LIMIT {int(limit)}", (first_id, user))

    def max_ids(self):
        job = self.query("SELECT MAX(id) AS m FROM jobs")[0]["m"] or 0
        batch = self.query("SELECT MAX(id) AS m FROM batches")[0]["m"] or 0
        return job, batch

    def batch_envs(self, batch_ids):
        if not batch_ids:
            return {}
        marks = ", ".join("?" * len(batch_ids))
        rows = self.query(f"SELECT id, env FROM batches WHERE id IN ({marks})", list(batch_ids))
        return {r["id"]: json.loads(r["env"] or "{}") for r in rows}

    # -- group commit --------------------------------------------------------------------
    def apply(self, *parts):
        """Write every `Writes` in `parts` in one transaction (group commit)."""
        parts = [w for w in parts if w]
        if not parts:
            return
        with self.transaction(writes=True) as cur:
            with self.statements(cur) as target:
                for writes in parts:
                    self._apply(target, writes)

    @contextlib.contextmanager
    def statements(self, cur):
        """Where a group commit's statements go: the cursor (a backend may gather them and
        send them together on leaving, see packets.StatementBatch)."""
        yield cur

    def _apply(self, cur, writes):
        for name, value in writes.settings.items():
            self._set_setting(cur, name, value)
        if writes.batches:
            self._insert_rows(cur, "batches", writes.batches)
        if writes.batch_growth:
            cur.executemany(self.sql("UPDATE batches SET size = size + ? WHERE id = ?"),
                            writes.batch_growth)
        if writes.jobs:
            self._insert_rows(cur, "jobs", writes.jobs)
        self._update_rows(cur, "jobs", "id", writes.job_updates)
        self._update_rows(cur, "hosts", "name", writes.host_updates)
        self._update_rows(cur, "users", "name", writes.user_updates)
        if writes.events:
            cur.executemany(self.sql(
                "INSERT INTO job_events (job_id, time, state, attempt, host, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)"), writes.events)
        for user, batch, first, when in writes.parked_cancels:
            where = (f"FROM jobs WHERE batch = ? AND user = ? AND id >= ? AND state IN "
                     f"({WAITING_SQL})")
            cur.execute(self.sql("INSERT INTO job_events (job_id, time, state, attempt, host, "
                                 f"detail) SELECT id, ?, 'cancelled', attempt, NULL, "
                                 f"'cancelled by user' {where}"), (when, batch, user, first))
            cur.execute(self.sql(f"UPDATE jobs SET state = 'cancelled', reason = 'cancelled', "
                                 f"finished = ? WHERE batch = ? AND user = ? AND id >= ? AND "
                                 f"state IN ({WAITING_SQL})"), (when, batch, user, first))
        if writes.metrics:
            cur.executemany(self.sql(
                "INSERT INTO host_metrics (host, time, load1, load5, load15, cpu_percent, "
                "mem_available, nprocs, foreign_load) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                writes.metrics)

        if writes.reservations:
            self._insert_rows(cur, "reservations", writes.reservations)
        if writes.reservations_deleted:
            cur.executemany(self.sql("DELETE FROM reservations WHERE code = ?"),
                            [(code,) for code in writes.reservations_deleted])
        if writes.prune_metrics_before is not None:
            cur.execute(self.sql("DELETE FROM host_metrics WHERE time < ?"),
                        (writes.prune_metrics_before,))

    def _insert_rows(self, cur, table, rows):
        columns = list(rows[0])
        marks = ", ".join("?" * len(columns))
        cur.executemany(self.sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"),
                        [tuple(row[c] for c in columns) for row in rows])

    def _update_rows(self, cur, table, key, updates):
        by_columns = {}
        for ident, columns in updates.items():
            names = tuple(sorted(columns))
            by_columns.setdefault(names, []).append(
                tuple(columns[n] for n in names) + (ident,))
        for names, rows in by_columns.items():
            self._update_group(cur, table, key, names, rows)

    def _update_group(self, cur, table, key, names, rows):
        """UPDATE rows (values of `names`, then the key) that set the same columns."""
        sets = ", ".join(f"{n} = ?" for n in names)
        cur.executemany(self.sql(f"UPDATE {table} SET {sets} WHERE {key} = ?"), rows)

    # -- queries -------------------------------------------------------------------------
    def get_jobs(self, ids, user=None):
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        args = list(ids)
        where = f"id IN ({marks})"
        if user is not None:
            where += " AND user = ?"
            args.append(user)
        return self.query(f"SELECT * FROM jobs WHERE {where} ORDER BY id", args)

    def list_jobs(self, user=None, states=None, batch=None, limit=None, newest_first=False,
                  cursor=None):
        """Jobs in id order (newest first if asked), from after (or before) id `cursor`."""
        where, args = ["1 = 1"], []
        if cursor is not None:
            where.append("id < ?" if newest_first else "id > ?")
            args.append(cursor)
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        if batch is not None:
            where.append("batch = ?")
            args.append(batch)
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id {order}"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql, args)

    def count_states(self, user=None, batch=None):
        where, args = [], []
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if batch is not None:
            where.append("batch = ?")
            args.append(batch)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.query(f"SELECT state, COUNT(*) AS n FROM jobs {clause} GROUP BY state", args)
        return {r["state"]: int(r["n"]) for r in rows}

    def batch_owner(self, batch):
        """The user who submitted batch `batch`, or None if there is no such batch."""
        rows = self.query("SELECT user FROM batches WHERE id = ?", (batch,))
        return rows[0]["user"] if rows else None
    def count_by_user(self, user=None):
        """{(user, state): number of jobs}, for every user or one."""
        where, args = ("WHERE user = ?", (user,)) if user is not None else ("", ())
        rows = self.query(f"SELECT user, state, COUNT(*) AS n FROM jobs {where} "
                          "GROUP BY user, state", args)
        return {(r["user"], r["state"]): int(r["n"]) for r in rows}

    def find_jobs(self, user, text, limit=0, before=None):
        """A user's jobs whose command, name, info text or group contains `text`, newest
        first (below id `before`)."""
        pattern = "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
        like = "LIKE ? ESCAPE '!'"
        older = "" if before is None else f" AND id < {int(before)}"
        sql = (f"SELECT * FROM jobs WHERE user = ?{older} AND (command {like} OR name {like} OR "
               f"info_text {like} OR group_req {like}) ORDER BY id DESC")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql, (user, pattern, pattern, pattern, pattern))

    def job_events(self, job_ids):
        if not job_ids:
            return []
        marks = ", ".join("?" * len(job_ids))
        return self.query(f"SELECT job_id, time, state, attempt, host, detail FROM job_events "
                          f"WHERE job_id IN ({marks}) ORDER BY id", list(job_ids))

    def recent_metrics(self, host, limit=10):
        return self.query("SELECT * FROM host_metrics WHERE host = ? ORDER BY time DESC LIMIT "
                          f"{int(limit)}", (host,))


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
