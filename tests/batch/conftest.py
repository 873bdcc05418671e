"""Fixtures for the batch tests: one class graded once per session and shared.

Each real grading costs 10-30 s on 2 busy cores, so the class is graded once: good (a folder), maxpool
(a zip wrapping one top folder: fails no_maxpool), broken (a syntax error), hanging (``while True`` at
import: the batch's timeout kills it), and bomb.zip (rejected before anything is unpacked).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_helpers import GradedClass, make_submission, run_batch, zip_bomb, zip_folder

CLASS_TIMEOUT = "60"  # the hanging submission's limit; a good one takes 10-30 s on 2 loaded cores


@pytest.fixture(scope="session")
def class_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The class: good/, broken/, hanging/ folders, maxpool.zip (wrapped in a top folder), bomb.zip."""
    root = tmp_path_factory.mktemp("class")
    subs = root / "subs"
    subs.mkdir()
    for kind in ("good", "broken", "hanging"):
        make_submission(subs / kind, kind)
    staged = make_submission(root / "maxpool-src", "maxpool")
    zip_folder(staged, subs / "maxpool.zip", top="S6-main")
    zip_bomb(subs / "bomb.zip")
    (subs / "notes.txt").write_text("not a submission: ignored")
    return subs


@pytest.fixture(scope="session")
def graded_class(class_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> GradedClass:
    """The class graded once, 2 jobs, without training, with Gradescope files."""
    out = tmp_path_factory.mktemp("graded") / "out"
    proc = run_batch(
        class_folder, "--out", out, "--jobs", "2", "--no-train", "--timeout", CLASS_TIMEOUT, "--format", "gradescope"
    )
    return GradedClass(class_folder, out, proc)
