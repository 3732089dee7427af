"""hq-server's side of batch scripts, through its handlers on a real SQLite database without
sockets: a script's validation, its storage, and what RUN gives the agent. Each test names its
bug."""

import pytest

from hq import protocol as p
from hq.protocol import MAX_SCRIPT
from hq.errors import BAD_REQUEST, HQError
from hq.server.dispatch import SCRIPT_CHARS_PER_RUN
from tests.core_harness import CoreHarness

SCRIPT = "#!/bin/sh\necho $HQ_ARRAY_INDEX\n"


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path, hosts=(("h1", 16),), outside_load=False)
    yield harness
    harness.close()


def submit_array(h, indices, **defaults):
    jobs = [{"command": "job.sh 'a b' c", "array_index": i} for i in indices]
    return h.request("alice", p.SUBMIT, jobs=jobs, env={}, cwd="/tmp",
                     defaults={"script": SCRIPT, "stdout": "/o/%A_%a-%j.out", **defaults})


def test_an_array_is_stored_and_sent_with_its_script_once(h):
    """Catches the script sent once per job (a RUN of 1,000 jobs would carry it 1,000 times),
    lost arguments or indices, or %A/%a left in the output paths."""
    h.register("alice", cores=16)
    reply = submit_array(h, [3, 5, 7])
    rows = h.store.get_jobs(reply["ids"])
    assert [r["array_index"] for r in rows] == [3, 5, 7]
    assert {r["script"] for r in rows} == {SCRIPT}
    assert rows[0]["stdout"] == f"/o/{reply['batch']}_3-{reply['ids'][0]}.out"
    [run] = h.messages(p.RUN)
    assert run["scripts"] == [SCRIPT]
    assert [(j["script"], j["args"], j["array_index"]) for j in run["jobs"]] == [
        (0, ["a b", "c"], i) for i in (3, 5, 7)]
    assert all(j["slurm_env"] is True for j in run["jobs"])


def test_a_job_without_a_script_runs_its_command_as_before(h):
    """Catches script fields sent for a plain command (the agent would look for a script)."""
    h.register("alice", cores=16)
    h.submit("alice", "echo hi")
    [job] = h.messages(p.RUN)[0]["jobs"]
    assert "script" not in job and "args" not in job and "array_index" not in job
    assert "scripts" not in h.messages(p.RUN)[0]


def test_slurm_env_can_be_turned_off(tmp_path):
    """Catches [server] slurm_env = no not reaching the agents."""
    harness = CoreHarness(tmp_path, slurm_env=False, outside_load=False)
    try:
        harness.register("alice")
        harness.submit("alice", "true")
        assert harness.messages(p.RUN)[0]["jobs"][0]["slurm_env"] is False
    finally:
        harness.close()


@pytest.mark.parametrize("defaults, command, why", [
    ({"script": "#!/bin/sh\n" + "x" * MAX_SCRIPT}, "job.sh", "larger than"),
    ({"script": "#!/bin/sh\necho \0"}, "job.sh", "NUL"),
    ({"script": 42}, "job.sh", "string"),
    ({"script": SCRIPT}, "job.sh 'unbalanced", "shell words")])
def test_bad_scripts_are_refused(h, defaults, command, why):
    """Catches a script the database or the agent cannot take stored anyway."""
    with pytest.raises(HQError) as refused:
        h.request("alice", p.SUBMIT, jobs=[command], env={}, cwd="/tmp", defaults=defaults)
    assert refused.value.code == BAD_REQUEST and why in refused.value.message


def test_bad_array_indices_are_refused(h):
    """Catches an index the INT column cannot hold."""
    for index in (-1, 1 << 31, "3", True):
        with pytest.raises(HQError) as refused:
            submit_array(h, [index])
        assert "array_index" in refused.value.message


def test_details_show_the_script_and_listings_do_not(h):
    """Catches the script missing from details, or every script of a page sent by LIST."""
    reply = submit_array(h, [1])
    [job] = h.request("alice", p.DETAILS, ids=reply["ids"])["jobs"]
    assert job["script"] == SCRIPT and job["array_index"] == 1
    [listed] = h.request("alice", p.LIST)["jobs"]
    assert "script" not in listed and listed["command"] == "job.sh 'a b' c"


def test_large_scripts_are_spread_over_several_runs(h):
    """Catches one RUN carrying many large scripts (past the agent's message limit it would
    be dropped whole, and none of its jobs would run)."""
    size = MAX_SCRIPT - 64
    count = SCRIPT_CHARS_PER_RUN // size + 2
    for n in range(count):
        h.request("alice", p.SUBMIT, jobs=["job.sh"], env={}, cwd="/tmp",
                  defaults={"script": f"#!/bin/sh\n#{n:02}" + "x" * size})
    h.register("alice", cores=count)                # all are placed in one pass
    runs = h.messages(p.RUN)
    assert len(runs) == 2 and sum(len(r["jobs"]) for r in runs) == count
    for run in runs:
        assert len(run["scripts"]) == len(run["jobs"])
        assert sum(map(len, run["scripts"])) < SCRIPT_CHARS_PER_RUN + MAX_SCRIPT
