"""Placement rules one example at a time (hq/server/scheduler.py), each written against mutants
that `make mutate` found alive: the exact reasons `explain` gives, where a pass stops, memory
and reserved slots taken during a pass, claims for starving wide jobs, the queues' order.

Each test names the bug it catches; each was checked against the mutants it names (mutmut
hq.server.scheduler.*: they survived before and are killed now)."""

import pytest

from hq.model import INACTIVE, DOWN
from hq.server.scheduler import (PendingIndex, explain, held_back, host_fits, memory_free,
                                  offer, place)
from tests.test_scheduler import GB, index_of, make_host, make_job


def test_memory_free_is_available_memory_less_what_hq_jobs_asked_for():
    """Catches memory_free taking the total instead of the reported available memory, adding
    the memory of hq's jobs instead of taking it off, or never reaching 0; and a host whose
    memory is unknown limiting jobs (x_memory_free 1, 9, 14, 15)."""
    host = make_host("h", 4, mem_total=8 * GB, mem_available=2 * GB)
    assert memory_free(host) == 2 * GB
    host.mem_available = 8 * GB
    host.mem_reserved = 6 * GB
    assert memory_free(host) == 2 * GB
    host.mem_reserved = 9 * GB
    assert memory_free(host) == 0
    host.mem_available = 0                        # not reported yet: the total counts
    host.mem_reserved = 3 * GB
    assert memory_free(host) == 5 * GB
    assert memory_free(make_host("u", 4, mem_total=0)) >= 1 << 62


def test_a_pass_stops_when_no_slot_is_left():
    """Catches a pass that goes on looking at queues once every slot is taken (a scan of all
    queues on a full cluster): 10 queues, 2 slots, 2 jobs examined (_place_level 16; take
    18, 19: a wrong count of free slots)."""
    jobs = [make_job(i, "ann", memory=i * GB) for i in range(1, 11)]     # 10 shapes
    result = place(index_of(jobs), [make_host("h", 2)], {})
    assert len(result.assignments) == 2 and result.examined == 2


def test_the_placement_limit_is_exact():
    """Catches a pass that places one job more than `placement_limit` (_place_level 20)."""
    jobs = [make_job(i) for i in range(1, 10)]
    assert len(place(index_of(jobs), [make_host("h", 8)], {}, limit=3).assignments) == 3


def test_memory_is_taken_as_jobs_are_placed_and_a_job_may_use_all_that_is_left():
    """Catches the memory of placed jobs not taken off during the pass (three 3 GB jobs on an
    8 GB host), and a job refused the memory that exactly fits (take 16; _ok 11, 13)."""
    jobs = [make_job(i, memory=3 * GB) for i in range(1, 4)]
    result = place(index_of(jobs), [make_host("h", 4, mem_total=8 * GB)], {})
    assert len(result.assignments) == 2
    exact = place(index_of([make_job(1, memory=8 * GB)]), [make_host("h", 4, mem_total=8 * GB)],
                  {})
    assert len(exact.assignments) == 1


def reserved_host(slots, code_slots, code="R", **extra):
    host = make_host("h", slots, **extra)
    host.reserved = {code: code_slots}
    return host


def coded(job_id, cores=1, memory=0, user="ann", code="R"):
    job = make_job(job_id, user, cores=cores, memory=memory)
    job.reservation = code
    return job


def test_reserved_slots_are_counted_as_coded_jobs_take_them():
    """Catches a reservation's free slots set instead of reduced (three coded jobs in 2
    reserved slots), and held-back slots miscounted after a coded job (normal jobs lose the
    slot that is theirs, or take a reserved one) (take 4, 5, 6, 7, 22)."""
    result = place(index_of([coded(i) for i in range(1, 4)]), [reserved_host(4, 2)], {})
    assert len(result.assignments) == 2
    jobs = [coded(1, cores=2)] + [make_job(i) for i in range(2, 6)]
    result = place(index_of(jobs), [reserved_host(4, 3)], {})
    assert sorted(j.id for j, _ in result.assignments) == [1, 2]    # 2 coded, 1 normal, 1 held


