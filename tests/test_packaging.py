"""hq as an installed package: console scripts for every command, `from hq import Client`
without PYTHONPATH, pins in pyproject.toml equal to requirements.txt, the Python check."""

import importlib
import importlib.metadata
import os
import subprocess
import sys
import tomllib

import pytest

from tests.helpers import REPO

COMMANDS = {"hq-server": "hq.server.loop:main", "hq-user-server": "hq.user.server:main",
            "hq-exec-server": "agents.exec_server:main", "hq-submit": "hq.client.cli.submit:main",
            "hq-client": "hq.client.cli.client:main", "hq-admin": "hq.client.cli.admin:main",
            "hq-dbadmin": "hq.client.cli.dbadmin:main",
            "hq-reservation": "hq.client.cli.reservation:main"}


def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]


def requirements():
    with open(os.path.join(REPO, "requirements.txt")) as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


def test_pins_match_requirements():
    project = pyproject()
    extras = [pin for pins in project["optional-dependencies"].values() for pin in pins]
    assert sorted(project["dependencies"] + extras) == sorted(requirements())
    assert all("==" in pin for pin in requirements())
    runtime = {pin.split("==")[0].lower() for pin in project["dependencies"]}
    assert not runtime & {"pytest", "pytest-timeout", "hypothesis", "sphinx", "myst-parser"}


def test_entry_points_installed_and_resolvable():
    assert pyproject()["scripts"] == COMMANDS
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.name.startswith("hq-")}
    assert installed == COMMANDS
    for target in COMMANDS.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name))


def clean_env():
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "HQPATH", "HQ_VE_PATH")}


def test_import_without_pythonpath(tmp_path):
    result = subprocess.run([sys.executable, "-c", "from hq import Client; import agents.runner;"
                             "print(Client.__module__)"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hq.client.api"


def test_console_scripts_run(tmp_path):
    scripts = os.path.dirname(sys.executable)
    for command in COMMANDS:
        result = subprocess.run([os.path.join(scripts, command), "--help"], cwd=tmp_path,
                                env=clean_env(), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "Usage" in result.stdout or "usage" in result.stdout, command


def test_python_check_warns_for_closed_directory(tmp_path):
    from tools.check_python import closed_to_others, warning
    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    (closed / "python3").write_text("")
    (closed / "python3").chmod(0o755)
    assert closed_to_others(str(closed / "python3")) in (str(closed), *map(str, closed.parents))
    message = warning([str(closed / "python3")])
    assert "is closed to them" in message and "make PYTHON=/usr/bin/python3" in message


def test_python_check_quiet_for_system_python():
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3 here")
    from tools.check_python import closed_to_others
    assert closed_to_others("/usr/bin/python3") is None
    result = subprocess.run(["/usr/bin/python3", os.path.join(REPO, "tools", "check_python.py"),
                             os.path.join(REPO, "bin", "hq-command")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    blocked = closed_to_others(REPO)    # a checkout inside a closed home: warned about, rightly
    assert (result.stderr == "") == (blocked is None), result.stderr
