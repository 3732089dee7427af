"""Issue 11 as real Unix users, the points where one user's doing broke the others: a dead
agent hidden behind another user's (1), a NUL in the environment (2), a fake REGISTER (3), a
huge submission on MySQL (4), and random SUBMIT bodies from alice while bob keeps working.

A cluster of its own (these tests damage it on purpose, and repair what they can)."""

import os
import shlex
import signal
import subprocess
import threading

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st

from hq import errors
from tests import multiuser
from tests.helpers import BIN, pid_alive, read_pid, wait_until

pytestmark = [pytest.mark.timeout(300)]

CODES = {value for name, value in vars(errors).items() if name.isupper()}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    yield from multiuser.site_fixture(tmp_path_factory)


def restore(site):
    """After a test that may have broken alice's agent: a new one, her jobs and bob's gone."""
    site.restart_user("alice")
    site.cancel_all("alice")
    site.cancel_all("bob")


# -- 1: liveness per agent -----------------------------------------------------------------------

def test_dead_agent_is_noticed_beside_another_users_live_agent(site):
    """Catches liveness kept per host: alice's killed agent hid behind bob's live one, so her
    next job went to a dead agent and never ran."""
    bob_job = site.submit("bob", "sleep 60")
    try:
        site.submit("alice", "--wait", "true")
        agent = read_pid(os.path.join(site.hq_home("alice"), "run", "agent-localhost.pid"))
        wait_until(lambda: site.state("bob", bob_job) == "running", 20, message="bob's job")
        os.kill(agent, signal.SIGKILL)
        wait_until(lambda: not pid_alive(agent), 5, message="alice's agent to die")
        waited = site.wait_job("alice", site.submit("alice", "true"), 10)
        assert waited.returncode == 0, waited.stdout + waited.stderr
    finally:
        restore(site)


# -- 2: a NUL in the environment -----------------------------------------------------------------

def hostile_submit(site, **defaults):
    """alice's raw SUBMIT (past hq.Client's checks) whose environment holds a NUL."""
    body = {"jobs": ["sleep 1"], "defaults": defaults, "env": {"X": "a\0b"},
            "cwd": site.users["alice"].home, "umask": 0o022}
    with site.driver("alice") as driver:
        return driver.call(op="request", kind="SUBMIT", body=body)


def test_nul_in_environment_is_refused(site):
    """Catches the server accepting an environment no process can have."""
    try:
        reply = hostile_submit(site)
        assert reply.get("error") == "BAD_REQUEST", reply
    finally:
        restore(site)


def test_after_a_hostile_job_and_cancel_both_users_run_again(site):
    """Catches the agent killed by a NUL environment and slots held after cancel: bob's job
    that needs the whole host, and alice's next job, both run."""
    try:
        hostile_submit(site, cores=2)
        site.cancel_all("alice")
        bob = site.wait_job("bob", site.submit("bob", "-c", "2", "true"), 10)
        assert bob.returncode == 0, bob.stdout + bob.stderr
        alice = site.wait_job("alice", site.submit("alice", "true"), 10)
        assert alice.returncode == 0, alice.stdout + alice.stderr
    finally:
        restore(site)


# -- 3: host facts ------------------------------------------------------------------------------

def test_fake_register_cannot_rewrite_host_facts(site):
    """Catches any registered user rewriting the cores of a shared host with a REGISTER of
    their own making (then jobs the host cannot run are sent to it)."""
    site.submit("bob", "--wait", "true")           # an agent has told the real facts
    real = site.hosts()["localhost"]["cores"]
    assert 0 < real < 1000
    site.stop_user("alice")         # no real agent of alice's to correct the lie at once
    fake = {"req": 1, "host": "localhost", "cores": 1000, "memory_total": 1 << 50,
            "os": "fake", "running": []}
    try:
        with site.driver("alice") as driver:
            driver.call(op="raw", kind="REGISTER", body=fake, timeout=3)
        assert site.hosts()["localhost"]["cores"] == real
        refused = site.run("bob", "hq-submit", "-c", "500", "true")
        assert refused.returncode == 1 and "NO_HOST_FITS" in refused.stderr, refused.stderr
    finally:
        restore(site)


# -- 4: a huge submission on MySQL --------------------------------------------------------------

@pytest.fixture
def mysql_site(site, mysql_database):
    """A second installation, on MySQL, for the same users (HQ_HOME ~/.hq-mysql)."""
    installation = multiuser.installation(mysql_database.url, site.venv,
                                          list(site.users.values()), home_name=".hq-mysql")
    try:
        yield installation
    finally:
        multiuser.close_installation(installation)