def test_a_coded_job_needs_memory_and_the_users_agent_like_any_other():
    """Catches a coded job with --mem never placed, one placed beyond the host's memory or on
    the boundary refused, and one placed where its user has no agent (_code_ok 11, 12, 13,
    16, 19)."""
    host = reserved_host(4, 2, mem_total=8 * GB)
    assert len(place(index_of([coded(1, memory=8 * GB)]), [host], {}).assignments) == 1
    assert place(index_of([coded(1, memory=9 * GB)]), [host], {}).assignments == []
    short = reserved_host(4, 2, mem_total=8 * GB, mem_available=2 * GB)
    assert place(index_of([coded(1, memory=4 * GB)]), [short], {}).assignments == []
    stranger = reserved_host(4, 2, users=("bob",))
    assert place(index_of([coded(1)]), [stranger], {}).assignments == []


def test_a_coded_job_goes_to_the_fullest_host_of_its_reservation():
    """Catches the reservation's hosts taken in name order instead of fewest free reserved
    slots first (find 10, 12, 14)."""
    wide, narrow = make_host("a", 8), make_host("b", 8)
    wide.reserved, narrow.reserved = {"R": 4}, {"R": 2}
    result = place(index_of([coded(1)]), [wide, narrow], {})
    assert [(j.id, name) for j, name in result.assignments] == [(1, "b")]


def test_a_job_goes_to_the_host_claimed_for_it_even_when_another_fits_better():
    """Catches the claimed host ignored (the job took the best fit elsewhere) and a claim on
    a host that is gone (down) breaking the pass (find 16, 17, 18)."""
    wide = make_job(1, "ann", cores=2)
    hosts = [make_host("a", 2), make_host("b", 4)]
    result = place(index_of([wide]), hosts, {}, claims={1: "b"})
    assert [(j.id, name) for j, name in result.assignments] == [(1, "b")]
    gone = make_host("c", 4, status=DOWN)
    result = place(index_of([wide]), hosts[:1] + [gone], {}, claims={1: "c"})
    assert [(j.id, name) for j, name in result.assignments] == [(1, "a")]


def test_a_pinned_job_runs_on_its_host():
    """Catches --host jobs never placed (find 23)."""
    result = place(index_of([make_job(1, host_req="b")]), [make_host("a", 4), make_host("b", 4)],
                   {})
    assert [(j.id, name) for j, name in result.assignments] == [(1, "b")]


def overdue(job_id, user, cores=4):
    return make_job(job_id, user, cores=cores, submitted=0.0)


def test_claims_one_per_user_at_most_a_tenth_of_the_hosts_where_the_user_has_an_agent():
    """Catches a user claiming two hosts, more claims than a tenth of the hosts (20 hosts: 2;
    25: 2; 10: 1), and a claim on a host where the user has no agent (claim 1, 3, 8, 9, 10,
    13, 17, 20, 27)."""
    def claims(n_hosts, jobs, **host_args):
        hosts = [make_host(f"h{i:02}", 4, used=1, **host_args) for i in range(n_hosts)]
        return place(index_of(jobs), hosts, {}, now=1000.0, reserve_after_s=300).claims
    two_users = [overdue(1, "ann"), overdue(2, "ann"), overdue(3, "bob"), overdue(4, "cy")]
    two_users[1].memory = GB                      # another queue of ann's: still one claim
    assert sorted(claims(20, two_users)) == [1, 3]
    assert sorted(claims(25, two_users)) == [1, 3]
    assert sorted(claims(10, two_users)) == [1]
    stranger = [make_host("b", 4, used=2), make_host("c", 4, used=1, users=("bob",))]
    result = place(index_of([overdue(1, "ann")]), stranger, {}, now=1000.0, reserve_after_s=300)
    assert result.claims == {1: "b"}


