"""Bad configuration, a refusing database and bad input: one clear line, non-zero exit, no
traceback, no hang. And administrative state survives a server restart."""

import json
import os
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.helpers import BIN, Cluster, free_port


def run(env, *args, timeout=20, input=None):
    return subprocess.run([os.path.join(BIN, args[0]), *args[1:]], env=env, capture_output=True,
                          text=True, timeout=timeout, input=input)


def one_line_error(result, *words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture
def quiet_cluster(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite")
    yield c
    c.close()


def test_broken_cluster_tab_is_named(quiet_cluster):
    c = quiet_cluster
    c.write_cluster([("node1", "lots", "-", "-")])
    one_line_error(run(c.env, "hq-dbadmin", "--create-tables", "--add-standard-entries"),
                   "cluster.tab line 1", "max slots", "[CONFIG_ERROR]")
    c.run("hq-dbadmin", "--create-tables", check=True)
    one_line_error(run(c.env, "hq-server"), "cluster.tab line 1", "[CONFIG_ERROR]")


def test_missing_db_config_is_named(quiet_cluster):
    env = dict(quiet_cluster.env)
    env.pop("HQ_DB_URL")
    os.unlink(os.path.join(quiet_cluster.etc, "hq-db.cfg"))
    one_line_error(run(env, "hq-dbadmin", "--info"), "hq-db.cfg: file not found")


def test_refusing_database_gives_a_clear_line(quiet_cluster):
    env = dict(quiet_cluster.env, HQ_DB_URL=f"mysql://root@127.0.0.1:{free_port()}/hq")
    one_line_error(run(env, "hq-dbadmin", "--create-tables"), "cannot reach MySQL",
                   "[DATABASE_ERROR]")
    one_line_error(run(env, "hq-server"), "[DATABASE_ERROR]")


def test_server_without_tables_says_what_to_run(quiet_cluster):
    one_line_error(run(quiet_cluster.env, "hq-server"), "hq-dbadmin --create-tables")


def test_port_in_use_is_reported(quiet_cluster):
    c = quiet_cluster
    c.setup_database()
    c.start_server()
    one_line_error(run(c.env, "hq-server"), "cannot listen on", str(c.port))


def test_drop_tables_asks_unless_yes(quiet_cluster):
    c = quiet_cluster
    c.setup_database()
    one_line_error(run(c.env, "hq-dbadmin", "--drop-tables", input=""), "needs --yes")
    assert "jobs" in c.run("hq-dbadmin", "--info", check=True).stdout
    c.run("hq-dbadmin", "--drop-tables", "--yes", check=True)
    assert "schema version  None" in c.run("hq-dbadmin", "--info", check=True).stdout


def test_bad_submit_options(cluster):
    for args, words in ((["-m", "lots", "true"], "memory must look like"),
                        (["-d", "/no/such/dir", "true"], "no such directory"),
                        (["-t", "-5", "true"], "-t/--time-limit"),
                        (["-f", "/no/such/file"], "No such file")):
        one_line_error(cluster.run("hq-submit", *args), *[words])
    one_line_error(cluster.run("hq-client", "cancel", "abc"), "job id must be a whole number")


def test_host_and_cluster_state_survive_a_restart(cluster):
    cluster.run("hq-admin", "deactivatehost:localhost", check=True)
    cluster.run("hq-admin", "deactivate", check=True)
    cluster.stop_server()
    cluster.start_server()
    state = json.loads(cluster.run("hq-admin", "lscluster", "--json", check=True).stdout)
    assert state["cluster"] == "inactive" and state["hosts"][0]["state"] == "inactive"


ONE_LINE = re.compile(r"^hq-submit: .+ \[[A-Z_]+\]$")


@pytest.fixture
def sqlite_cluster(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite")
    with c.running():
        yield c


def test_bad_numbers_are_one_line(sqlite_cluster):
    """Catches the tracebacks of -m nan / -m 1e400 (float to int) and numbers past what the
    server stores: each is one line naming the option, exit 1, nothing submitted."""
    cases = ((["-m", "nan"], "finite"), (["-m", "1e400"], "finite"), (["-m", "-1"], "negative"),
             (["-m", "9e18G"], "too large"), (["-t", "inf"], "-t/--time-limit"),
             (["-t", "1e3"], "-t/--time-limit"), (["-c", "0"], "at least 1"),
             (["-c", str(1 << 40)], "at most"), (["-p", "-" + "9" * 5000], "-p/--priority"),
             (["-a", "1,x"], "--after"), (["--bogus"], "cannot parse"),
             (["-r", "nan"], "-r/--retries"))
    for args, words in cases:
        result = sqlite_cluster.run("hq-submit", *args, "true")
        one_line_error(result, words)
        assert ONE_LINE.match(result.stderr.strip()), result.stderr
    listed = sqlite_cluster.run("hq-client", "list", "--json", check=True)
    assert json.loads(listed.stdout) == []


def test_control_characters_in_errors_are_escaped(sqlite_cluster):
    """Catches a refusal that echoes a hostile value raw: the error line has no ESC."""
    result = sqlite_cluster.run("hq-submit", "--host=\x1b[2Jnode\nx", "true")
    one_line_error(result, "[UNKNOWN_HOST]")
    assert "\x1b" not in result.stderr


NUMERIC = ("--slots", "--mem", "--priority", "--time-limit", "--retries", "--after")
TEXTUAL = ("--name", "--stdout", "--stderr", "-O", "--logfile", "--dir", "--group", "--host",
           "--exclude-hosts", "--info-text", "--shell", "--reservation")
# what a shell can pass: anything but NUL (and lone surrogates, which have no bytes)
ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                   max_size=40)
HOSTILE = st.one_of(
    ARG_TEXT,
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "1" * 5000, "0x10",
                     "1_000", " 7 ", "\u0663", "\x1b]0;pwned\x07", "a\nb", "4G", "1.5T", "-0",
                     "9223372036854775808", "2147483648", "/", "/dev/null", "%j%j", "a,b,,c"]),
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
    st.floats().map(str),
    ARG_TEXT.map(lambda text: text * 200))


