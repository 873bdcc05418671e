"""The trusted side's working area for one grading: a snapshot of the submission, and a fresh copy
of it for every child.

The snapshot is taken once, by value (regular files only, no links, size caps): discovery, the
evidence and the report read it, never the submission itself, so that a link in a submission cannot
bring a file of the grading machine into a report. Each child gets its own copy of the snapshot, so
nothing one child wrote is seen by the next. ``sensitive_paths`` lists what no child may see.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

COPY_SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    "env",
    "__pycache__",
    "node_modules",
    "wandb",
    "runs",
    "grade-out",
    ".ipynb_checkpoints",
}
COPY_MAX_FILE = 20 * 1024 * 1024  # data and checkpoints stay behind: the probe needs code
COPY_MAX_TEXT = 60 * 1024 * 1024  # notebooks with their plots, long logs: the evidence needs them
TEXT_SUFFIXES = {".ipynb", ".md", ".txt", ".log", ".csv", ".json"}
COPY_MAX_TOTAL = 300 * 1024 * 1024


def submission_hash(root: Path, rubric: dict, files: list[Path] | None = None) -> str:
    """Content hash of the submission's files (what the snapshot copies) and the rubric."""
    h = hashlib.sha256(json.dumps(rubric, sort_keys=True, default=str).encode())
    for path in sorted(files if files is not None else copyable_files(root)):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def copyable_files(root: Path) -> list[Path]:
    """The submission's regular files worth grading: no links, no data or environments, size caps."""
    out, total = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in COPY_SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            cap = COPY_MAX_TEXT if path.suffix.lower() in TEXT_SUFFIXES else COPY_MAX_FILE
            if size > cap or total + size > COPY_MAX_TOTAL:
                continue
            total += size
            out.append(path)
    return out


def copy_submission(root: Path, dest: Path, files: list[Path] | None = None) -> None:
    """A copy of ``root``'s files by value: a file swapped for a link meanwhile is left out."""
    for path in files if files is not None else copyable_files(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                continue
            with open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def fresh_copy(snapshot: Path, work: Path, disc: Any, prefix: str) -> Path:
    """A working copy of its own for one child: the snapshot and the notebook modules discovery made."""
    copy_root = Path(tempfile.mkdtemp(prefix=prefix, dir=work))
    shutil.copytree(snapshot, copy_root, symlinks=True, dirs_exist_ok=True)
    for rel, source in disc.generated.items():
        (copy_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy_root / rel).write_text(source)
    return copy_root


def sensitive_paths(opts: Any) -> list[Path]:
    """What no child may see: the data (``--data``, ``--data-dir``, the cache), the grader's outputs."""
    from grader.training.data import default_data_dir

    paths = [default_data_dir(), Path(opts.out_dir).resolve()]
    paths += [Path(p) for p in (opts.data, opts.data_dir) if p is not None]
    env = os.environ.get("S6_GRADER_HIDE")
    if env:
        paths += [Path(p) for p in env.split(os.pathsep) if p]
    return [p.resolve() for p in paths]


def transforms_spec(t: Any) -> dict:
    """How a child builds the train pipeline: from its slice first, the whole file only if that fails."""
    return {
        "file": t.slice_file or t.file,
        "shown_as": t.file,
        "fallback_file": t.file if t.slice_file and t.fallback_ok else None,
        "name": t.name,
        "kind": t.kind,
        "args": t.args,
        "kwargs": t.kwargs,
    }
