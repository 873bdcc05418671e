"""The output folder: one complete folder per student, replaced atomically, and a marker of what it graded.

Trusted side.

Layout of DIR::

    DIR/<student>/      results.json, report.html, log.txt, graph.json, ..., done.json (written last)
    DIR/.staging/       a student's new folder while it is written (discarded after a crash)
    DIR/.trash/         a student's old folder for the instant between two renames (restored after a crash)
    DIR/.work/          unpacked zips and clones (scratch)
    DIR/.batch.lock     held (flock) by the running batch; the kernel drops it when the process dies

A student folder is only ever created by ``os.rename`` of a finished staging folder, so it is either
the old complete result or the new complete one, whenever the batch is killed (``kill -9``, power cut:
files and folders are fsynced before the rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

MARKER = "done.json"


class BatchLocked(Exception):
    """Another batch is writing into the same output folder."""


class Store:
    """Atomic per-student results under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.staging = root / ".staging"
        self.trash = root / ".trash"
        self.work = root / ".work"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold DIR/.batch.lock for the batch's lifetime (two batches on one DIR would race)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".batch.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BatchLocked(f"another batch is running in {self.root} (it holds .batch.lock)") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)

    def recover(self) -> list[str]:
        """After a crash: put back any old folder caught between the two renames; drop half-written ones."""
        restored = []
        if self.trash.is_dir():
            for old in sorted(self.trash.iterdir()):
                target = self.root / old.name
                if not target.exists() and (old / MARKER).is_file():
                    os.rename(old, target)
                    restored.append(old.name)
                else:
                    shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)
        return restored

    def tidy(self) -> None:
        """At the end of a run: drop the scratch and the (now empty) staging folders."""
        shutil.rmtree(self.work, ignore_errors=True)
        for folder in (self.staging, self.trash):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def marker(self, student: str) -> dict | None:
        """The student's done.json, or None when the student has no complete result."""
        try:
            data = json.loads((self.root / student / MARKER).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def results(self, student: str) -> dict | None:
        try:
            data = json.loads((self.root / student / "results.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def scratch(self, student: str) -> Path:
        """A fresh scratch folder for the student's sources (the previous run's is removed)."""
        path = self.work / student
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def clear_scratch(self, student: str) -> None:
        """Drop the student's sources once graded (clones can be large)."""
        shutil.rmtree(self.work / student, ignore_errors=True)

    def training_state(self, student: str) -> Path:
        """Where the student's grader keeps an interrupted training, removed once it has results.

        Not under .work, which ``recover`` empties after a crash: a batch killed mid-training resumes it.
        """
        return self.root / ".training_state" / student

    @property
    def units(self) -> Path:
        """Where grading processes write before the commit (a student name never starts with a dot)."""
        path = self.work / ".units"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, student: str, files: dict[str, bytes], marker: dict) -> Path:
        """Write ``files`` and the marker as DIR/<student>/, replacing any previous folder atomically."""
        self.staging.mkdir(parents=True, exist_ok=True)
        self.trash.mkdir(parents=True, exist_ok=True)
        stage = self.staging / f"{student}.{uuid.uuid4().hex[:8]}"
        stage.mkdir()
        for rel, data in {**files, MARKER: json.dumps(marker, indent=1).encode()}.items():
            path = stage / rel
            if not path.resolve().is_relative_to(stage.resolve()):
                raise ValueError(f"file name outside the student folder: {rel}")
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(path, data)
        for folder in {p.parent for p in stage.rglob("*") if p.is_file()}:
            _fsync_dir(folder)
        target = self.root / student
        old = self.trash / student
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
        os.rename(stage, target)
        _fsync_dir(self.root)
        shutil.rmtree(old, ignore_errors=True)
        return target


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace one file atomically (the class outputs: grades.csv, results.json, index.html)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    _write_synced(tmp, data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
