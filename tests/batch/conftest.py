"""Fixtures for the batch tests: one class graded once per run, shared by every xdist worker.

Each real grading costs 10-30 s on 2 busy cores, so the class is graded once: good (a folder), maxpool
(a zip wrapping one top folder: fails no_maxpool), broken (a syntax error), hanging (a sleeping ``while True``
at import: the batch's timeout kills it), and bomb.zip (rejected before anything is unpacked).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from batch_helpers import GradedClass, make_submission, run_batch, zip_bomb, zip_folder
from grading import once_per_run, run_root

CLASS_TIMEOUT = "60"  # the hanging submission's limit; a good one takes 10-30 s on 2 loaded cores


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_root(tmp_path_factory)


@pytest.fixture(scope="session")
def class_folder(shared_root: Path) -> Path:
    """The class: good/, broken/, hanging/ folders, maxpool.zip (wrapped in a top folder), bomb.zip."""
    subs = shared_root / "class" / "subs"
    with once_per_run(shared_root, "class") as build:
        if build:
            shutil.rmtree(subs.parent, ignore_errors=True)
            subs.mkdir(parents=True)
            for kind in ("good", "broken", "hanging"):
                make_submission(subs / kind, kind)
            staged = make_submission(subs.parent / "maxpool-src", "maxpool")
            zip_folder(staged, subs / "maxpool.zip", top="S6-main")
            zip_bomb(subs / "bomb.zip")
            (subs / "notes.txt").write_text("not a submission: ignored")
    return subs


@pytest.fixture(scope="session")
def graded_class(class_folder: Path, shared_root: Path) -> GradedClass:
    """The class graded once, 2 jobs and one grading started ahead of its turn, without training, with
    Gradescope files. Read only: every worker reads it, so a test that changes it works on a copy."""
    out = shared_root / "graded" / "out"
    ran = shared_root / "graded" / "process.json"
    with once_per_run(shared_root, "graded") as build:
        if build:
            out.parent.mkdir(parents=True, exist_ok=True)
            proc = run_batch(
                class_folder,
                *("--out", out, "--jobs", "2", "--ahead", "1", "--no-train", "--timeout", CLASS_TIMEOUT),
                *("--format", "gradescope"),
            )
            ran.write_text(
                json.dumps(
                    {"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
                )
            )
    kept = json.loads(ran.read_text())
    return GradedClass(class_folder, out, subprocess.CompletedProcess(**kept))
