"""Dispatch ahead end to end: short jobs of a batch that runs on a host wait at its agent for a
slot (state `dispatched`), the agent never runs more than the host's slots, cancelling a waiting
job drops it there, and jobs of another submission are not sent ahead (priority still decides)."""

import json

from tests.helpers import wait_until


def jobs_of(cluster, ids):
    result = cluster.run("hq-client", "details", "--json", *map(str, ids), check=True)
    return {j["id"]: j for j in json.loads(result.stdout)}


def submit_lines(cluster, lines):
    result = cluster.run("hq-submit", "-", input="".join(f"{line}\n" for line in lines),
                         timeout=30)
    assert result.returncode == 0, result.stderr
    return [int(i) for i in result.stdout.split()]


def test_waiting_jobs_respect_slots_and_can_be_cancelled(cluster, tmp_path):
    warm = submit_lines(cluster, ["true"] * 4)        # short jobs: the host gets jobs ahead
    wait_until(lambda: all(j["state"] == "done" for j in jobs_of(cluster, warm).values()),
               60, 0.1, "the first short jobs")
    slots = json.loads(cluster.run("hq-admin", "lscluster", "--json",
                                   check=True).stdout)["hosts"][0]["max_slots"]
    gate = tmp_path / "gate"
    ids = submit_lines(cluster, [f"while [ ! -e {gate} ]; do sleep 0.05; done"] * slots
                       + [f"echo {i}" for i in range(3)])
    blockers, short = ids[:slots], ids[slots:]
    wait_until(lambda: all(j["state"] == "running" for j in jobs_of(cluster, blockers).values()),
               60, 0.1, "every slot to be busy")
    wait_until(lambda: all(j["state"] == "dispatched" for j in jobs_of(cluster, short).values()),
               30, 0.1, "short jobs of the batch to be sent ahead to the busy host")
    other = submit_lines(cluster, ["true"])
    assert jobs_of(cluster, other)[other[0]]["state"] == "pending", "another submission waits"
    states = {j["state"] for j in jobs_of(cluster, blockers + short).values()}
    assert states == {"running", "dispatched"}, "no more jobs run than the host has slots"
    cancelled = cluster.run("hq-client", "cancel", str(short[0]))
    assert cancelled.returncode == 0, cancelled.stderr
    gate.write_text("")
    wait_until(lambda: all(j["state"] in ("done", "cancelled")
                           for j in jobs_of(cluster, blockers + short).values()),
               60, 0.1, "all jobs to end")
    final = jobs_of(cluster, blockers + short)
    assert final[short[0]]["state"] == "cancelled" and final[short[0]]["started"] is None
    assert [final[i]["state"] for i in blockers + short[1:]] == ["done"] * (slots + 2)
    wait_until(lambda: jobs_of(cluster, other)[other[0]]["state"] == "done", 30, 0.1,
               "the other submission's job")
    wait_until(lambda: json.loads(cluster.run("hq-admin", "lscluster", "--json", check=True)
                                  .stdout)["hosts"][0]["slots_used"] == 0, 30, 0.1,
               "the dropped job's slot to be released")