def test_only_wide_jobs_that_waited_reserve_after_s_claim_a_host():
    """Catches a one-slot job claiming a host, a two-slot one not claiming, and the wait
    compared with `<` (a job that waited exactly reserve_after_s claims) (_place_level 55,
    56, 57)."""
    def claims(job):
        return place(index_of([job]), [make_host("h", 4, used=3)], {}, now=1000.0,
                     reserve_after_s=300).claims
    assert claims(make_job(1, cores=2, submitted=700.0)) == {1: "h"}
    assert claims(make_job(1, cores=2, submitted=700.5)) == {}
    full = make_host("h", 4, used=4)
    assert place(index_of([make_job(1, submitted=0.0)]), [full], {}, now=1000.0,
                 reserve_after_s=300).claims == {}


def test_claims_of_jobs_no_longer_pending_are_dropped():
    """Catches claims kept for jobs that left the queue (place 8: it raised)."""
    result = place(index_of([make_job(1)]), [make_host("h", 4)], {}, claims={99: "h"})
    assert result.claims == {} and [j.id for j, _ in result.assignments] == [1]


def test_a_user_without_slots_goes_before_one_with_slots():
    """Catches the fair-share key of a user without slots starting above 0 (bob, with one
    slot and the older job, got the only free slot) (_place_level 12)."""
    jobs = [make_job(1, "bob"), make_job(2, "ann")]
    result = place(index_of(jobs), [make_host("h", 2, used=1)], {"bob": 1})
    assert [j.id for j, _ in result.assignments] == [2]


def test_best_fit_follows_the_free_slots_left_during_the_pass():
    """Catches the buckets of free slots not updated when a job takes slots (for all hosts
    or for a group), so the next job misses the fullest host; and a crash there (take 25,
    26, 27, 28). A pinned job makes `a` the fullest host; the next job must go there."""
    for group in ("", "g"):
        hosts = [make_host("a", 4, groups=["g"]), make_host("b", 3, groups=["g"])]
        jobs = [make_job(1, group_req=group), make_job(2, cores=3, host_req="a"),
                make_job(3, group_req=group)]
        result = place(index_of(jobs), hosts, {})
        assert [(j.id, name) for j, name in result.assignments] == [(1, "b"), (2, "a"),
                                                                    (3, "a")], group


def test_offer_held_back_and_outside_load():
    """Catches unused reserved slots added instead of taken off, counted with a floor of 1
    or plus the used ones, `reserved` defaulting to False, and an outside load below one
    core ignored (offer 2, 4, 6, 13; held_back 8, 9, 10)."""
    host = make_host("h", 8, used=1)
    host.reserved, host.reserved_used = {"R": 3, "S": 2}, {"R": 1, "S": 2}
    assert held_back(host) == 2
    assert offer(host) == 8 - 1 - 2 and offer(host, reserved=False) == 7
    assert offer(make_host("h", 4, cores=4, foreign=0.6)) == 3


def test_excluded_hosts_and_memory_beyond_the_total():
    """Catches a job with --exclude-hosts fitting nowhere, and one asking more memory than a
    host has fitting it (host_fits 7, 17)."""
    job = make_job(1, exclude="a")
    assert not host_fits(job, make_host("a", 4)) and host_fits(job, make_host("b", 4))
    assert not host_fits(make_job(2, memory=9 * GB), make_host("b", 4, mem_total=8 * GB))


def test_queues_are_taken_in_id_order_without_sorting_them_again():
    """Catches a queue that took an older job (a requeue, a release) taken out of id order, one
    re-sorted as a whole for it (86 % of the loop with 10,000 agents' jobs requeued beside 1 M
    waiting), a job taken twice after leaving and coming back, and `get` of a job that is not
    pending raising."""
    index = PendingIndex()
    for job_id in (5, 9, 3, 12, 1):
        index.add(make_job(job_id))
    (queue,) = index.queues.values()
    newer = queue.jobs
    index.tidy()
    assert [j.id for j in queue.ordered()] == [1, 3, 5, 9, 12]
    assert queue.jobs is newer and list(newer) == [5, 9, 12]
    assert index.remove(3).id == 3 and index.remove(9).id == 9
    index.add(make_job(3))
    index.add(make_job(7))
    index.tidy()
    assert [j.id for j in queue.ordered()] == [1, 3, 5, 7, 12]
    assert sorted(j.id for j in index.values()) == [1, 3, 5, 7, 12] and len(index) == 5
    assert index.get(3).id == 3 and index.get(5).id == 5 and index.get(4) is None
    for job_id in (1, 3, 5, 7, 12):
        index.remove(job_id)
    assert not index.queues and len(index) == 0


