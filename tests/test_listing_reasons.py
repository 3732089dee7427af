"""Why listed jobs wait (views.live_reasons): one look at every host per shape of job in a
request, and still each job's own reason (tests/core_harness.py: a Core on real SQLite)."""

from hq import protocol as p
from tests.core_harness import CoreHarness


def test_jobs_of_other_shapes_in_one_listing_keep_their_own_reasons(tmp_path):
    """Catches a reason shared by jobs that wait for different things (a memo keyed too
    coarsely: by user alone, or for the whole request)."""
    h = CoreHarness(tmp_path, hosts=(("h1", 4), ("h2", 4)), outside_load=False)
    try:
        h.register("alice", "h1")
        h.register("alice", "h2")
        h.submit("alice", *["sleep 100"] * 8)                    # fill both hosts
        wide = h.submit("alice", "sleep 1", "sleep 2", cores=4)
        high = h.submit("alice", "sleep 4", priority=5)
        listed = h.request("alice", p.DETAILS, ids=wide + high, events=False)["jobs"]
        reasons = {j["id"]: j["reason"] for j in listed}
    finally:
        h.close()
    assert reasons[wide[0]] == reasons[wide[1]]
    assert reasons[wide[0]].startswith("priority: 1 pending jobs have a higher priority")
    assert reasons[high[0]].startswith("resources: needs 1 slots")
