"""The submission, walked once: one skip list, one set of size caps, each file read once.

Trusted side.

``Submission.scan(root)`` lists the files worth grading. Every stage takes this one index (the
content hash, the snapshot each child copies, discovery, the source scans, the evidence, the
README), so a file is seen by all of them or by none. Files are read by value (``O_NOFOLLOW``,
regular files only): a link in a submission never brings a file of the grading machine into a
report. Text files stay in memory after their first read, and each notebook is parsed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.evidence.notebooks import Notebook

# Folders that are never the student's work (compared in lower case). Every folder whose name
# starts with "." is skipped as well.
SKIP_DIRS = frozenset(
    {
        "venv",
        "env",
        "__pycache__",
        "node_modules",
        "site-packages",
        "grade-out",
        "wandb",
        "runs",
        "lightning_logs",
        "cifar-10-batches-py",
    }
)
# Folders that hold a dataset: walked (a student's code can live there too), but never searched for
# training logs, where a label CSV or a downloaded log is no evidence of the student's run.
DATA_DIRS = frozenset({"data", "dataset", "datasets"})
MAX_FILES = 4000  # files kept; the shallowest first, so a deep data folder cannot crowd out the code
MAX_ENTRIES = 50_000  # directory entries looked at before the walk stops (a dataset unpacked as images)
MAX_FILE_BYTES = 20 * 1024 * 1024  # data and checkpoints stay behind: the probe needs code
MAX_TEXT_BYTES = 60 * 1024 * 1024  # notebooks with their plots, long logs: the evidence needs them
MAX_TOTAL_BYTES = 300 * 1024 * 1024
TEXT_SUFFIXES = frozenset({".py", ".ipynb", ".md", ".txt", ".log", ".csv", ".json", ".toml", ".cfg", ".yaml", ".yml"})


def is_skipped_dir(name: str) -> bool:
    """A folder the walk does not enter."""
    return name.startswith(".") or name.lower() in SKIP_DIRS


@dataclass(frozen=True)
class Entry:
    rel: str  # posix path relative to the root
    size: int

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.rel)[1].lower()

    @property
    def name(self) -> str:
        return posixpath.basename(self.rel)

    @property
    def in_data_dir(self) -> bool:
        return any(part.lower() in DATA_DIRS for part in self.rel.split("/")[:-1])


def _cap(rel: str) -> int:
    return MAX_TEXT_BYTES if posixpath.splitext(rel)[1].lower() in TEXT_SUFFIXES else MAX_FILE_BYTES


def _walk(root: Path) -> tuple[list[Entry], list[str]]:
    """Breadth first, names sorted: the files under the caps, and notes on what was left out."""
    entries: list[Entry] = []
    notes: list[str] = []
    total = seen = 0
    too_big: list[str] = []
    folders: deque[tuple[Path, str]] = deque([(root, "")])
    while folders:
        folder, prefix = folders.popleft()
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for child in children:
            seen += 1
            if seen > MAX_ENTRIES:
                notes.append(f"stopped looking after {MAX_ENTRIES} files and folders")
                return entries, notes
            rel = prefix + child.name
            try:
                if child.is_dir(follow_symlinks=False):
                    if not is_skipped_dir(child.name):
                        folders.append((Path(child.path), rel + "/"))
                    continue
                if not child.is_file(follow_symlinks=False):
                    continue  # links, sockets, devices
                size = child.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            if size > _cap(rel) or total + size > MAX_TOTAL_BYTES:
                too_big.append(rel)
                continue
            if len(entries) >= MAX_FILES:
                notes.append(f"stopped reading after {MAX_FILES} files")
                return entries, notes
            total += size
            entries.append(Entry(rel, size))
    if too_big:
        notes.append(
            f"{len(too_big)} file(s) left out for their size (data or checkpoints), e.g. {', '.join(too_big[:3])}"
        )
    return entries, notes


def _open_regular(path: Path) -> int:
    """A descriptor of ``path`` if it is a regular file, not a link; raises OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path.name} is not a regular file")
    return fd