# -- why a job waits ------------------------------------------------------------------------
def why(job, hosts, pending=(), claims=None, outside_load=True):
    return explain(job, hosts, index_of(list(pending)), claims or {}, outside_load)


def test_explain_no_host_and_hosts_that_are_not_up():
    """Catches the reason texts of explain changed (the first five hosts named, in order)
    and hosts not in cluster.tab counted (x_explain names, starting agents)."""
    job = make_job(1, cores=2)
    assert why(job, [make_host("a", 1)]) == "no host fits"
    gone = make_host("b", 4)
    gone.in_config = False
    assert why(job, [gone]) == "no host fits"
    assert why(make_job(9, memory=9 * GB), [make_host("m", 4, mem_total=8 * GB)]) == "no host fits"
    down = [make_host(f"h{i}", 4, state=INACTIVE) for i in (6, 2, 4, 0, 1, 5, 3)]
    assert why(job, down) == ("host inactive: every host that fits is inactive or down "
                              "(h0, h1, h2, h3, h4)")
    assert why(job, [make_host("a", 4, users=("bob",))]) == (
        "starting agents: no agent of yours runs on a host that fits yet")


def test_explain_reservations():
    """Catches the free reserved slots miscounted (used slots added, a default of 1 for a
    host without the code or without used slots, no floor at 0) and a deleted reservation
    not named (x_explain room, any(...))."""
    job = coded(1, cores=4)
    a, b, c = make_host("a", 8), make_host("b", 8), make_host("c", 8)
    a.reserved = {"R": 3}
    b.reserved, b.reserved_used = {"R": 4}, {"R": 4}
    assert why(job, [a, b, c]) == ("resources: reservation R has 3 free slots on one host, "
                                   "the job needs 4")
    a.reserved_used = {"R": 3}
    assert why(job, [a, c]) == ("resources: reservation R has 0 free slots on one host, the "
                                "job needs 4")
    gone = coded(2, code="OLD")
    assert why(gone, [a, c]) == "no host fits: reservation OLD no longer exists"


def test_explain_claims():
    """Catches the claim of this job or of others not named, or the wrong host or job named
    (x_explain mine, held, free[0])."""
    job = make_job(1, cores=4)
    hosts = [make_host("a", 4), make_host("b", 4)]
    assert why(job, hosts, claims={1: "b"}) == (
        "resources: host b is reserved for this job until 4 slots free")
    assert why(job, hosts, claims={98: "a", 99: "b"}) == "resources: host a is reserved for job 98"


def test_explain_priority_and_resources():
    """Catches the count of higher-priority jobs, a free host that fits exactly not counted,
    outside load ignored, memory ignored or misread, and the wanted memory misprinted
    (x_explain free, most, want)."""
    job = make_job(1, cores=2)
    hosts = [make_host("a", 4, used=2)]
    urgent = [make_job(7, "bob", priority=3), make_job(8, "cy", priority=1)]
    assert why(job, hosts, urgent) == "priority: 2 pending jobs have a higher priority"
    assert why(job, hosts) == "priority: jobs ahead of it in fair-share order take the free slots"
    loaded = [make_host("a", 4, cores=4, foreign=3.0)]
    assert why(job, loaded) == ("resources: needs 2 slots; hosts that fit have at most 1 free "
                                "(3 taken by outside load on a)")
    assert why(job, loaded, outside_load=False).startswith("priority: jobs ahead")
    assert explain(job, loaded, index_of([]), {}).startswith("resources:")   # the default
    busy = [make_host("a", 4, used=3, cores=4, foreign=2.0)]
    assert why(job, busy, outside_load=False) == (
        "resources: needs 2 slots; hosts that fit have at most 1 free")
    assert why(job, busy) == ("resources: needs 2 slots; hosts that fit have at most 0 free "
                              "(1 taken by outside load on a)")
    exact = make_job(2, cores=2, memory=4 * GB)
    assert why(exact, [make_host("a", 4, mem_available=4 * GB)]).startswith("priority:")
    big = make_job(3, cores=2, memory=8 * GB)
    assert why(big, [make_host("a", 4, mem_available=4 * GB)]) == (
        "resources: needs 8192 MB of memory; hosts with 2 free slots have at most 4096 MB free")


