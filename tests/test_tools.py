"""The tools stand alone: none imports tests/, and bench_curve measures plain TCP beside CURVE
with real sockets (a short run)."""

import ast
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

TOOLS = os.path.join(REPO, "tools")


def imported_modules(path):
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_tools_do_not_import_tests():
    for name in sorted(os.listdir(TOOLS)):
        if name.endswith(".py"):
            modules = list(imported_modules(os.path.join(TOOLS, name)))
            assert not [m for m in modules if m.split(".")[0] == "tests"], name


@pytest.mark.slow
def test_bench_curve_short_run():
    result = subprocess.run([sys.executable, os.path.join(TOOLS, "bench_curve.py"), "--count",
                             "50", "--repeat", "1", "--window", "8"], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "|" in line][1:]
    assert [row.split()[0] for row in rows] == ["PING", "EVENTS", "RUN", "SUBMIT"]
    for row in rows:
        figures = [cell.split() for cell in row.split("|")[1:]]
        assert all(len(cell) == 3 and float(cell[0]) > 0 and float(cell[1]) > 0
                   for cell in figures), row
