"""tools/bug_rows.py stays usable: each deliberate bug of issue 14 still names text that is
in its file once, and a test that exists (the tool itself runs them: about a minute)."""

import pathlib

from tools.bug_rows import ROOT, ROWS


def test_each_row_names_code_and_a_test_that_exist():
    for name, path, text, buggy, test in ROWS:
        assert (ROOT / path).read_text().count(text) == 1, name
        assert text != buggy, name
        test_file, test_name = test.split("::")
        assert f"def {test_name}(" in (ROOT / test_file).read_text(), name
    assert pathlib.Path(ROOT / "docs/mutation.md").read_text().count("tools/bug_rows.py")
