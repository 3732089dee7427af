"""The directives of a batch script without a cluster: which lines count (#HQ, #SBATCH at the
top), Slurm's option and time formats, arrays, what is honoured, warned about or refused, and
the order in which the command line, #HQ and #SBATCH options win. Each test names its bug."""

import pytest
from docopt import docopt

from agents.scripts import command_line
from hq.client.cli import sbatch, script, submit
from hq.errors import HQError


def merged(text, *argv):
    """hq-submit's options for `argv` and a script of `text` (directives included)."""
    args = docopt(submit.__doc__, argv=[*argv, "job.sh"], options_first=True)
    found, _ = script.directives(text)
    return script.merged_options(args, found, "job.sh", submit.__doc__)


def refused(text):
    with pytest.raises(HQError) as error:
        merged(text)
    return error.value.message


def test_only_directives_before_the_first_command_count():
    """Catches #SBATCH lines read after the first command (Slurm ignores them), or a prefix
    matched inside a longer word (#HQX)."""
    found, late = script.directives("#!/bin/sh\n# a comment\n\n#HQ -c 2\n#HQX -c 3\n"
                                    "#SBATCH -J a\necho hi\n#SBATCH -J b\n#HQ -n x\n")
    assert found == {"#HQ": [(4, " -c 2")], "#SBATCH": [(6, " -J a")]}
    assert late == [8, 9]


@pytest.mark.parametrize("text, seconds", [
    ("10", 600), ("10:30", 630), ("1:02:03", 3723), ("2-3", 183600), ("2-3:04", 183840),
    ("2-03:04:05", 183845), ("UNLIMITED", 0), ("infinite", 0), ("0", 0)])
def test_slurm_time_formats(text, seconds):
    """Catches a format read in the wrong unit (MM as seconds, D-HH as minutes...)."""
    assert sbatch.parse_time(text) == seconds


@pytest.mark.parametrize("text", ["1:2:3:4", "abc", "1-", "-5", "1.5"])
def test_bad_slurm_times_are_refused(text):
    with pytest.raises(HQError):
        sbatch.parse_time(text)


def test_array_specifications():
    """Catches a step or a list read wrongly, or a throttle taken silently."""
    assert sbatch.array_indices("1-5") == ([1, 2, 3, 4, 5], None)
    assert sbatch.array_indices("0-10:5,7") == ([0, 5, 7, 10], None)
    indices, warning = sbatch.array_indices("1-3%2")
    assert indices == [1, 2, 3] and "%2" in warning
    for bad in ("5-1", "a-b", "1-3:0", "0-99999999"):
        with pytest.raises(HQError):
            sbatch.array_indices(bad)


def test_honoured_sbatch_options_become_hq_options():
    """Catches a Slurm option mapped to the wrong hq option or unit."""
    options = merged("#!/bin/sh\n#SBATCH --job-name=sim -c 2 --ntasks=2 --nodes=1\n"
                     "#SBATCH -t 1:00:00 --mem=2G\n#SBATCH -o out-%j.txt -D /tmp\n"
                     "#SBATCH --dependency=afterok:4:5,afterok:6 --array=1-3 -H\n")
    assert options["--name"] == "sim" and options["--slots"] == "4"    # 2 tasks x 2 cpus
    assert options["--time-limit"] == "3600" and options["--mem"] == f"{2 << 20}K"
    assert options["--stdout"] == options["--stderr"] == "/tmp/out-%j.txt"  # Slurm: -e = -o
    assert options["--dir"] == "/tmp" and options["--after"] == "4,5,6"
    assert options["--array"] == "1-3" and options["--hold"] is True


def test_mem_per_cpu_counts_the_final_cores():
    """Catches --mem-per-cpu multiplied by the script's cores when the command line changed
    them."""
    assert merged("#!/bin/sh\n#SBATCH --mem-per-cpu=1G -c 2\n", "-c", "3")["--mem"] \
        == f"{3 << 20}K"


