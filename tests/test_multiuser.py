"""Issue 11, "many users on one cluster", checked as real Unix users would: root runs hq-server
and registers two users (made with useradd), who run hq as themselves from a shared venv.

Keys, private files, bounded lists, what is not yours, control characters, leftover children.
(test_multiuser_hostile.py: the points that break agents or the server.) The one test marked
xfail names a limit hq does not meet (libzmq takes a multipart message in whole)."""

import json
import os
import re
import signal
import subprocess

import pytest

from tests import multiuser
from tests.helpers import pid_alive, wait_until

pytestmark = [pytest.mark.timeout(300)]

NEEDS_MESSAGE = ("libzmq (4.3) hands a multipart message to hq-server only once all its frames "
                 "have arrived, and ZMQ_MAXMSGSIZE bounds each frame: no whole-message limit "
                 "can be set (issue 11, blocked); hq-server refuses such a message once read")
ONE_LINE = re.compile(r"^[a-z-]+: .+ \[[A-Z_]+\]$")
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\nFAKE LINE\t\x9b"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """root's hq-server (max_message_bytes 1 MiB); alice and bob registered, removed after."""
    yield from multiuser.site_fixture(tmp_path_factory, max_message_bytes=1 << 20)


def mode(path):
    return os.stat(path).st_mode & 0o777


# -- keys and first commands ---------------------------------------------------------------------

def test_first_command_asks_for_registration_then_works(site):
    """Catches 'no hq-server public key' on a new user's first command (the key was 0600 in
    the admin's home) and a job that does not run as its submitter."""
    first = site.first["alice"]
    assert "no hq-server public key" not in first.stderr
    assert ONE_LINE.match(first.stderr.strip()), first.stderr
    assert "PERMISSION_DENIED" in first.stderr and "hq-admin adduser" in first.stderr
    out = os.path.join(site.users["alice"].home, "whoami.out")
    site.submit("alice", "--wait", "-o", out, "id -un")
    with open(out) as handle:
        assert handle.read().strip() == site.users["alice"].name
    assert os.stat(out).st_uid == site.users["alice"].uid


def test_homes_and_keys_are_private(site):
    """Catches HQ_HOME, log/, output/ left 0755 by umask 022, and another user reading them;
    the public key is 0644 (secret 0600) so it can be handed to an admin."""
    home = site.hq_home("alice")
    for folder in ("", "run", "log", "keys", "output"):
        assert mode(os.path.join(home, folder)) == 0o700, folder
    assert mode(os.path.join(home, "keys", "user.key")) == 0o644
    assert mode(os.path.join(home, "keys", "user.key_secret")) == 0o600
    assert mode(os.path.join(home, "log", "user-server.log")) == 0o600
    job = site.submit("alice", "--wait", "echo private")
    output = os.path.join(home, "output", f"{job}.out")
    peek = subprocess.run(site.command("bob", ["cat", output]), capture_output=True, text=True,
                          timeout=30)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr
    assert mode(os.path.join(site.cluster.etc, "server.key")) == 0o644