def test_explain_names_what_the_roomiest_host_lacks():
    """Catches `missing` deciding memory-or-slots with the outside load always counted, a
    host with exactly the job's slots taken for one without (then the reason says slots, not
    memory), the roomiest host picked by another rule (or a crash with two hosts), the
    outside load ignored or always counted in that pick, and the notes on outside load and
    reserved slots dropped, misprinted or joined wrongly (x_missing 5, 6, 16-23, 38, 39, 44)."""
    wants_memory = make_job(1, cores=2, memory=8 * GB)
    loaded = make_host("a", 4, cores=4, foreign=3.0, mem_available=4 * GB)
    memory_short = ("resources: needs 8192 MB of memory; hosts with 2 free slots have at "
                    "most 4096 MB free")
    assert why(wants_memory, [loaded], outside_load=False) == memory_short
    assert why(wants_memory, [make_host("b", 2, mem_available=4 * GB)]) == memory_short
    wide = make_job(2, cores=4)
    quiet = make_host("q", 4, used=2)
    assert why(wide, [make_host("a", 4, foreign=3.0), quiet]) == (
        "resources: needs 4 slots; hosts that fit have at most 2 free")
    busy = make_host("a", 4, used=1, foreign=3.0)
    assert why(wide, [busy, quiet], outside_load=False) == (
        "resources: needs 4 slots; hosts that fit have at most 3 free")
    kept = make_host("r", 4, foreign=1.0)
    kept.reserved = {"R": 1}
    assert why(wide, [kept]) == ("resources: needs 4 slots; hosts that fit have at most 2 "
                                 "free (1 taken by outside load, 1 held for reservations on r)")
    kept.foreign_load = 0.0
    assert why(wide, [kept]) == ("resources: needs 4 slots; hosts that fit have at most 3 "
                                 "free (1 held for reservations on r)")


def test_a_one_slot_job_that_does_not_fit_claims_no_host():
    """Catches one-slot jobs claiming hosts (a claim is for a wide job that starves while
    narrow ones take each freed slot) (_place_level 55)."""
    host = make_host("h", 4, used=3, mem_total=8 * GB, mem_available=GB)
    result = place(index_of([make_job(1, memory=4 * GB)]), [host], {}, now=1000.0,
                   reserve_after_s=300)
    assert result.assignments == [] and result.claims == {}


def test_normal_jobs_never_take_unused_reserved_slots():
    """Catches the pass's free slots counting the reserved ones instead of taking them off
    (HostPool.__init__ 19)."""
    jobs = [make_job(i) for i in range(1, 5)]
    result = place(index_of(jobs), [reserved_host(4, 2)], {})
    assert [j.id for j, _ in result.assignments] == [1, 2]
    assert place(index_of([make_job(1, cores=3)]), [reserved_host(4, 2)], {}).assignments == []


def test_a_pass_stops_when_coded_jobs_and_others_took_every_slot():
    """Catches the count of free slots left wrong after a job of a reservation took its
    slots, so the pass went on looking at queues on a full host (take 20, 23)."""
    coded_jobs = [coded(1), coded(2)]
    others = [make_job(10 + i, "bob", memory=i * GB) for i in range(1, 11)]     # 10 shapes
    result = place(index_of(coded_jobs + others), [reserved_host(4, 2)], {})
    assert len(result.assignments) == 4 and result.examined == 4
