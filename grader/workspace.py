"""The trusted side's working area for one grading: a fresh copy of the snapshot for every child.

The snapshot itself is made once by ``grader.submission.Submission.copy_to`` (by value: regular
files only, no links, size caps); discovery, the evidence and the report read it, never the
submission itself. Each child gets its own copy of the snapshot, so nothing one child wrote is seen
by the next. ``sensitive_paths`` lists what no child may see.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


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
