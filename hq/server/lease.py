"""The active hq-server's lease in MySQL: one row with a term number, renewed every second on
the database's clock; a standby takes it when it expires, and every group commit checks it.

Why a row and not GET_LOCK: a named lock belongs to one connection (a pool hands out several,
and a crashed host's connection keeps the lock until MySQL notices), while a row with a term
is read inside the commit's own transaction (see docs/architecture.md, "Standby server").
"""

import logging
import threading
import time

import pymysql

from hq.errors import NOT_ACTIVE, HQError

log = logging.getLogger("hq.server.lease")

RENEW_S = 1.0          # the active server renews this often
LOCK_WAIT_S = 2        # a takeover waits at most this long for the row (then tries again)
NOW = "UNIX_TIMESTAMP(NOW(6))"


class ServerLease:
    """This server's claim on `server_lease` (id 1). `held()` is false from the moment the
    lease may have run out (monotonic clock, from when the last renewal was sent)."""

    def __init__(self, store, holder, lease_s, renew_s=RENEW_S):
        self.store, self.holder, self.lease_s, self.renew_s = store, holder, lease_s, renew_s
        self.term = None
        self.valid_until = 0.0      # time.monotonic() until which the lease surely holds
        self.lost = None            # why the lease was lost, once it was
        self.seen = None            # (term, holder, seconds left) of the last look at the row
        self._conn = None
        self._stop = threading.Event()
        self._thread = None

    # -- one connection of its own (autocommit, short timeouts) -----------------------------
    def _cursor(self):
        if self._conn is None:
            c = self.store.config
            self._conn = pymysql.connect(
                host=c.host, port=c.port, user=c.user, password=c.password, database=c.database,
                autocommit=True, connect_timeout=2, read_timeout=LOCK_WAIT_S + 2,
                write_timeout=2)
            self._conn.cursor().execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}")
        return self._conn.cursor()

    def _drop_connection(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:   # noqa: BLE001 - already broken
                pass
            self._conn = None

    # -- taking the lease --------------------------------------------------------------------
    def try_acquire(self):
        """Take the lease if nobody holds it (no row, or its time is over on the database's
        clock): the term goes up by one. False while another server holds it."""
        sent = time.monotonic()
        try:
            cur = self._cursor()
            cur.execute(f"SELECT term, holder, expires_at - {NOW} FROM server_lease WHERE id = 1")
            row = cur.fetchone()
            if row is None:
                cur.execute("INSERT IGNORE INTO server_lease (id, term, holder, expires_at) "
                            "VALUES (1, 0, '', 0)")
                row = (0, "", -1.0)
            self.seen = row
            if row[2] > 0:
                return False
            cur.execute("BEGIN")
            cur.execute(f"UPDATE server_lease SET term = term + 1, holder = %s, expires_at = "
                        f"{NOW} + %s WHERE id = 1 AND term = %s AND expires_at < {NOW}",
                        (self.holder, self.lease_s, row[0]))
            taken = cur.rowcount == 1
            cur.execute("COMMIT")
        except pymysql.MySQLError as exc:
            log.warning("lease: cannot take it yet: %s", " ".join(str(exc).split())[:200])
            self._drop_connection()
            return False
        if taken:
            self.term, self.valid_until = row[0] + 1, sent + self.lease_s
            log.info("lease: term %d taken by %s (previous holder %r)", self.term, self.holder,
                     row[1])
        return taken

    # -- keeping it --------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(LOCK_WAIT_S + 3)

    def release(self):
        """A clean stop: the lease ends now, so a standby takes over at its next look."""
        try:
            self._cursor().execute("UPDATE server_lease SET expires_at = 0 WHERE id = 1 AND "
                                   "term = %s", (self.term,))
            log.info("lease: term %s released", self.term)
        except pymysql.MySQLError as exc:
            log.warning("lease: cannot release term %s: %s", self.term, exc)
        self._drop_connection()

    def _renew_loop(self):
        while not self._stop.wait(self.renew_s) and self.lost is None:
            self.renew()

    def renew(self):
        sent = time.monotonic()
        try:
            cur = self._cursor()
            cur.execute(f"UPDATE server_lease SET expires_at = {NOW} + %s WHERE id = 1 AND "
                        "term = %s", (self.lease_s, self.term))
            renewed = cur.rowcount == 1
        except pymysql.MySQLError as exc:
            log.warning("lease: renewal of term %s failed (%.1fs left): %s", self.term,
                        self.valid_until - time.monotonic(), " ".join(str(exc).split())[:200])
            self._drop_connection()
            return
        if renewed:
            self.valid_until = sent + self.lease_s
        else:
            self.lost = f"term {self.term} is over: another hq-server took the lease"

    def held(self):
        return self.lost is None and time.monotonic() < self.valid_until

    def why_not_held(self):
        return self.lost or (f"the lease of term {self.term} could not be renewed within "
                             f"{self.lease_s:g}s (database unreachable?)")

    def check(self, cur):
        """Fencing, the first statement of every group commit: the row is read with a shared
        lock (a takeover waits for this commit), and a changed term refuses the commit."""
        cur.execute("SELECT term FROM server_lease WHERE id = 1 LOCK IN SHARE MODE")
        row = cur.fetchone()
        if row is None or row[0] != self.term:
            self.lost = f"term {self.term} is over: the database holds term " \
                        f"{row[0] if row else None}"
            raise HQError(NOT_ACTIVE, f"commit refused: {self.lost}")