@pytest.mark.slow
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(option=st.sampled_from(NUMERIC + TEXTUAL), value=HOSTILE)
def test_hostile_option_values(sqlite_cluster, option, value):
    """Catches any option value that makes hq-submit print a traceback or more than one line:
    the outcome is success (exit 0, a job id) or exit 1 with one 'hq-submit: ... [CODE]'."""
    flag = f"-O{value}" if option == "-O" else f"{option}={value}"
    result = sqlite_cluster.run("hq-submit", "--hold", flag, "true", timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        assert result.stdout.strip().isdigit() and result.stderr == ""
    else:
        assert result.returncode == 1, (result.returncode, result.stderr)
        assert ONE_LINE.match(result.stderr.rstrip("\n")), result.stderr
        assert "\x1b" not in result.stderr


HOSTILE_LINE = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"echo a\0b", b"\xff\xfe", b"echo \x1b]0;pwned\x07", b"x" * (1 << 20 | 1),
                     b"echo \xed\xa0\x80", b"\r", b"#\0"]),
    st.text(max_size=40).map(str.encode))


@pytest.mark.slow
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(HOSTILE_LINE, min_size=1, max_size=3))
def test_hostile_input_lines(sqlite_cluster, lines):
    """Catches a line of standard input (NUL, not UTF-8, ESC, over 1 MiB) that makes
    'hq-submit -' print a traceback or several lines instead of one naming the line."""
    data = b"\n".join(b"true # " + line if i % 2 else line for i, line in enumerate(lines))
    result = subprocess.run([os.path.join(BIN, "hq-submit"), "--hold", "-q", "-"], input=data,
                            env=sqlite_cluster.env, capture_output=True, timeout=60)
    err = result.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    if result.returncode != 0:
        assert result.returncode == 1 and ONE_LINE.match(err.rstrip("\n")), err
        assert "\x1b" not in err
