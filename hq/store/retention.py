"""Retention: delete old finished jobs (with their events and emptied batches) and old metrics
in small transactions, so hq-server or `hq-dbadmin --prune-before` can run them beside work.
"""

from hq.model import TERMINAL

TERMINAL_SQL = ", ".join(f"'{s}'" for s in sorted(TERMINAL))


class Retention:
    """Mixed into SqlStore (uses its `transaction` and `sql`)."""

    def prune_finished(self, before, limit, after_id=0):
        """Delete up to `limit` terminal jobs with ids above `after_id` that ended before
        `before` (seconds since the epoch), their job_events, and batches left with no jobs.
        A job whose end time is unknown (cancelled while running, no result since) counts as
        ended at its last event. Jobs a live job depends on (--after) stay. Returns counts:
        jobs, job_events, batches deleted; kept (needed by live jobs); scanned and last_id
        (call again with after_id=last_id while scanned == limit)."""
        ended = (f"state IN ({TERMINAL_SQL}) AND (finished < ? OR (finished IS NULL AND "
                 "submitted < ? AND NOT EXISTS (SELECT 1 FROM job_events e WHERE "
                 "e.job_id = jobs.id AND e.time >= ?)))")
        with self.transaction(writes=True) as cur:
            cur.execute(self.sql(f"SELECT id, batch FROM jobs WHERE id > ? AND {ended} "
                                 f"ORDER BY id LIMIT {int(limit)}"),
                        (after_id, before, before, before))
            rows = cur.fetchall()
            needed = self._needed_by_live(cur, {r[0] for r in rows}) if rows else set()
            ids = [r[0] for r in rows if r[0] not in needed]
            counts = {"jobs": 0, "job_events": 0, "batches": 0, "kept": len(needed),
                      "scanned": len(rows), "last_id": rows[-1][0] if rows else after_id}
            if ids:
                counts["job_events"] = self._delete_in(cur, "job_events", "job_id", ids)
                counts["jobs"] = self._delete_in(cur, "jobs", "id", ids)
                counts["batches"] = self._delete_empty_batches(
                    cur, sorted({r[1] for r in rows if r[0] not in needed}), before)
            return counts

    def prune_metrics(self, before, limit=10000):
        """Delete up to `limit` host_metrics rows older than `before`; returns how many."""
        with self.transaction() as cur:
            cur.execute(self.sql(f"SELECT id FROM host_metrics WHERE time < ? ORDER BY id "
                                 f"LIMIT {int(limit)}"), (before,))
            ids = [r[0] for r in cur.fetchall()]
            return self._delete_in(cur, "host_metrics", "id", ids) if ids else 0

    def _needed_by_live(self, cur, candidates):
        """Which of `candidates` a live job still depends on."""
        cur.execute(f"SELECT depends_on FROM jobs WHERE state NOT IN ({TERMINAL_SQL}) "
                    "AND depends_on <> ''")
        needed = set()
        for (depends_on,) in cur.fetchall():
            needed.update(int(d) for d in depends_on.split(",") if d.strip())
        return needed & candidates

    def _delete_in(self, cur, table, key, values):
        marks = ", ".join("?" * len(values))
        cur.execute(self.sql(f"DELETE FROM {table} WHERE {key} IN ({marks})"), values)
        return cur.rowcount

    def _delete_empty_batches(self, cur, batches, before):
        """Batches of the deleted jobs that have none left and were submitted before `before`
        (a batch still being streamed in is younger than any sensible retention)."""
        marks = ", ".join("?" * len(batches))
        cur.execute(self.sql(f"DELETE FROM batches WHERE id IN ({marks}) AND submitted < ? AND "
                             "NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.batch = batches.id)"),
                    [*batches, before])
        return cur.rowcount
