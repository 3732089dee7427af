"""The command line's fast path against a real cluster: the stream socket answers as ZeroMQ
does, imports no heavy module, is private; waits are woken by ENDED pushes, also across a
server restart; many jobs' states in one request.

Each test names in its docstring the bug it catches."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from hq.errors import TIMEOUT, HQError
from tests.helpers import REPO, wait_until

HEAVY = ("zmq", "docopt", "psutil", "paramiko", "tqdm", "configparser", "hq.config")


def both(cluster, *args, **kwargs):
    """The results of a command through the stream socket and through ZeroMQ."""
    zmq_env = dict(cluster.env, HQ_TRANSPORT="zmq")
    return cluster.run(*args, **kwargs), cluster.run(*args, env=zmq_env, **kwargs)


def same(results):
    stream, zmq = results
    assert (stream.returncode, stream.stdout, stream.stderr) == \
        (zmq.returncode, zmq.stdout, zmq.stderr)
    return stream


def test_both_transports_give_the_same_answers_and_errors(cluster):
    """Catches a stream path that answers, fails or exits otherwise than the ZeroMQ one."""
    job = cluster.run("hq-submit", "exit 3", check=True).stdout.strip()
    assert same(both(cluster, "hq-client", "wait", job)).stdout == f"{job} failed exit 3\n"
    for args in (("hq-client", "status"), ("hq-client", "details", job, "--json"),
                 ("hq-client", "details", "999"), ("hq-client", "cancel", "999"),
                 ("hq-client", "status", "--jobs", f"{job},999"), ("hq-client", "list"),
                 ("hq-client", "wait", "--batch=77"), ("hq-admin", "lsusers"),
                 ("hq-client", "lsfjobs:all", "--json"), ("hq-submit", "--host=nowhere", "true")):
        same(both(cluster, *args))
    stream, zmq = both(cluster, "hq-submit", "--wait", "exit 4")
    assert stream.returncode == zmq.returncode == 4


def test_the_fast_path_imports_nothing_heavy(cluster):
    """Catches pyzmq, docopt, psutil, paramiko, tqdm or the config parser back on the path of
    the common commands (each costs a command line tens of milliseconds)."""
    job = cluster.run("hq-submit", "true", check=True).stdout.strip()
    env = dict(cluster.env, PYTHONPATH=REPO)
    for module, args in (("hq.client.cli.submit", ["true"]),
                         ("hq.client.cli.client", ["details", job, "--json"]),
                         ("hq.client.cli.client", ["status"]),
                         ("hq.client.cli.client", ["wait", job])):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *args],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-500:]
        imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                    if line.startswith("import time:") and "|" in line}
        assert not imported & set(HEAVY), (args, imported & set(HEAVY))


def test_the_stream_socket_is_private(cluster):
    """Catches a stream socket other users could connect to (they would act as this user)."""
    cluster.run("hq-client", "status", check=True)
    run = os.path.join(cluster.home, "run")
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(run, "user-stream.sock")).st_mode) == 0o600


def seconds(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("transport", ["stream", "zmq"])
def test_a_wait_is_woken_by_the_push_not_a_poll(cluster, transport):
    """Catches a wait that learns of an end only by polling: with the first poll 30 s away, it
    would time out here; pushed, it returns right after the end."""
    from hq.client.api import Client
    cluster.client()          # the environment of this cluster
    with Client(home=cluster.home, transport=transport) as client:
        client.wait([client.submit("true")], timeout=30)      # agent up
        job = client.submit("sleep 0.5")
        (ended,) = client.as_completed([job], timeout=10, poll_s=30)
        returned = time.time()
    assert ended["state"] == "done"
    assert returned - seconds(ended["finished"]) < 2.0


@pytest.mark.slow
def test_a_server_restart_does_not_make_a_wait_miss_an_end(cluster):
    """Catches a waiting client that never learns of an end that happened while hq-server was
    down (no ENDED could be pushed): the user-server's RECHECK makes it look again."""
    marker = os.path.join(cluster.root, "ended")
    job = cluster.run("hq-submit", f"sleep 1; touch {marker}", check=True).stdout.strip()
    waiter = subprocess.Popen([os.path.join(REPO, "bin", "hq-client"), "wait", job],
                              env=cluster.env, stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: json.loads(cluster.run("hq-client", "details", job, "--json").stdout)
                   [0]["state"] == "running", 20, message="the job to run")
        cluster.stop_server(signal.SIGKILL)
        wait_until(lambda: os.path.exists(marker), 20, message="the job to end")
        assert waiter.poll() is None
        cluster.start_server()
        out, _ = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0 and out == f"{job} done exit 0\n"


def test_states_of_many_jobs_in_one_request(cluster):
    """Catches a bulk status that stops at an unknown id or leaves it unnamed."""
    ids = cluster.run("hq-submit", "-", input="true\n" * 30, check=True).stdout.split()
    cluster.run("hq-client", "wait", *ids, check=True)
    result = cluster.run("hq-client", "status", "--jobs", ",".join([*ids, "99999"]))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{i} done" for i in ids]
    assert result.stderr == "hq-client: no job 99999 of yours [UNKNOWN_JOB]\n"
    shown = json.loads(cluster.run("hq-client", "status", "--jobs", ids[0], "--json",
                                   check=True).stdout)
    assert shown == {"jobs": {ids[0]: "done"}, "unknown": []}
    client = cluster.client()
    assert client.states([int(ids[0]), 99999]) == ({int(ids[0]): "done"}, [99999])


def test_a_wait_with_a_timeout_still_times_out(cluster):
    """Catches a push-driven wait that blocks past its deadline."""
    client = cluster.client()
    job = client.submit("sleep 30")
    started = time.monotonic()
    with pytest.raises(HQError) as caught:
        list(client.as_completed([job], timeout=1.0))
    assert caught.value.code == TIMEOUT and time.monotonic() - started < 10
    client.cancel([job])
