"""MySQL's max_allowed_packet: a group commit of large job lines is cut into packets that fit,
and a row that can never fit is refused by name before anything of the commit is sent."""

import pytest

from hq.errors import HQError
from hq.store.packets import PACKET_MARGIN, StatementBatch, StatementTooLarge
from hq.store.writes import Writes
from tests.test_store import new_job

LINE = 999_000              # a job line just under hq-submit's 1 MiB bound
pytestmark = pytest.mark.mysql


def packet_limit(store):
    with store.transaction() as cur:
        limit = store.max_allowed_packet(cur)
    if limit > 64 << 20:
        pytest.skip(f"max_allowed_packet is {limit} bytes: too large to exceed quickly here")
    return limit


def big_jobs(first, count, size=LINE):
    w = Writes()
    w.batches.append({"id": first, "user": "alice", "submitted": 1.0, "size": count,
                      "env": "{}", "umask": None})
    for i in range(first, first + count):
        w.jobs.append(new_job(i, batch=first))
        w.jobs[-1]["command"] = f"echo {i} " + "x" * size
    return w


@pytest.mark.slow
def test_large_job_lines_in_one_commit_fit_the_packet_bound(mysql_store):
    """Issue 11: 20 job lines of 999 kB made one multi-row INSERT over max_allowed_packet
    (16 MiB here) and the whole group commit failed; so did UPDATE ... CASE slices."""
    store = mysql_store
    count = packet_limit(store) // LINE + 4
    store.apply(big_jobs(1, count))
    jobs = store.get_jobs(list(range(1, count + 1)))
    assert [len(j["command"]) for j in jobs] == [LINE + len(f"echo {i} ")
                                                  for i in range(1, count + 1)]
    w = Writes()
    for i in range(1, count + 1):
        w.update_job(i, state="done", info_text="y" * LINE)
    store.apply(w)
    assert store.count_states("alice") == {"done": count}
    assert {len(j["info_text"]) for j in store.get_jobs([1, count])} == {LINE}


def test_a_row_that_can_never_fit_is_refused_by_name_first(mysql_store):
    """Catches a row over the bound sent anyway (MySQL then drops the connection and the
    commit fails without saying which table or size), or part of its commit kept."""
    store = mysql_store
    limit = packet_limit(store)
    w = big_jobs(1, 2, size=10)
    w.jobs[1]["command"] = "x" * limit
    with pytest.raises(StatementTooLarge) as info:
        store.apply(w)
    assert info.value.code == "DATABASE_ERROR" and info.value.table == "jobs"
    assert f"max_allowed_packet ({limit} bytes)" in info.value.message
    assert store.get_jobs([1, 2]) == [] and store.batch_owner(1) is None
    store.apply(big_jobs(1, 2, size=10))        # the connection and the store still work
    assert len(store.get_jobs([1, 2])) == 2


def test_statements_are_cut_to_a_small_bound(mysql_store):
    """With a 100 kB bound: every statement and every joined round trip stays under it, and
    all rows arrive. Catches a multi-row INSERT or a join that only counts rows."""
    store = mysql_store
    w = big_jobs(1, 50, size=30_000)
    with store.connection() as conn:
        cur = conn.cursor()
        batch = StatementBatch(cur, 100_000)
        store._apply(batch, w)
        sizes = [size for _, size in batch.statements]
        assert max(sizes) <= 100_000 - PACKET_MARGIN and len(sizes) >= 25
        assert sum(sizes) > 1_500_000
        batch.send()
        conn.commit()
    assert len(store.get_jobs(list(range(1, 51)))) == 50
    with store.connection() as conn:
        batch = StatementBatch(conn.cursor(), 100_000)
        with pytest.raises(HQError, match="a row of jobs takes"):
            batch.executemany("INSERT INTO jobs (id, command) VALUES (%s, %s)",
                              [(99, "x" * 100_000)])
        assert batch.statements == []
