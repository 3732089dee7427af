"""Sphinx settings of hq's HTML documentation (`make doc`, into docs/_build/html): README.md,
docs/*.md (Markdown through MyST) and the docstrings of the Python API (autodoc)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hq  # noqa: E402

project = "hq"
release = version = hq.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
html_theme = "alabaster"
html_title = f"hq {release}"
