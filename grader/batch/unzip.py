"""Unpack a student's zip without trusting it: no path leaves the target, no links, bounded files and bytes.

Trusted side.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_FILES = 5000
MAX_BYTES = 500 * 1024 * 1024
CHUNK = 1 << 20


class UnzipError(Exception):
    """The zip is unreadable or hostile; the student gets a typed ``unzip_failed`` result."""


def safe_unzip(
    zip_path: Path, dest: Path, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES, unwrap: bool = True
) -> tuple[Path, list[str]]:
    """Extract ``zip_path`` into ``dest`` (created); returns (submission root, notes).

    The root is ``dest``, or the single top folder when the zip wraps everything in one. Links are
    skipped (noted); absolute paths, ``..``, too many entries or too many bytes reject the whole zip.
    The byte cap is enforced on the bytes actually written, since a zip's declared sizes can lie.
    """
    notes: list[str] = []
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnzipError(f"not a readable zip: {exc}") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > max_files:
            raise UnzipError(f"{len(infos)} entries, more than the limit of {max_files}")
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise UnzipError(f"{declared:,} bytes uncompressed, more than the limit of {max_bytes:,}")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written = 0
        for info in infos:
            parts = _safe_parts(info.filename)
            if parts is None or "__MACOSX" in parts or parts[-1] == ".DS_Store":
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                notes.append(f"skipped the link {info.filename}")
                continue
            target = root.joinpath(*parts)
            if not target.resolve().is_relative_to(
                root
            ):  # a link made by an earlier entry cannot exist: belt and braces
                raise UnzipError(f"{info.filename} would land outside the target folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise UnzipError(f"more than {max_bytes:,} bytes when unpacked (a zip bomb?)")
                        out.write(chunk)
            except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, NotImplementedError) as exc:
                # RuntimeError: encrypted entries; NotImplementedError: unknown compression.
                raise UnzipError(f"cannot extract {info.filename}: {exc}") from exc
    return (_unwrap(root) if unwrap else root), notes


def _safe_parts(name: str) -> tuple[str, ...] | None:
    """The path's parts, or raise for a name that points outside; None for the empty name."""
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise UnzipError(f"absolute path in the zip: {name}")
    parts = tuple(p for p in PurePosixPath(cleaned).parts if p not in ("", "."))
    if ".." in parts:
        raise UnzipError(f"path with '..' in the zip: {name}")
    return parts or None


def _unwrap(root: Path) -> Path:
    """A zip of ``repo-main/...``: grade ``repo-main``."""
    current = root
    for _ in range(3):
        children = [c for c in current.iterdir() if not c.name.startswith(".")]
        if len(children) != 1 or not children[0].is_dir():
            break
        current = children[0]
    return current


def clear(path: Path) -> None:
    """Remove an unpacked tree (also one a previous killed run left half written)."""
    shutil.rmtree(path, ignore_errors=True)
