"""``from grader import grade; grade(".")`` in Jupyter or Colab: the results, and the report inline.

Trusted side.

It runs the same ``grade`` command line in a child process, so that a student's notebook kernel
never imports their model twice or holds the grader's sandbox state. Colab has no user namespaces:
there the Landlock layer is what protects the run, and the report's isolation line says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return bool(get and get() is not None and getattr(get(), "kernel", None) is not None)


def grade(
    path: str | os.PathLike = ".",
    *,
    train: bool | None = False,
    out: str | os.PathLike | None = None,
    show: bool | None = None,
    args: list[str] | tuple[str, ...] = (),
) -> dict:
    """Grade ``path`` (a folder, a .zip or one .ipynb) and return the results dict.

    ``train``: False grades every rule but accuracy in seconds; True trains (use a GPU runtime);
    None trains when CUDA is present. ``out`` keeps the report and results (default: a temporary
    folder). ``show``: display the HTML report inline (default: when running in a notebook).
    ``args``: any other ``grade`` options, e.g. ``["--rubric", "course.toml"]``.
    """
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="s6-grade-nb-"))
    command = [sys.executable, "-m", "grader", str(path), "--out", str(folder), "--quiet", *args]
    if train is not None:
        command.append("--train" if train else "--no-train")
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    results_file = folder / "results.json"
    if not results_file.is_file():
        raise RuntimeError(f"grade {path} wrote no results: {(proc.stderr or proc.stdout).strip()[-600:]}")
    results = json.loads(results_file.read_text())
    results["report_path"] = str(folder / "report.html")
    if show if show is not None else _in_notebook():
        report = folder / "report.html"
        from IPython.display import HTML, display

        display(HTML(report.read_text() if report.is_file() else f"<pre>{proc.stderr}</pre>"))
    return results
