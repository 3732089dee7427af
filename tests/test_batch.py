"""Batch submission end to end on both backends: `hq-submit -` streaming in chunks, errors
naming the line, --each-line and HQ_ENTRY, batch list/cancel/wait, progress, the Python API."""

import fcntl
import json
import os
import pty
import re
import struct
import termios
import time

import pytest

from hq.errors import HQError
from tests.helpers import BIN, wait_until


def batch_of(result):
    match = re.search(r"submitted as batch (\d+)", result.stderr)
    assert match, result.stderr
    return int(match.group(1))


def listed(cluster, batch):
    result = cluster.run("hq-client", "list", "--batch", str(batch), "--json", check=True)
    return json.loads(result.stdout)


def test_two_thousand_lines_through_a_pipe(cluster):
    lines = "".join(f"echo line {i}\n" if i % 100 else "\n# a comment\n" for i in range(2100))
    result = cluster.run("hq-submit", "-", input=lines, timeout=60)
    assert result.returncode == 0, result.stderr
    ids = [int(i) for i in result.stdout.split()]
    assert len(ids) == 2079 and ids == list(range(ids[0], ids[0] + 2079))
    batch = batch_of(result)
    waited = cluster.run("hq-client", "wait", "--batch", str(batch), "--progress",
                         "--timeout", "150", timeout=180)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "done 2079"
    progress = waited.stderr.strip().splitlines()
    assert progress and all(re.match(r"\d+/2079 ended: done \d+, failed 0, running \d+, "
                                     r"pending \d+; [\d.]+ jobs/s, eta", line)
                            for line in progress), progress
    assert progress[-1].startswith("2079/2079 ended: done 2079")
    jobs = listed(cluster, batch)
    assert [j["id"] for j in jobs] == ids
    assert {j["state"] for j in jobs} == {"done"}
    commands = [f"echo line {i}" for i in range(2100) if i % 100]
    assert [j["command"] for j in jobs] == commands


def test_bad_line_rejects_its_chunk_and_keeps_earlier_ones(cluster):
    lines = [f"true {i}" for i in range(1, 3001)]
    lines[1999] = "true \0 bad"          # line 2000
    result = cluster.run("hq-submit", "--hold", "-", input="\n".join(lines) + "\n", timeout=60)
    assert result.returncode == 1
    assert "hq-submit: line 2000: contains a NUL character; stopped there, " in result.stderr
    assert "Traceback" not in result.stderr
    ids = [int(i) for i in result.stdout.split()]
    assert 0 < len(ids) < 2000, "the chunk holding line 2000 must not be submitted"
    batch = int(re.search(r"submitted before it \(batch (\d+)\)", result.stderr).group(1))
    assert f"{len(ids)} jobs submitted before it" in result.stderr
    jobs = listed(cluster, batch)
    assert [j["id"] for j in jobs] == ids
    assert [j["command"] for j in jobs] == lines[:len(ids)]


def test_server_refusal_names_the_job_and_stops_the_batch(cluster):
    client = cluster.client()
    chunks = [["true"] * 3, ["true", "true\0", "true"], ["true"] * 4]
    accepted = []
    with pytest.raises(HQError) as refused:
        for batch, ids in client.submit_stream(iter(chunks), hold=True, window=3):
            accepted.append((batch, ids))
    assert refused.value.chunk == 1 and refused.value.index == 1
    assert "job 2: command contains a NUL character" in refused.value.message
    assert len(accepted) == 1 and len(accepted[0][1]) == 3
    batch = accepted[0][0]
    assert [j["id"] for j in client.list(batch=batch)] == accepted[0][1]
    with pytest.raises(HQError) as stopped:
        client.request(b"SUBMIT", jobs=["true"], batch=batch)
    assert "stopped by an error" in stopped.value.message
    client.close()


