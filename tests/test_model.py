"""The job state machine: which transitions are allowed; terminal states never change."""

import pytest

from hq.model import STATES, TERMINAL, TRANSITIONS, Host, Job, StateError, check_transition


def test_normal_life_of_a_job():
    job = Job(1, "u", "true", 1)
    for state in ("dispatched", "running", "done"):
        job.transition(state)
    assert job.state == "done"


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_never_change(terminal):
    for new in STATES:
        with pytest.raises(StateError):
            check_transition(terminal, new)


def test_requeue_and_hold_paths():
    check_transition("running", "pending")     # host lost, retries left
    check_transition("dispatched", "pending")
    check_transition("pending", "held")
    check_transition("held", "pending")
    with pytest.raises(StateError):
        check_transition("pending", "running")   # must be dispatched first
    with pytest.raises(StateError):
        check_transition("held", "dispatched")


def test_every_state_has_a_rule():
    assert set(TRANSITIONS) == set(STATES)


def test_host_slots_default_to_cores():
    assert Host("a", cores=8).slots == 8
    assert Host("a", cores=8, max_slots=4, slots_used=3).free_slots == 1
    assert Host("a", cores=2, slots_used=5).free_slots == 0


def test_an_unknown_state_is_refused_with_a_message_naming_both_states():
    """Catches check_transition answering an unknown old state with a TypeError (the rule
    looked up with a default of None) instead of StateError, and an empty message (mutmut
    hq.model x_check_transition 3, 5, 6 survived before)."""
    with pytest.raises(StateError, match=r"job state bogus -> done is not allowed"):
        check_transition("bogus", "done")
    with pytest.raises(StateError, match=r"job state done -> pending is not allowed"):
        check_transition("done", "pending")
