"""What a new user hit, against a real cluster: the job's shell looks like `sh -c`, `--` ends
the options, outputs are truncated unless --append, --json prints only JSON, -q hides
progress, a killed job's wait line names its signal, ISO times in `hq-admin info`, the job
JSON's depends_on/reservation/entry, --each-line quoting, lscluster within 80 columns.

Each test names in its docstring the bug it catches."""

import json
import os
import re

from tests.helpers import Cluster, wait_until


def output_of(cluster, job_id):
    job = json.loads(cluster.run("hq-client", "details", str(job_id), "--json",
                                 check=True).stdout)[0]
    with open(job["stdout"]) as out, open(job["stderr"]) as err:
        return job, out.read(), err.read()


def test_the_jobs_shell_is_sh_c_and_double_dash_ends_the_options(cluster):
    """Catches `.../exits: 1: eval: nosuchcmd: not found` (an internal file named), `$0` that
    file, and `--` taken as part of the command."""
    missing = cluster.run("hq-submit", "--wait", "nosuchcmd")
    assert missing.returncode == 127
    _, _, err = output_of(cluster, missing.stdout.strip())
    assert err == "sh: 1: nosuchcmd: not found\n"
    zero = cluster.run("hq-submit", "--wait", "echo $0 $#", check=True)
    assert output_of(cluster, zero.stdout.strip())[1] == "sh 0\n"
    listed = cluster.run("hq-submit", "--wait", "--", "ls", "/", check=True)
    job, out, _ = output_of(cluster, listed.stdout.strip())
    assert job["command"] == "ls /" and "tmp\n" in out


def test_outputs_are_truncated_unless_append(cluster):
    """Catches output files that grow with every run of the same command (Slurm truncates)."""
    path = os.path.join(cluster.root, "same.out")
    for word in ("one", "two"):
        cluster.run("hq-submit", "--wait", "-o", path, f"echo {word}", check=True)
    assert open(path).read() == "two\n"
    cluster.run("hq-submit", "--wait", "--append", "-o", path, "echo three", check=True)
    assert open(path).read() == "two\nthree\n"


def test_batch_scripts_append_when_asked(cluster, tmp_path):
    """Catches --append dropped for batch scripts (and #SBATCH --open-mode=append ignored):
    the script's output was truncated anyway."""
    out = tmp_path / "script.out"
    out.write_text("before\n")
    plain = tmp_path / "plain.sh"
    plain.write_text(f"#!/bin/sh\n#SBATCH -o {out}\necho plain\n")
    slurm = tmp_path / "slurm.sh"
    slurm.write_text(f"#!/bin/sh\n#SBATCH -o {out}\n#SBATCH --open-mode=append\necho slurm\n")
    cluster.run("hq-submit", "--wait", "--append", str(plain), check=True)
    assert out.read_text() == "before\nplain\n"
    cluster.run("hq-submit", "--wait", str(slurm), check=True)
    assert out.read_text() == "before\nplain\nslurm\n"
    cluster.run("hq-submit", "--wait", str(plain), check=True)
    assert out.read_text() == "plain\n"


def test_json_wait_prints_only_json_and_quiet_shows_no_progress(cluster):
    """Catches the job id printed before the JSON (a script's json.loads fails), and a
    progress display that -q does not hide."""
    done = cluster.run("hq-submit", "--json", "--wait", "true", check=True)
    (job,) = json.loads(done.stdout)
    assert job["state"] == "done"
    quiet = cluster.run("hq-submit", "-q", "--progress", "--wait", "true", check=True)
    assert (quiet.stdout, quiet.stderr) == ("", "")


def test_wait_names_the_signal_of_a_killed_job(cluster):
    """Catches `ID failed exit None` for a job killed by a signal."""
    job = cluster.run("hq-submit", "kill -KILL $$", check=True).stdout.strip()
    waited = cluster.run("hq-client", "wait", job)
    assert waited.returncode == 1
    assert waited.stdout == f"{job} failed signal 9 (SIGKILL)\n"


def test_times_are_iso_and_the_job_json_is_whole(cluster):
    """Catches seconds since the epoch in `hq-admin info` and a job JSON without depends_on,
    reservation or entry (columns the database has)."""
    info = json.loads(cluster.run("hq-admin", "info", "--json", check=True).stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info["started"])
    first = cluster.run("hq-submit", "true", check=True).stdout.strip()
    lines = os.path.join(cluster.root, "lines")
    with open(lines, "w") as handle:
        handle.write("a\n")
    cluster.run("hq-submit", f"--after={first}", f"--each-line={lines}", "echo {}",
                check=True)
    jobs = json.loads(cluster.run("hq-client", "list", "--json", check=True).stdout)
    assert {k: jobs[-1][k] for k in ("depends_on", "reservation", "entry")} == \
        {"depends_on": first, "reservation": "", "entry": "a"}


def test_each_line_quotes_the_line_unless_raw(cluster):
    """Catches a line of input run as shell code: `x; echo INJECTED` must stay one word."""
    lines = os.path.join(cluster.root, "lines")
    with open(lines, "w") as handle:
        handle.write("x; echo INJECTED\n")
    for extra, want in (([], "x; echo INJECTED\n"), (["--raw"], "x\nINJECTED\n")):
        job = cluster.run("hq-submit", "-q", "--json", *extra, f"--each-line={lines}",
                          "echo {}", check=True)
        (shown,) = json.loads(job.stdout)
        cluster.run("hq-client", "wait", str(shown["id"]), check=True)
        assert output_of(cluster, shown["id"])[1] == want


def test_lscluster_fits_80_columns_and_hostinfo_rounds(db_url):
    """Catches lscluster lines that wrap on an 80-column terminal (a long reason) and
    hostinfo floats shown with all their digits (or a newline shown as `\\n`)."""
    hosts = (("localhost", "-", "local", "127.0.0.1"), ("ghost", "2", "-", "127.0.0.1:1"))
    cluster = Cluster(db_url, hosts=hosts)
    with cluster.running():
        cluster.run("hq-submit", "--wait", "true", check=True)

        def ghost_reason():
            shown = json.loads(cluster.run("hq-admin", "lscluster", "--json").stdout or "{}")
            return [h for h in shown.get("hosts", []) if h["name"] == "ghost"
                    and len(h["status_reason"]) > 40]
        wait_until(ghost_reason, 30, interval=0.2, message="ghost's reason")
        env = dict(cluster.env, COLUMNS="80")
        narrow = cluster.run("hq-admin", "lscluster", env=env, check=True).stdout
        assert max(len(line) for line in narrow.splitlines()) <= 80
        wide = cluster.run("hq-admin", "lscluster", "--wide", env=env, check=True).stdout
        assert max(len(line) for line in wide.splitlines()) > 80
        info = cluster.run("hq-admin", "hostinfo:localhost", check=True).stdout
        assert not re.search(r"(?<![\d:.])\d+\.\d{3,}", info), info    # times aside
        assert "\\n" not in info


def test_hostinfo_rounds_its_metrics():
    """Catches metrics shown with every digit a float has (0.8734567123 cores of outside load)."""
    from hq.client.cli.admin import rounded
    row = {"time": "t", "load1": 1.23456, "foreign_load": 0.8734567123, "cpu_percent": 43.219,
           "mem_available": 3 << 30, "nprocs": 7}
    assert rounded([row]) == [{"time": "t", "load1": 1.23, "foreign_load": 0.87,
                               "cpu_percent": 43.2, "mem_available": "3.0G", "nprocs": 7}]
