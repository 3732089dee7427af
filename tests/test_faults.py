"""Issue 12 with real faults: database outages, a full $HQ_HOME under a killed agent, a reset
database, chaos. Jobs append "ID PID" to a ledger: each must run once and end rightly."""

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.faults import (fill, free, holds_for, home_on_tmpfs, ledger_command, ledger_counts,
                          ledger_lines, need_mounts, private_mysql, small_tmpfs, wait_settled)
from tests.helpers import REPO, Cluster, kill_pid, pid_alive, read_pid, wait_until

pytestmark = pytest.mark.slow

ONE_HOST = (("localhost", "5", "-", "127.0.0.1"),)
SQLITE_FULL = "database or disk is full"
MYSQL_DOWN = re.compile(r"\b(2003|2013|2006)\b|Can't connect|Lost connection|gone away")


def commit_failures(cluster):
    return cluster.server_log().count("commit failed")


def running_pids(ledger, ids):
    """Pids of the jobs `ids` (from their ledger lines) once each has written one."""
    pids = {job: pid for job, pid in ledger_lines(ledger) if job in ids}
    return pids if len(pids) == len(ids) else None


# -- 1, 2: database outages ---------------------------------------------------------------
def outage_scenario(cluster, ledger, begin, end, cause):
    """Jobs running, waiting and held when an outage that `begin()` starts and `end()` ends
    begins; `cause`: a regex for what the refused requests must name. The host has 5 slots:
    four jobs run, one slot is free for the job released during the outage (dispatched at
    once, in memory: its RUN waits for the commit); a job of 2 cores waits for two."""
    client = cluster.client()
    run = lambda cmd, **kw: client.submit(ledger_command(ledger, cmd), retries=0, **kw)  # noqa
    long_job, victim = run("sleep 12"), run("sleep 30")
    short = [run("sleep 2.5"), run("sleep 2.5")]
    queued = run("true", cores=2)                      # waits for the short ones
    held = run("true", hold=True)                      # released during the outage
    pids = wait_until(lambda: running_pids(ledger, [long_job, victim, *short]), 20, 0.05,
                      "four jobs to run")
    # its shell's `sleep 12` cannot end before this (on a loaded machine, the steps below may
    # outlast it): an end before it is a kill
    long_ends = psutil.Process(pids[long_job]).create_time() + 12
    failures = commit_failures(cluster)
    begin()
    wait_until(lambda: commit_failures(cluster) > failures, 10, 0.05, "a commit to fail")
    for words in (("release", str(held)), ("cancel", str(victim))):
        answer = cluster.run("hq-client", *words)
        assert answer.returncode != 0 and "[DATABASE_ERROR]" in answer.stderr, answer.stderr
        assert cause.search(answer.stderr), answer.stderr
        assert "will be recorded" in answer.stderr, answer.stderr
    assert f"job {held} pending -> dispatched" in cluster.server_log(), cluster.server_log()[-6000:]
    holds_for(3.5, lambda: (pid_alive(pids[long_job]) or time.time() >= long_ends)
              and cluster.server.poll() is None,
              "a job or hq-server died during the outage")     # > reconciliation's 2 s
    assert "does not know" not in cluster.server_log()
    end()
    jobs = {job["id"]: job for job in wait_settled(client, [long_job, victim, *short, queued,
                                                            held], 40)}
    states = {i: (jobs[i]["state"], jobs[i]["exit_code"]) for i in jobs}
    assert states == {long_job: ("done", 0), victim: ("cancelled", None),
                      short[0]: ("done", 0), short[1]: ("done", 0), queued: ("done", 0),
                      held: ("done", 0)}, states
    assert [len(jobs[i]["attempts"]) for i in (held, queued)] == [1, 1]
    assert ledger_counts(ledger) == {i: 1 for i in jobs}


def test_sqlite_outage_on_a_full_disk_loses_no_released_job(tmp_path):
    """Catches the server deciding on uncommitted state: the job released (and the one
    dispatched) while SQLite's disk is full used to be requeued 'agent does not know attempt
    1', then lost, since its RUN waited for the commit; release and cancel must answer
    DATABASE_ERROR naming the cause (not SERVER_UNREACHABLE), jobs must run on, and all end
    once the space is back, each run once."""
    ledger = tmp_path / "ledger"
    with small_tmpfs("8m") as disk:
        cluster = Cluster(f"sqlite:///{disk}/hq.sqlite", hosts=ONE_HOST)
        with cluster.running():
            outage_scenario(cluster, ledger, lambda: fill(disk), lambda: free(disk),
                            re.compile(SQLITE_FULL))


