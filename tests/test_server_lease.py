"""The standby's lease on real MySQL (hq/server/lease.py): one holder at a time, a takeover
only once the lease is over on the database's clock, and term fencing of group commits."""

import pytest

from hq.errors import HQError
from hq.server.lease import ServerLease
from hq.store.writes import Writes
from tests.helpers import holds_for, wait_until
from tests.test_store import new_job


def one_job(job_id):
    w = Writes()
    w.batches.append({"id": job_id, "user": "alice", "submitted": 1.0, "size": 1, "env": "{}",
                      "umask": None})
    w.jobs.append(new_job(job_id, batch=job_id))
    return w


def test_a_deposed_server_commits_nothing_and_knows_it(mysql_store):
    """Catches a standby taking a lease still held, a takeover without a new term, and an old
    server whose group commit still lands after the takeover (two writers of the jobs)."""
    old = ServerLease(mysql_store, "old", lease_s=2)
    new = ServerLease(mysql_store, "new", lease_s=2)
    assert old.try_acquire() and old.term == 1 and old.held()
    assert not new.try_acquire() and new.seen[1] == "old"
    mysql_store.fence = old.check
    mysql_store.apply(one_job(1))               # the holder commits
    old.renew()
    assert old.held() and not new.try_acquire()
    # the old server goes silent: the standby takes over once the lease is over, not before
    assert wait_until(new.try_acquire, 6, 0.2, "the standby to take the lease") and new.term == 2
    with pytest.raises(HQError) as refused:
        mysql_store.apply(one_job(2))           # the old server's next commit
    assert refused.value.code == "NOT_ACTIVE" and "term 1 is over" in refused.value.message
    assert [j["id"] for j in mysql_store.get_jobs([1, 2])] == [1]
    assert old.lost and not old.held()
    with pytest.raises(HQError, match="NOT_ACTIVE|term 1 is over"):
        mysql_store.add_hosts([])               # an admin write (reload) is fenced too
    old.lost = None
    old.renew()                                  # a renewal cannot bring the old term back
    assert old.lost and not old.held()
    mysql_store.fence = new.check
    mysql_store.apply(one_job(2))                # the new holder commits
    assert [j["id"] for j in mysql_store.get_jobs([1, 2])] == [1, 2]


def test_renewals_keep_the_lease(mysql_store):
    """Catches a renewal that does not move the expiry on (the standby would take over from a
    live server), and a clean stop that leaves the standby waiting for the whole lease."""
    active = ServerLease(mysql_store, "active", lease_s=2, renew_s=0.3)
    standby = ServerLease(mysql_store, "standby", lease_s=2)
    assert active.try_acquire()
    active.start()
    try:
        holds_for(3.5, lambda: not standby.try_acquire() and active.held(),
                  "the lease is renewed: the standby waits")
    finally:
        active.stop()
    active.release()                 # a clean stop: the standby need not wait for the lease
    assert standby.try_acquire() and standby.term == 2