def test_command_line_wins_over_hq_which_wins_over_sbatch():
    """Catches directives overriding the command line, or #SBATCH overriding #HQ."""
    text = "#!/bin/sh\n#SBATCH -J slurm -c 2 -t 5\n#HQ -n hq -t 60\n#HQ -e err.txt\n"
    options = merged(text, "-n", "cli")
    assert options["--name"] == "cli" and options["--time-limit"] == "60"
    assert options["--slots"] == "2" and options["--stderr"] == "err.txt"
    assert merged(text, "-O", "other.err")["--stderr"] == "other.err"


def test_unknown_and_ignored_sbatch_options_are_warned_about(capsys):
    """Catches an #SBATCH option dropped silently."""
    merged("#!/bin/sh\n#SBATCH --partition=gpu --frobnicate 3\n#SBATCH --export=NONE\n")
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 3 and all(w.startswith("hq-submit: warning: job.sh line ")
                                      for w in warnings)
    assert "--partition=gpu ignored: hq has no partitions" in warnings[0]
    assert "--frobnicate 3 ignored: unknown option" in warnings[1]
    assert "--export=NONE ignored" in warnings[2]


@pytest.mark.parametrize("line, why", [
    ("--nodes=2", "one host"), ("-N 3-4", "one host"), ("--gres=gpu:1", "GPUs"),
    ("--gpus=1", "GPUs"), ("--dependency=afterany:3", "afterok"), ("-w node[1-2]", "host"),
    ("--begin=now+1hour", "hold"), ("--ntasks=0", "at least 1"), ("-c", "needs a value")])
def test_what_hq_cannot_honour_is_refused_naming_the_line(line, why):
    """Catches a multi-node (or GPU, or other) request run as if it were honoured."""
    message = refused(f"#!/bin/sh\n#SBATCH -J x\n#SBATCH {line}\n")
    assert message.startswith(f"job.sh line 3: #SBATCH {line}") and why in message


@pytest.mark.parametrize("line", ["--wait", "-f x", "echo", "--bogus", "-c"])
def test_hq_lines_take_job_options_only(line):
    """Catches '#HQ --wait' (not an option of a job) or a command word taken silently."""
    assert refused(f"#!/bin/sh\n#HQ {line}\n").startswith(f"job.sh line 2: #HQ {line}")


@pytest.mark.parametrize("content, why", [
    (b"echo no interpreter\n", "#!"), (b"#!/bin/sh\necho \0\n", "NUL"),
    (b"#!/bin/sh\r\necho dos\r\n", "DOS"), (b"#!/bin/sh\necho \xff\n", "UTF-8"),
    (b"#!/bin/sh\n" + b"#" * (1 << 20), "larger than")])
def test_unusable_scripts_are_refused(tmp_path, content, why):
    """Catches a script that cannot be stored or run submitted anyway."""
    path = tmp_path / "job.sh"
    path.write_bytes(content)
    with pytest.raises(HQError) as error:
        script.read_script(str(path))
    assert why in error.value.message


def test_a_script_is_a_file_that_starts_with_hash_bang(tmp_path):
    """Catches a plain command (or a binary, or a missing file) taken for a script."""
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntrue\n")
    (tmp_path / "data").write_text("not a script\n")
    assert script.is_script(str(tmp_path / "job.sh"))
    assert not script.is_script(str(tmp_path / "data"))
    assert not script.is_script("echo hello") and not script.is_script("/bin/true")


@pytest.mark.parametrize("first, argv", [
    ("#!/bin/sh", ["/bin/sh", "/s", "a b"]), ("#! /usr/bin/env python3", ["/usr/bin/env",
                                                                           "python3", "/s",
                                                                           "a b"]),
    ("#!/bin/bash -e -x", ["/bin/bash", "-e -x", "/s", "a b"]), ("#!", ["/s", "a b"])])
def test_the_agent_runs_a_script_with_its_interpreter_as_the_kernel_does(first, argv):
    """Catches an interpreter line split into several arguments (Linux passes one)."""
    import shlex
    assert shlex.split(command_line("/s", first + "\necho\n", ["a b"])) == argv