def test_adduser_with_an_unreadable_key_says_so(site):
    """Catches the misleading 'Invalid certificate file' when an admin who is not root names
    a key in a user's private home: one line, 'cannot read FILE: permission denied'."""
    key = os.path.join(site.hq_home("alice"), "keys", "user.key")
    result = site.run("bob", "hq-admin", "adduser", "someone", f"--key={key}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ONE_LINE.match(result.stderr.strip()), result.stderr
    assert f"cannot read {key}: permission denied" in result.stderr


# -- 5: bounded lists and messages --------------------------------------------------------------

@pytest.fixture
def crowd(site):
    """10,050 held jobs of bob's (one streamed submission); cancelled after."""
    lines = "".join(f"echo crowd {i}\n" for i in range(10050))
    result = site.run("bob", "hq-submit", "--hold", "-q", "-", input=lines, timeout=120)
    assert result.returncode == 0, result.stderr
    batch = re.search(r"batch (\d+)", result.stderr)
    yield 10050
    site.run("bob", "hq-client", "cancel", "--batch", batch.group(1) if batch else "1")


@pytest.mark.slow
def test_lists_show_at_most_the_newest_10000(site, crowd):
    """Catches unbounded lists: hq-client list, lswjobs:all and hq-admin jobs show the
    newest 10,000 jobs and say there are more (one line on stderr)."""
    for role, args in (("bob", ("hq-client", "list")), ("bob", ("hq-client", "lswjobs:all")),
                       (None, ("hq-admin", "jobs"))):
        result = site.admin(*args) if role is None else site.run(role, *args, check=True)
        rows = result.stdout.strip().splitlines()[1:]
        assert len(rows) == 10000, (args, len(rows))
        assert rows[-1].split()[-1] == "10049"        # the newest is shown
        assert "showing the newest 10000 jobs" in result.stderr
    limited = json.loads(site.run("bob", "hq-client", "list", "--json", "--limit=5",
                                  check=True).stdout)
    assert len(limited) == 5


@pytest.mark.slow
def test_server_caps_a_list_without_limit(site, crowd):
    """Catches a LIST that asks for everything (limit 0): the server answers a bounded page."""
    with site.driver("bob") as driver:
        reply = driver.call(op="request", kind="LIST", body={"limit": 0, "states": []})
    assert "ok" in reply, reply
    assert len(reply["ok"]["jobs"]) <= 10000


def peak_rss_kb(pid, reset=False):
    """The process's peak resident memory (VmHWM); `reset` first lowers the peak to what it
    holds now (clear_refs 5), so that an earlier test's peak does not hide this one's."""
    if reset:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(r"VmHWM:\s+(\d+)", handle.read()).group(1))


@pytest.mark.xfail(reason=NEEDS_MESSAGE, strict=True)
def test_many_frames_do_not_pass_the_message_limit(site):
    """Catches max_message_bytes bounding each frame only: 60 frames of 0.9 MiB (54 MiB, the
    limit is 1 MiB) must not be taken in whole; the server still serves bob."""
    before = peak_rss_kb(site.cluster.server.pid, reset=True)
    with site.driver("alice") as driver:
        driver.call(op="raw", frames=[900 * 1024] * 60, timeout=2)
    site.submit("bob", "--wait", "true")
    grown = peak_rss_kb(site.cluster.server.pid) - before
    assert grown < 27 * 1024, f"server peak memory grew by {grown} kB"


# -- 6: what is not yours -----------------------------------------------------------------------

@pytest.fixture
def alice_secret_job(site):
    marker = "alice-secret-7f3a"
    job = site.submit("alice", "-n", marker, f"sleep 30 # {marker}")
    wait_until(lambda: site.state("alice", job) == "running", 20, message="alice's job")
    yield marker
    site.cancel_all("alice")


@pytest.mark.parametrize("args", [("hq-admin", "jobs", "--user=ALICE"), ("hq-admin", "jobs"),
                                  ("hq-admin", "hostinfo:localhost"), ("hq-admin", "lsusers"),
                                  ("hq-admin", "lsuser:ALICE")], ids=" ".join)
def test_bob_cannot_read_alices_jobs_or_account(site, alice_secret_job, args):
    """Catches admin views open to every user: bob sees neither alice's job nor her name."""
    alice = site.users["alice"].name
    result = site.run("bob", *[a.replace("ALICE", alice) for a in args])
    assert "Traceback" not in result.stderr
    assert alice_secret_job not in result.stdout and alice not in result.stdout


def test_reservations_are_the_admins(site):
    """Catches reservation codes shown to everyone (hq-reservation -s) and then usable by
    anyone: bob neither sees the admin's code nor submits with it."""
    site.admin("hq-reservation", "-a", "localhost:1", "--code=rootsecret42")
    try:
        shown = site.run("bob", "hq-reservation", "-s")
        assert "rootsecret42" not in shown.stdout
        used = site.run("bob", "hq-submit", "--reservation=rootsecret42", "true")
        assert used.returncode == 1 and ONE_LINE.match(used.stderr.strip()), used.stderr
    finally:
        site.admin("hq-reservation", "-d", "rootsecret42", check=False)
        site.cancel_all("bob")