class Submission:
    """One walk of a submission's tree, and the files' contents read once from it."""

    def __init__(self, root: Path, entries: list[Entry], notes: list[str]) -> None:
        self.root = Path(root)
        self.notes = notes
        self._entries = {e.rel: e for e in entries}
        self._bytes: dict[str, bytes] = {}
        self._digests: dict[str, bytes] = {}
        self._notebooks: dict[str, Notebook | Exception] = {}

    @classmethod
    def scan(cls, root: Path) -> Submission:
        root = Path(root).absolute()
        entries, notes = _walk(root)
        return cls(root, entries, notes)

    # ---- the index ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.rel.split("/"))

    def files(self, *suffixes: str, under: str = "", max_bytes: int | None = None) -> list[str]:
        """Relative paths, sorted; only those ending in ``suffixes`` (any case) when given, only those in
        folder ``under`` when given, only those of at most ``max_bytes`` when given."""
        wanted = {s.lower() for s in suffixes}
        return [
            e.rel
            for e in self.entries()
            if (not wanted or e.suffix in wanted)
            and (not under or e.rel.startswith(under.rstrip("/") + "/"))
            and (max_bytes is None or e.size <= max_bytes)
        ]

    def has(self, rel: str) -> bool:
        """Whether ``rel`` (any spelling: ``./a/../b``) names a file of the index."""
        return self.normalize(rel) in self._entries

    def size(self, rel: str) -> int:
        return self._entries[rel].size

    def normalize(self, rel: str) -> str:
        """``rel`` as the index spells it; '' for a path outside the root."""
        clean = posixpath.normpath(str(rel).replace(os.sep, "/")).lstrip("/") if rel else ""
        return "" if clean in (".", "") or clean.startswith("../") or clean == ".." else clean

    def relative(self, path: Path) -> str:
        """A path on disk as the index spells it ('' when it is not under the root)."""
        try:
            return self.normalize(Path(os.path.abspath(path)).relative_to(self.root).as_posix())
        except ValueError:
            return ""

    # ---- contents ----------------------------------------------------------------------------

    def read_bytes(self, rel: str) -> bytes:
        """The file's bytes, read once (text files are kept); OSError for a file not in the index."""
        if rel in self._bytes:
            return self._bytes[rel]
        if rel not in self._entries:
            raise FileNotFoundError(f"{rel} is not a file of the submission")
        fd = _open_regular(self.root / rel)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(_cap(rel) + 1)
        if len(data) > _cap(rel):
            raise OSError(f"{rel} grew beyond {_cap(rel) // (1024 * 1024)} MB")
        if self._entries[rel].suffix in TEXT_SUFFIXES:
            self._bytes[rel] = data
        self._digests[rel] = hashlib.sha256(data).digest()
        return data

    def text(self, rel: str) -> str:
        """The file as text, line ends as written (``\\r`` kept: tqdm overwrites, and line numbers
        then match ``grep -n``); undecodable bytes replaced."""
        return self.read_bytes(rel).decode("utf-8", errors="replace")

    def source(self, rel: str) -> str:
        """The file as Python reads its source: universal newlines."""
        return self.text(rel).replace("\r\n", "\n").replace("\r", "\n")

    def notebook(self, rel: str) -> Notebook:
        """The notebook parsed once; raises ``NotebookError`` (the same one each time) if it is not one."""
        from grader.evidence.notebooks import NotebookError, parse_notebook

        if rel not in self._notebooks:
            try:
                self._notebooks[rel] = parse_notebook(self.read_bytes(rel), self.root / rel)
            except NotebookError as exc:
                self._notebooks[rel] = exc
            except OSError as exc:
                self._notebooks[rel] = NotebookError(posixpath.basename(rel), f"cannot be read ({exc})")
        found = self._notebooks[rel]
        if isinstance(found, Exception):
            raise found
        return found

    # ---- the snapshot and the hash -----------------------------------------------------------

    def copy_to(self, dest: Path) -> Submission:
        """A copy of the files by value under ``dest``, and the index of that copy (sharing what was read).

        A file swapped for a link or a folder since the walk is left out.
        """
        dest = Path(dest).absolute()
        kept: list[Entry] = []
        copy = Submission(dest, [], list(self.notes))
        for entry in self.entries():
            target = dest / entry.rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if entry.suffix in TEXT_SUFFIXES:  # kept in memory: the later stages read them from here
                    target.write_bytes(self.read_bytes(entry.rel))
                    digest = self._digests[entry.rel]
                else:
                    digest = _copy_file(self.root / entry.rel, target, _cap(entry.rel))
            except OSError:
                continue
            kept.append(entry)
            copy._digests[entry.rel] = digest
            if entry.rel in self._bytes:
                copy._bytes[entry.rel] = self._bytes[entry.rel]
        copy._entries = {e.rel: e for e in kept}
        return copy

    def content_hash(self, rubric: dict) -> str:
        """Content hash of the files and the rubric: what decides whether a batch grades it again."""
        h = hashlib.sha256(json.dumps(rubric, sort_keys=True, default=str).encode())
        for entry in self.entries():
            try:
                digest = self._digests.get(entry.rel) or _digest(self, entry.rel)
            except OSError:
                continue
            h.update(entry.rel.encode() + b"\0")
            h.update(digest)
        return h.hexdigest()[:16]


def _digest(sub: Submission, rel: str) -> bytes:
    sub.read_bytes(rel)
    return sub._digests[rel]


def _copy_file(source: Path, target: Path, cap: int) -> bytes:
    """Copy one regular file by value, in chunks; its sha256."""
    h = hashlib.sha256()
    fd = _open_regular(source)
    written = 0
    with os.fdopen(fd, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > cap:
                dst.close()
                target.unlink()
                raise OSError(f"{source.name} grew beyond the size cap")
            h.update(chunk)
            dst.write(chunk)
    return h.digest()


def as_submission(source: Path | Submission) -> Submission:
    """The index of ``source``: itself if it already is one, else one walk of the folder."""
    return source if isinstance(source, Submission) else Submission.scan(Path(source))