@pytest.mark.mysql
def test_mysql_outage_loses_no_released_job(tmp_path):
    """The same on MySQL: a private MariaDB stopped during the run and started again
    (same data, same port). Catches the released job lost as above, requests answered with
    SERVER_UNREACHABLE instead of DATABASE_ERROR naming the cause, and a job run twice."""
    ledger = tmp_path / "ledger"
    with private_mysql() as db:
        cluster = Cluster(db.url, hosts=ONE_HOST)
        with cluster.running():
            outage_scenario(cluster, ledger, lambda: db.kill(signal.SIGTERM), db.start,
                            MYSQL_DOWN)


@pytest.mark.mysql
def test_a_hung_mysql_fences_no_running_job(tmp_path):
    """A MySQL that accepts connections but answers nothing (mariadbd stopped with SIGSTOP)
    for 10 s, much longer than the test cluster's agent lease (3.5 s). Catches hq-server's
    loop waiting on the database without answering heartbeats: the agent fenced (killed) the
    running job. The job must run on, end done once, and a job submitted after runs."""
    ledger = tmp_path / "ledger"
    with private_mysql() as db:
        cluster = Cluster(db.url, hosts=ONE_HOST)
        with cluster.running():
            client = cluster.client()
            job = client.submit(ledger_command(ledger, "sleep 14"), retries=0)
            pid = wait_until(lambda: running_pids(ledger, [job]), 20, 0.05, "the job to run")[job]
            mysqld = db.pid()
            os.kill(mysqld, signal.SIGSTOP)
            try:        # a submission makes the server use the database during the hang
                during = subprocess.Popen(
                    [os.path.join(REPO, "bin", "hq-submit"), ledger_command(ledger, "true")],
                    env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                holds_for(10, lambda: pid_alive(pid), "the job was fenced while MySQL hung")
            finally:
                os.kill(mysqld, signal.SIGCONT)
            out, err = during.communicate(timeout=60)     # its answer came in time, or
            assert during.returncode == 0 or "[DATABASE_ERROR]" in err or \
                "may still be recorded" in err, err         # its client says it may be kept
            assert during.returncode != 0 or out.strip().isdigit(), (out, err)
            ids = [job] + ([int(out)] if during.returncode == 0 else [])
            ids.append(client.submit(ledger_command(ledger, "true"), retries=0))
            jobs = wait_settled(client, ids, 60)
            assert [(j["state"], len(j["attempts"])) for j in jobs] == [("done", 1)] * len(ids)
            counts = ledger_counts(ledger)
            assert set(ids) <= set(counts) and len(counts) <= len(ids) + 1, counts
            assert set(counts.values()) == {1}, counts      # whatever ran, ran once
            assert "fenced" not in cluster.server_log()


# -- 3: a full $HQ_HOME under a killed agent ----------------------------------------------
def agent_pid(cluster, host="localhost"):
    return read_pid(os.path.join(cluster.home, "run", f"agent-{host}.pid"))


def replaced_agent(cluster, old):
    new = agent_pid(cluster)
    return new if new and new != old and pid_alive(new) else None


def ended_sensibly(job):
    """Done once, or failed saying why (`unknown outcome`, `output: ...`): never an empty
    reason, never lost nor requeued."""
    if job["state"] == "done":
        return job["exit_code"] == 0
    return job["state"] == "failed" and bool(job["reason"])


def test_full_home_and_a_killed_agent_run_no_job_twice(tmp_path):
    """Catches the agent started after a kill -9 on a full $HQ_HOME dying at once (OSError
    ENOSPC while rewriting its journal), after which the server requeued the running job and
    ran it a second time. The new agent must live, adopt the job, and every job must end
    once: done, or failed with a reason (`unknown outcome` when its exit status could not be
    written); a job submitted on the full disk too."""
    ledger = tmp_path / "ledger"
    cluster = Cluster(f"sqlite:///{tmp_path}/hq.sqlite", hosts=ONE_HOST)
    with home_on_tmpfs(cluster) as home:
        client = cluster.client()
        job = client.submit(ledger_command(ledger, "sleep 7"))
        pid = wait_until(lambda: running_pids(ledger, [job]), 20, 0.05, "the job to run")[job]
        old = agent_pid(cluster)
        fill(home)
        kill_pid(old, signal.SIGKILL)
        new = wait_until(lambda: replaced_agent(cluster, old), 20, 0.1, "a new agent")
        late = client.submit(ledger_command(ledger, "true"))     # on the full disk
        holds_for(2, lambda: pid_alive(new), "the new agent died on the full disk")
        wait_until(lambda: not pid_alive(pid), 15, 0.1, "the adopted job to end")
        holds_for(1, lambda: pid_alive(new), "the new agent died when its job ended")
        free(home)
        after = client.submit(ledger_command(ledger, "true"))
        jobs = wait_settled(client, [job, late, after])
        assert all(ended_sensibly(j) for j in jobs), [(j["state"], j["reason"]) for j in jobs]
        assert [len(j["attempts"]) for j in jobs] == [1, 1, 1]
        assert jobs[2]["state"] == "done"
        assert agent_pid(cluster) == new and pid_alive(new)
        counts = ledger_counts(ledger)
        assert counts[job] == 1 and counts[after] == 1 and counts[late] <= 1, counts


# -- 4: a reset database and an old exits file ----------------------------------------------
def exits_lines(cluster, host="localhost"):
    directory = os.path.join(cluster.home, "run", f"jobs-{host}")
    lines = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("exits"):
            with open(os.path.join(directory, name)) as handle:
                lines += handle.read().split("\n")
    return lines


def crash_agent_and_jobs(cluster, job_pids):
    """kill -9 the agent, then its jobs' process groups: nobody sees them end."""
    kill_pid(agent_pid(cluster), signal.SIGKILL)
    for pid in job_pids:
        os.killpg(pid, signal.SIGKILL)


def test_reset_database_never_reports_the_old_databases_exit_codes(tmp_path):
    """Catches an agent that keys exit statuses by job and attempt only: after the tables are
    dropped and made again (ids start at 1 again), new jobs 1 and 2 killed with their agent
    were adopted with the exit codes that the old database's jobs 1 and 2 left in the exits
    file (a SIGKILLed `sleep 20` recorded `done`, exit 0; another `failed`, exit 3). They
    must fail with `unknown outcome`, each run once."""
    ledger = tmp_path / "ledger"
    cluster = Cluster(f"sqlite:///{tmp_path}/hq.sqlite", hosts=ONE_HOST)
    with cluster.running():
        client = cluster.client()
        old = client.submit_many(["true", "exit 3", "true", "exit 3"])
        assert [j["exit_code"] for j in wait_settled(client, old)] == [0, 3, 0, 3]
        old_exit = re.compile(r"2\.1(\.\w+)? 3$")      # what job 2 left: its key, status 3
        assert any(old_exit.match(line) for line in exits_lines(cluster)), exits_lines(cluster)
        cluster.stop_server()
        cluster.setup_database()                # --drop-tables --yes --create-tables ...
        cluster.start_server()
        new = client.submit_many([ledger_command(ledger, "sleep 20")] * 2)
        assert new == old[:2]
        pids = wait_until(lambda: running_pids(ledger, new), 20, 0.05, "the new jobs to run")
        crash_agent_and_jobs(cluster, pids.values())
        jobs = wait_settled(client, new)
        assert [(j["state"], j["exit_code"], j["reason"]) for j in jobs] == [
            ("failed", None, "unknown outcome")] * 2
        assert [len(j["attempts"]) for j in jobs] == [1, 1]
        assert ledger_counts(ledger) == {i: 1 for i in new}


# -- 5: the chaos run with disk and database faults -----------------------------------------
def chaos_figures(output):
    """name -> value of the table tools/chaos.py prints last."""
    rows = (re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in output.splitlines())
    return {row[0]: row[1] for row in rows if len(row) == 2}


def test_chaos_with_disk_and_db_faults_runs_no_job_twice():
    """tools/chaos.py --faults=disk,db, short and seeded (jobs 0.01-0.5 s, kill -9s, a full
    $HQ_HOME, SQLite's disk full, some with a kill while they last). Catches a job run twice
    or lost, a job `done` without running, faults that do not strike, and the tool itself
    hanging or leaving mounts behind."""
    need_mounts()
    command = [sys.executable, os.path.join(REPO, "tools", "chaos.py"), "--jobs=120",
               "--sleep=0.5", "--kills=2", "--faults=disk,db", "--outages=1", "--seed=12"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100)
    figures = chaos_figures(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert figures["faults: disk"] == "1" and figures["faults: db"] == "1", figures
    assert figures["ran twice"] == "0" and figures["lost"] == "0", figures
    assert figures["done but not in ledger"] == "0", figures
    assert "hqfs" not in open("/proc/mounts").read()
