"""The class to grade: a folder of sub-folders and ``.zip`` files, or a CSV of ``student,git_url[,commit]``.

Trusted side.

Every entry gets a student name that is safe as a folder name and unique in the class, decided only by the
input (sorted folder listing, CSV row order), so that a re-run maps each student to the same folder.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# Names the batch writes at the top of DIR itself: a student may not take them.
RESERVED = {"index.html", "results.json", "grades.csv", "batch.log", "gradescope", "con", "nul", "prn", "aux"}
MAX_NAME = 80


class InputError(Exception):
    """INPUT is neither a folder nor a readable CSV (a usage error: exit 2)."""


@dataclass(frozen=True)
class Entry:
    """One student's submission, before it is fetched or unpacked."""

    student: str  # unique, filesystem-safe: the folder DIR/<student>/
    kind: str  # "folder" | "zip" | "git"
    source: str  # a path (folder, zip) or a git URL
    commit: str | None = None
    original: str = ""  # the name as the input spelled it

    def describe(self) -> str:
        return f"{self.source}@{self.commit}" if self.commit else self.source


def sanitize(name: str) -> str:
    """A portable folder name: ASCII letters, digits, ``._-``; no leading dot; never empty or reserved."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    text = re.sub(r"_+", "_", text)[:MAX_NAME].rstrip("._-")
    if not text:
        text = "student"
    if text.lower() in RESERVED or text.lower().startswith(("index.", "grades.")):
        text = f"{text}_"
    return text


def unique_names(names: list[str]) -> list[str]:
    """Sanitize each name and make duplicates unique (``alice``, ``alice-2``, ...), case-insensitively."""
    taken: set[str] = set()
    out = []
    for raw in names:
        base = sanitize(raw)
        name, n = base, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.lower())
        out.append(name)
    return out


def read_input(path: Path, exclude: Path | None = None) -> list[Entry]:
    """The entries of INPUT (a folder or a CSV); ``exclude`` is the output folder when it lies inside INPUT."""
    if path.is_dir():
        return _read_folder(path, exclude)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return _read_csv(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        raise InputError(f"{path} is one zip: put the class's zips in a folder and give the folder")
    raise InputError(f"{path} is neither a folder of submissions nor a CSV of student,git_url[,commit]")


def _read_folder(folder: Path, exclude: Path | None) -> list[Entry]:
    raw: list[tuple[str, str, str]] = []
    excluded = exclude.resolve() if exclude is not None else None
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        if child.name.startswith((".", "__")) or (excluded is not None and child.resolve() == excluded):
            continue
        if child.is_dir():
            raw.append((child.name, "folder", str(child.resolve())))
        elif child.is_file() and child.suffix.lower() == ".zip":
            raw.append((child.stem, "zip", str(child.resolve())))
    names = unique_names([r[0] for r in raw])
    return [Entry(name, kind, source, None, orig) for name, (orig, kind, source) in zip(names, raw, strict=True)]


def _read_csv(path: Path) -> list[Entry]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    rows = [
        [cell.strip() for cell in row] for row in csv.reader(text.splitlines(), dialect) if any(c.strip() for c in row)
    ]
    rows = [r for r in rows if not r[0].startswith("#")]
    if rows and _is_header(rows[0]):
        rows = rows[1:]
    if not rows:
        raise InputError(f"{path} lists no students (expected rows of student,git_url[,commit])")
    names = unique_names([r[0] for r in rows])
    entries = []
    for name, row in zip(names, rows, strict=True):
        url = row[1] if len(row) > 1 else ""
        commit = row[2] if len(row) > 2 and row[2] else None
        entries.append(Entry(name, "git", url, commit, row[0]))
    return entries


def _is_header(row: list[str]) -> bool:
    first = row[0].lower()
    second = row[1].lower() if len(row) > 1 else ""
    return first in ("student", "name", "id", "login", "username") or second in ("git_url", "url", "repo", "repository")
