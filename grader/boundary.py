"""What crosses between a sandboxed child and the trusted side: inert files, by value, never by link.

Shared by both sides. A child writes each output to a fresh temporary name and renames it into place
(``write_output``): a link planted under the final name is replaced, never followed, so a child can
not make the grader's own writer overwrite a file elsewhere. The trusted side opens every file a
child produced without following links (``read_output``): it must be a regular file directly in the
output folder, under a size cap; anything else is an ``UnsafeOutput`` naming the file. Only JSON,
safetensors, ``.npy`` and text are exchanged, and the trusted side never unpickles.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

MiB = 1 << 20

# The probe's outputs, with the most the trusted side reads of each.
PROBE_OUTPUTS = {
    "probe.json": 20 * MiB,
    "graph.json": 50 * MiB,
    "graph_train.json": 50 * MiB,
    "weights.safetensors": 400 * MiB,
    "summary.txt": 2 * MiB,
    "augmented.npy": 5 * MiB,
}


class UnsafeOutput(Exception):
    """A child's output that is a link, not a regular file, outside its folder, or too large."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def write_output(folder: Path, name: str, data: bytes | str) -> None:
    """Child side: write ``folder/name`` atomically, replacing (not following) whatever is there."""
    if isinstance(data, str):
        data = data.encode()
    tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, folder / name)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_output(folder: Path, name: str, max_bytes: int) -> bytes:
    """Trusted side: the bytes of ``folder/name``, refusing links, non-files, other folders and size.

    Raises FileNotFoundError when there is no such file, UnsafeOutput when there is one that must
    not be read.
    """
    if "/" in name or name in ("", ".", ".."):
        raise UnsafeOutput(name, "not a plain file name")
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except NotADirectoryError as exc:
        raise UnsafeOutput(str(folder), "the output folder is not a folder") from exc
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the folder itself was swapped for a link
            raise UnsafeOutput(str(folder), "the output folder is a link") from exc
        raise
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == 40:  # ELOOP
                raise UnsafeOutput(name, "is a symbolic link (refused)") from exc
            if exc.errno == 6:  # ENXIO: a fifo or socket without a writer
                raise UnsafeOutput(name, "is not a regular file") from exc
            raise
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeOutput(name, "is not a regular file")
            if st.st_nlink > 1:
                raise UnsafeOutput(name, "is a hard link to another file (refused)")
            if st.st_size > max_bytes:
                raise UnsafeOutput(name, f"is {st.st_size:,} bytes, over the {max_bytes:,} the grader accepts")
            data = f.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise UnsafeOutput(name, f"grew over the {max_bytes:,} bytes the grader accepts")
            return data
    finally:
        os.close(dir_fd)


def copy_output(folder: Path, name: str, max_bytes: int, dest: Path) -> None:
    """Trusted side: copy a child's output by value (``read_output``) to ``dest``, a fresh file."""
    data = read_output(folder, name, max_bytes)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)
