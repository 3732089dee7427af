"""`make doc`: the HTML documentation (README, docs/*.md, hq.Client's docstrings) builds with
Sphinx and no warning (-W), into a temporary directory."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow       # about 4 s
def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                             "html", "-d", str(tmp_path / "doctrees"),
                             os.path.join(REPO, "docs"), str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    pages = {name: (out / f"{name}.html").read_text() for name in
             ("index", "readme", "architecture", "performance", "api")}
    assert 'id="hq.Client.submit_many"' in pages["api"]           # autodoc found the API
    assert 'href="architecture.html"' in pages["readme"]          # README links resolved
    assert "hq-submit" in pages["readme"]
