"""Why a pending job waits (scheduler.explain): the reason names what is missing: memory,
slots taken by outside load, slots held for reservations.

Each test names in its docstring the bug it catches."""

from hq.server.scheduler import PendingIndex, explain
from tests.test_scheduler import GB, make_host, make_job


def reason(job, hosts):
    index = PendingIndex()
    index.add(job)
    return explain(job, hosts, index, {})


def test_memory_is_named_when_memory_is_missing():
    """Catches 'at most 4 free' (slots) for a job that waits for memory on an idle host."""
    host = make_host("h0", 4, mem_total=8 * GB, mem_available=1 * GB)
    got = reason(make_job(1, memory=2 * GB), [host])
    assert got == ("resources: needs 2048 MB of memory; hosts with 1 free slots have at most "
                   "1024 MB free")


def test_outside_load_is_named_when_it_takes_the_slots():
    """Catches a reason that hides why an idle host offers nothing: outside load."""
    host = make_host("h0", 4, foreign=3.6)
    got = reason(make_job(1, cores=2), [host])
    assert got == ("resources: needs 2 slots; hosts that fit have at most 0 free (4 taken by "
                   "outside load on h0)")


def test_reserved_slots_are_named():
    """Catches a reason that hides slots held back for a reservation code."""
    host = make_host("h0", 4, used=1)
    host.reserved = {"R1": 2}
    got = reason(make_job(1, cores=2), [host])
    assert got == ("resources: needs 2 slots; hosts that fit have at most 1 free (2 held for "
                   "reservations on h0)")


def test_plain_lack_of_slots():
    host = make_host("h0", 4, used=3)
    assert reason(make_job(1, cores=2), [host]) == \
        "resources: needs 2 slots; hosts that fit have at most 1 free"
