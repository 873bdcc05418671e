"""Helpers for the batch tests: generated submissions (the reference solution, mutated), zips, git repos."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "reference_solution"


def make_submission(dest: Path, kind: str = "good") -> Path:
    """A copy of the reference solution, mutated: good, maxpool, broken, hanging."""
    shutil.copytree(REFERENCE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    model = dest / "model.py"
    text = model.read_text()
    if kind == "maxpool":
        text = text.replace(
            "        self.gap = nn.AdaptiveAvgPool2d(1)",
            "        self.pool = nn.MaxPool2d(3, stride=1, padding=1)\n        self.gap = nn.AdaptiveAvgPool2d(1)",
        ).replace("self.c2(self.c1(x))", "self.c2(self.pool(self.c1(x)))")
    elif kind == "broken":
        text += "\ndef broken(:\n    pass\n"
    elif kind == "hanging":
        # A hang that sleeps: the batch's timeout ends it all the same, and the minute it waits costs
        # the suite no CPU.
        text = "import time\n\nwhile True:\n    time.sleep(1)\n" + text
    elif kind != "good":
        raise ValueError(kind)
    model.write_text(text)
    return dest


def zip_folder(folder: Path, archive: Path, top: str | None = None) -> Path:
    """Zip ``folder``'s files, under one top folder ``top`` when given (as GitHub's 'Download ZIP' does)."""
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                z.write(path, f"{top}/{rel}" if top else rel)
    return archive


def zip_bomb(archive: Path, size_mb: int = 600) -> Path:
    """A small zip that unpacks to more than the batch's 500 MB cap."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z, z.open("big.bin", "w", force_zip64=True) as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(size_mb):
            f.write(chunk)
    return archive


def git_repo(folder: Path) -> tuple[str, str]:
    """Make ``folder`` a git repository with one commit; returns (file:// URL, commit)."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "submission"]):
        subprocess.run(["git", *args], cwd=folder, check=True, env=env, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, check=True, capture_output=True, text=True)
    return folder.resolve().as_uri(), commit.stdout.strip()


def git_commit_all(folder: Path, message: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "commit", "-qam", message], cwd=folder, check=True, env=env, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, check=True, capture_output=True, text=True)
    return head.stdout.strip()


def run_batch(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``grade batch ARGS`` in a subprocess, as a TA runs it."""
    return subprocess.run(
        [sys.executable, "-m", "grader", "batch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


@dataclass
class GradedClass:
    subs: Path  # the class folder
    out: Path  # the batch's output folder
    proc: subprocess.CompletedProcess