def test_jobs_create_files_with_the_submitters_umask(site):
    """Catches a job's umask taken from whichever command started the user-server: alice's
    user-server starts under umask 022, her job submitted under 077 makes 0600 files."""
    home = site.users["alice"].home
    site.run("alice", "hq-client", "status", umask=0o022, check=True)    # it runs: 022
    out, made = os.path.join(home, "umask.out"), os.path.join(home, "umask.made")
    result = site.run("alice", "hq-submit", "--wait", "-o", out, f"touch {made}", umask=0o077)
    assert result.returncode == 0, result.stderr
    assert (mode(out), mode(made)) == (0o600, 0o600)


def test_sqlite_database_is_private(site):
    """Catches the SQLite database (every user's commands and environments) made 0644."""
    path = site.cluster.db_url[len("sqlite:///"):]
    assert mode(path) & 0o077 == 0


# -- 7: control characters ----------------------------------------------------------------------

def unreachable(site, reason):
    """alice's user-server tells the server (as it does after a failed ssh) why 'ghost' is
    unreachable; the reason is hers to choose."""
    with site.driver("alice") as driver:
        return driver.call(op="request", kind="UNREACHABLE", body={"host": "ghost",
                                                                   "reason": reason})


def test_admin_tables_escape_user_text(site):
    """Catches ESC sequences and newlines of a user's command, name, info text and
    unreachable reason printed raw by the admin's tables (they could rewrite the screen)."""
    job = site.submit("alice", "--hold", "-n", f"n{HOSTILE}", "-i", HOSTILE, f"true {HOSTILE}")
    unreachable(site, f"r{HOSTILE}")
    try:
        outputs = [site.admin("hq-admin", *args).stdout for args in (
            ("jobs",), ("lscluster",), ("hostinfo:ghost",), ("hostinfo:localhost",))]
        outputs += [site.run("alice", "hq-client", *args, check=True).stdout for args in (
            ("details", str(job)), ("list",), ("findjobs:FAKE",), ("lswjobs",))]
        for text in outputs:
            assert not set(text) & {"\x1b", "\x07", "\x9b", "\t"}, text
            assert not any(line.startswith("FAKE LINE") for line in text.splitlines())
        assert "\\x1b]0;pwned\\x07" in outputs[0] and "\\nFAKE LINE" in outputs[0]
        assert "r\\x1b]0;pwned" in outputs[1]
    finally:
        site.cancel_all("alice")


def test_hostile_host_os_is_escaped(site):
    """Catches a host's os field (set by an agent's REGISTER) printed raw by hostinfo."""
    fake = {"req": 1, "host": "ghost", "cores": 1, "memory_total": 1 << 30,
            "os": f"Linux{HOSTILE}", "running": []}
    with site.driver("alice") as driver:
        driver.call(op="raw", kind="REGISTER", body=fake, timeout=3)
    text = site.admin("hq-admin", "hostinfo:ghost").stdout
    assert "\x1b" not in text and "\t" not in text


def test_server_log_escapes_user_text(site):
    """Catches user text written raw to the server log (forged lines, terminal control)."""
    site.submit("alice", "--hold", "-n", f"n{HOSTILE}", f"true {HOSTILE}")
    unreachable(site, f"r{HOSTILE}")
    site.cancel_all("alice")
    log = site.cluster.server_log()
    assert "\x1b" not in log and "\nFAKE LINE" not in log


def test_user_server_log_is_one_line_per_event(site):
    """Catches control characters in alice's user-server log (ssh outcomes, host names)."""
    site.run("alice", "hq-client", "status", check=True)
    with open(os.path.join(site.hq_home("alice"), "log", "user-server.log"), "rb") as handle:
        text = handle.read()
    assert b"\x1b" not in text and b"\r" not in text


# -- 8: leftover children -----------------------------------------------------------------------

def test_setsid_children_do_not_outlive_their_job(site):
    """Catches a job's setsid child running on, outside any slot, after the job is done."""
    pidfile = os.path.join(site.users["alice"].home, "leftover.pid")
    job = site.submit("alice", f"setsid sleep 300 </dev/null >/dev/null 2>&1 & "
                               f"echo $! > {pidfile}")
    waited = site.wait_job("alice", job, 15)
    pid = int(open(pidfile).read()) if os.path.exists(pidfile) else None
    try:
        assert waited.returncode == 0, waited.stdout + waited.stderr
        wait_until(lambda: not pid_alive(pid), 10, message="the leftover child to end")
    finally:
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