def test_each_line_substitutes_and_sets_hq_entry(cluster, tmp_path):
    entries = tmp_path / "entries.txt"
    entries.write_text("alpha\n\n# skipped\nbeta gamma\n")
    out = tmp_path / "out-%j.txt"
    result = cluster.run("hq-submit", "-o", str(out), "--each-line", str(entries),
                         'echo [{}] "<$HQ_ENTRY>" "$HQ_BATCH_ID"', timeout=30)
    assert result.returncode == 0, result.stderr
    ids = [int(i) for i in result.stdout.split()]
    batch = batch_of(result)
    assert len(ids) == 2
    assert cluster.run("hq-client", "wait", "--batch", str(batch), "--timeout", "60",
                       timeout=90).returncode == 0
    texts = [(tmp_path / f"out-{i}.txt").read_text() for i in ids]
    assert texts == [f"[alpha] <alpha> {batch}\n", f"[beta gamma] <beta gamma> {batch}\n"]
    assert [j["command"] for j in listed(cluster, batch)] == [
        'echo [alpha] "<$HQ_ENTRY>" "$HQ_BATCH_ID"',       # {}: the line shell-quoted
        'echo [\'beta gamma\'] "<$HQ_ENTRY>" "$HQ_BATCH_ID"']


def test_batch_cancel_and_wait(cluster):
    result = cluster.run("hq-submit", "-", input="sleep 60\n" * 5, timeout=30)
    assert result.returncode == 0, result.stderr
    batch = batch_of(result)
    wait_until(lambda: any(j["state"] == "running" for j in listed(cluster, batch)), 30,
               0.1, "a job of the batch to run")
    timed_out = cluster.run("hq-client", "wait", "--batch", str(batch), "--timeout", "1")
    assert timed_out.returncode == 2 and "[TIMEOUT]" in timed_out.stderr
    cancelled = cluster.run("hq-client", "cancel", "--batch", str(batch))
    assert cancelled.returncode == 0 and "5 jobs cancelled" in cancelled.stderr
    waited = cluster.run("hq-client", "wait", "--batch", str(batch), "--timeout", "30",
                         timeout=60)
    assert waited.returncode == 1 and waited.stdout.strip() == "cancelled 5"
    assert {j["state"] for j in listed(cluster, batch)} == {"cancelled"}
    unknown = cluster.run("hq-client", "wait", "--batch", "999")
    assert unknown.returncode == 1 and "no batch 999" in unknown.stderr


def test_submit_wait_progress_without_a_tty(cluster):
    result = cluster.run("hq-submit", "--wait", "--progress", "-",
                         input="true\ntrue\nexit 4\n", timeout=90)
    assert result.returncode == 4
    assert len(result.stdout.split()) == 3
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("3/3 ended: done 2, failed 1, running 0, pending 0;"), result.stderr
    assert "\r" not in result.stderr      # no bar drawing when not on a terminal


def test_python_api_submit_many_and_as_completed(cluster):
    client = cluster.client()
    ids = client.submit_many([f"exit {i % 3}" for i in range(30)])
    assert ids == list(range(ids[0], ids[0] + 30))
    seen = []
    for job in client.as_completed(ids, timeout=120):
        assert job["state"] in ("done", "failed")
        seen.append(job["id"])
    assert sorted(seen) == ids
    jobs = {j["id"]: j for j in client.details(ids, events=False)}
    assert len({jobs[i]["batch"] for i in ids}) == 1
    assert [jobs[i]["exit_code"] for i in ids] == [i % 3 for i in range(30)]
    client.close()


def test_submit_wait_on_a_terminal_draws_a_bar(cluster):
    lines = cluster.root + "/lines.txt"
    with open(lines, "w") as handle:
        handle.write("true\n" * 40)
    pid, fd = pty.fork()
    if pid == 0:      # the child: hq-submit with a terminal as stdin, stdout and stderr
        os.chdir(cluster.root)
        os.execve(os.path.join(BIN, "hq-submit"), ["hq-submit", "--wait", "-f", lines],
                  cluster.env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    output, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 4096)
        except OSError:          # the child closed the terminal
            break
        if not data:
            break
        output += data
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-500:]
    assert "\r100%|" in text and "40/40" in text and "done=40, failed=0" in text
