"""``from grader import grade; grade(...)``: results back in Python, the report shown inline in a notebook,
and a single .ipynb graded as a submission."""

from __future__ import annotations

import json
import sys
import types

import nbformat
import pytest

import grader


@pytest.fixture
def fake_ipython(monkeypatch):
    """A stand-in IPython kernel that records what would be displayed."""
    shown: list[str] = []
    shell = types.SimpleNamespace(kernel=object())
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    display = types.ModuleType("IPython.display")
    display.HTML = lambda text: ("html", text)
    display.display = lambda obj: shown.append(obj[1])
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return shown


def notebook_submission(folder, base) -> object:
    """The base fixture's model and transforms as the cells of one notebook (what most students hand in)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell((base / name).read_text()) for name in ("model.py", "transforms.py")]
    path = folder / "S6.ipynb"
    nbformat.write(nb, path)
    return path


def test_grade_returns_the_results_and_shows_the_report_inline(fake_ipython, tmp_path):
    from fixtures.submissions import BASE

    nb = notebook_submission(tmp_path, BASE)
    results = grader.grade(nb, out=tmp_path / "out")
    assert results["submission"]["name"] == "S6.ipynb"
    status = {c["id"]: c["status"] for c in results["checks"]}
    assert status["params"] == "passed" and status["accuracy"] == "skipped"
    assert results["facts"]["model"]["class"] == "Net"
    assert len(fake_ipython) == 1 and "<html" in fake_ipython[0].lower()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["score"] == results["score"]


def test_outside_a_notebook_nothing_is_displayed_and_a_bad_path_says_why(tmp_path):
    from grader.integrations.notebook import _in_notebook

    assert not _in_notebook()
    with pytest.raises(RuntimeError, match="does not exist"):
        grader.grade(tmp_path / "missing", show=False)
