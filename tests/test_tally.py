"""Job counts of status requests (hq/server/tally.py) on a core with a real SQLite database:
kept as jobs change, so a status scans no table, and counted again from the database when rows
changed that the core does not count one by one."""

from hq import protocol as p
from tests.core_harness import CoreHarness


def counts(h, user, **body):
    reply = h.request(user, p.STATUS, **body)
    return {state: n for state, n in reply["counts"].items() if n}


def database_counts(h, user=None):
    found = h.store.count_states(user)
    return {state: n for state, n in found.items() if n}


def test_status_counts_follow_every_change_without_a_scan_and_agree_with_the_database(tmp_path):
    """Catches counts that miss a submission (held or pending), a transition, another user's
    jobs in one's own status, or that disagree with the database after a run of changes;
    the admin's status counts everybody's."""
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        h.register("alice")
        ids = h.submit("alice", "true", "true", "sleep 9")
        held = h.submit("alice", "true", hold=True)
        h.submit("bob", "true", hold=True)
        h.report("alice", "finished", ids[0], 1, exit_code=0)
        h.report("alice", "finished", ids[1], 1, exit_code=3)
        h.request("alice", p.CANCEL, ids=held)
        expected = {"done": 1, "failed": 1, "cancelled": 1, "running": 1} if \
            h.state(ids[2]) == "running" else {"done": 1, "failed": 1, "cancelled": 1,
                                               "dispatched": 1}
        assert counts(h, "alice") == expected == database_counts(h, "alice")
        assert counts(h, "bob") == {"held": 1}
        status = h.request("root", p.ADMIN, command="status")
        assert {s: n for s, n in status["counts"].items() if n} == database_counts(h)
        batch = h.request("alice", p.LIST, limit=1)["jobs"][0]["batch"]     # the held one's
        assert counts(h, "alice", batch=batch) == {"cancelled": 1}
    finally:
        h.close()


def test_rows_changed_behind_the_core_are_counted_again(tmp_path):
    """Catches counts that keep jobs another process deleted (`hq-dbadmin --prune-before`)
    after a recount, and a cancelled parked batch not marking the counts stale."""
    h = CoreHarness(tmp_path, outside_load=False)
    try:
        h.core.parking.limit = 2
        h.register("alice")
        ids = h.submit("alice", "true", "true")
        for job in ids:
            h.report("alice", "finished", job, 1, exit_code=0)
        h.store.prune_finished(h.now + 1, 100)                 # as hq-dbadmin would
        assert counts(h, "alice") == {"done": 2}              # not seen yet ...
        h.core.tally.recount(h.store, h.now)
        assert counts(h, "alice") == {}                       # ... until counted again
        h.submit("alice", *["true"] * 5, hold=True)           # 3 of them parked
        batch = h.request("alice", p.LIST, limit=1)["jobs"][0]["batch"]
        assert counts(h, "alice") == {"held": 5} and not h.core.tally.stale
        h.request("alice", p.CANCEL, batch=batch)             # the parked ones in SQL
        assert h.core.tally.stale
        h.core.tally.recount(h.store, h.now)
        assert counts(h, "alice") == {"cancelled": 5} == database_counts(h, "alice")
    finally:
        h.close()
