"""hq-server's open-files limit (hq/server/limits.py), in a process of its own whose limits the
test lowers first."""

import subprocess
import sys

from tests.helpers import REPO

SCRIPT = """
import logging, resource
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 512))
from hq.server import limits
print(limits.raise_open_files(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(limits.check_open_files({hosts}, {users}))
"""


def run(hosts, users):
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(hosts=hosts, users=users)],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), result.stderr


def test_the_soft_limit_is_raised_to_the_hard_limit_and_a_low_hard_limit_is_named():
    """Catches a server left at a low soft limit (its 1,024th agent connection is refused
    without a word) and a hard limit too low for the cluster that nobody is told about."""
    out, err = run(1000, 10)
    assert out == ["512", "512", str(1000 * 10 + 256)]
    assert "ERROR open-files limit 512 is below the 10256" in err and "ulimit -Hn" in err
    out, err = run(20, 10)
    assert out == ["512", "512", "456"] and "ERROR" not in err