@pytest.mark.slow
@pytest.mark.mysql
def test_huge_submission_fails_no_other_users_commit(mysql_site):
    """Catches one user's 20 lines of 999 kB failing everyone's group commit on MySQL: bob
    submits over and over meanwhile, and every one of his submissions is accepted."""
    site = mysql_site
    lines = "".join(f"echo {'x' * 999_000}\n" for _ in range(20))
    alice = subprocess.Popen(site.command("alice", [os.path.join(BIN, "hq-submit"), "-q", "-"]),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=site.users["alice"].home)
    outcome = {}
    feeder = threading.Thread(target=lambda: outcome.update(zip(("out", "err"),
                                                                alice.communicate(lines))))
    feeder.start()
    refused = []
    with site.driver("bob") as bob:
        for _ in range(200):
            reply = bob.call(op="request", kind="SUBMIT", body={
                "jobs": ["true"], "defaults": {}, "env": {}, "cwd": "/", "umask": 0o022})
            if "error" in reply:
                refused.append(reply)
            if not feeder.is_alive():
                break
    feeder.join(120)
    assert not refused, refused[:3]
    assert alice.returncode == 0 or one_line(outcome.get("err", ""))


def one_line(text):
    lines = text.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("hq-submit: ") and "Traceback" not in text


# -- random SUBMIT bodies from alice ------------------------------------------------------------

TEXT = st.one_of(st.text(max_size=12),
                 st.sampled_from(["\0", "a\0b", "\x1b[2J", "\n", "x" * 70000, "\ud800", "%j"]))
NUMBER = st.one_of(st.integers(-(1 << 70), 1 << 70),
                   st.sampled_from([0, 1, 2, -1, 1 << 31, 1 << 63, 1 << 64]),
                   st.floats(), st.booleans(), st.none())
ANY = st.recursive(st.none() | st.booleans() | NUMBER | TEXT,
                   lambda inner: st.lists(inner, max_size=3)
                   | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
# quick commands only; hostile text travels as an argument of `true`, never as shell code
COMMAND = st.one_of(st.sampled_from(["true", "exit 3", "echo hi", "sleep 0.1", "kill -9 $$"]),
                    TEXT.map(lambda text: "true " + shlex.quote(text)))
PLACES = st.sampled_from(["/", "/nonexistent", "relative", "", "~", "/dev/null"])
OPTIONS = {
    "name": TEXT, "cores": NUMBER, "memory": NUMBER, "priority": NUMBER,
    "host_req": st.one_of(st.sampled_from(["localhost", "ghost", "nowhere", ""]), TEXT),
    "group_req": st.one_of(st.just("local"), TEXT), "exclude_hosts": TEXT,
    "stdout": st.one_of(PLACES, st.just("fuzz-%j.out"), TEXT),
    "stderr": st.one_of(PLACES, TEXT), "logfile": st.one_of(PLACES, TEXT), "info_text": TEXT,
    "shell": st.sampled_from(["/bin/sh", "/bin/bash", "sh", "/no/such/shell", "", "\x1b",
                              "/bin/sh\0"]),
    "time_limit": NUMBER, "retries": NUMBER, "cwd": st.one_of(PLACES, TEXT),
    "depends_on": st.one_of(st.sampled_from(["1", "1,2", "x", ""]), TEXT),
    "reservation": TEXT, "entry": TEXT}
JOB = st.one_of(COMMAND, st.fixed_dictionaries({"command": COMMAND}, optional=OPTIONS), ANY)
BODY = st.fixed_dictionaries(
    {"jobs": st.one_of(st.lists(JOB, max_size=3), ANY)},
    optional={"defaults": st.one_of(st.fixed_dictionaries({}, optional=OPTIONS), ANY),
              "env": st.one_of(st.dictionaries(TEXT, st.one_of(TEXT, NUMBER), max_size=3), ANY),
              "cwd": st.one_of(PLACES, ANY), "hold": ANY, "umask": NUMBER,
              "batch": st.one_of(st.none(), st.integers(-5, 1 << 20))})


@pytest.fixture(scope="module")
def drivers(site):
    with site.driver("alice") as alice, site.driver("bob") as bob:
        yield alice, bob


@pytest.mark.slow
@settings(max_examples=30, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],       # no shrinking: each try costs seconds
          suppress_health_check=list(HealthCheck))
@given(body=BODY)
@example(body={"jobs": ["sleep 0.2"], "defaults": {"cores": 2}, "env": {"X": "a\0b"},
               "cwd": "/"})
@example(body={"jobs": ["true"], "defaults": {"priority": float("nan")}, "cwd": "/"})
def test_random_submissions_never_stop_bob(site, drivers, body):
    """Catches any SUBMIT body of alice's (valid or not) after which bob's next job on the
    same host does not run to done: an agent killed, slots held, a server stalled."""
    alice, bob = drivers
    reply = alice.call(op="request", kind="SUBMIT", body=body)
    assert "ok" in reply or reply.get("error") in CODES, reply
    assert reply.get("error") not in ("USER_SERVER_UNREACHABLE", "SERVER_UNREACHABLE"), reply
    outcome = bob.call(op="submit_wait", commands=["true"], timeout=10,
                       options={"host_req": "localhost"})
    assert outcome.get("ok") == ["done"], (body, reply, outcome)
