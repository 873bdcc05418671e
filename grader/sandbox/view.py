"""What a sandboxed child may see: one allowlist, decided here for every child (the probe, the tests' children).

Trusted side.

A child sees exactly:
- read-only: the Python installation and the site-packages this grader imports from, the grader
  package the parent itself runs (through a link in the child's own ``lib`` folder, so that no copy of
  the project in the working folder can stand in for it), the system libraries Python loads, and the
  folders the caller names;
- read-write: the folders the caller names (the child's working copy and its output folder), and a
  private temporary folder;
- a minimal /dev (with a /dev/shm of its own under bubblewrap, none under Landlock alone), and its own
  /proc (bubblewrap) or nothing of /proc but its own process (Landlock).

Nothing else: no home folder, no data folder (``--data``, ``--data-dir``, caches), no other
submission, no output of the grader, nothing of the host's processes or environment, and no folder of
the parent's PYTHONPATH. ``forbidden`` names what must never be reachable; a view that would show one
of them is refused or masked. (Under Landlock alone "reachable" means opened: see layers.py.)
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# System folders the interpreter and its native libraries load from (read-only).
SYSTEM_READ_ONLY = (
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/libexec",
    "/usr/local/bin",
    "/usr/local/lib",
    "/usr/share/zoneinfo",
    "/bin",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
)
# Harmless facts of the machine that numerical libraries read (core count, memory).
MACHINE_FACTS = ("/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu", "/sys/fs/cgroup")
# /dev/shm is not here: bubblewrap mounts a child's own (grader/sandbox/layers.py), Landlock alone shows none.
DEVICES_READ_WRITE = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


class ViewError(Exception):
    """The allowlist would show the child something it must not see; the message says what."""


@dataclass
class ChildView:
    """Every path one child may see (absolute, as on the host; bubblewrap binds them at the same path)."""

    cwd: Path
    read_only: list[Path]
    read_write: list[Path]
    grader_package: Path  # the package the parent runs; linked as <lib>/grader in the child
    forbidden: list[Path] = field(default_factory=list)
    gpu: bool = False

    def conflicts(self) -> list[tuple[Path, Path]]:
        """(shown, forbidden) pairs where a forbidden path is one of, or lies inside, a shown path."""
        out = []
        for secret in self.forbidden:
            for shown in [*self.read_only, *self.read_write, self.grader_package]:
                if _inside(secret, shown) or _inside(shown, secret):
                    out.append((shown, secret))
        return out


def child_view(
    *,
    cwd: Path,
    writable: Sequence[Path],
    readable: Sequence[Path] = (),
    forbidden: Sequence[Path] = (),
    gpu: bool = False,
) -> ChildView:
    """The one allowlist of a child: the caller's folders plus what any Python child needs."""
    import grader

    package = Path(grader.__file__).resolve().parent
    python = _python_dirs() - set(_pythonpath_dirs())  # PYTHONPATH's folders are never shown (a class folder...)
    return ChildView(
        cwd=Path(cwd),
        read_only=[*sorted(python), *(Path(p) for p in readable)],
        read_write=[Path(p) for p in writable],
        grader_package=package,
        forbidden=[Path(p).resolve() for p in forbidden if p],
        gpu=gpu,
    )


def _python_dirs() -> set[Path]:
    """The interpreter's prefixes and every site-packages folder it imports from (not the cwd)."""
    dirs = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix)}
    candidates = list(sys.path)
    try:
        candidates += [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # some embedded interpreters lack these
        pass
    for entry in candidates:
        if entry and ("site-packages" in entry or "dist-packages" in entry) and os.path.isdir(entry):
            dirs.add(Path(entry))
    # The interpreter binary may be a link out of the venv (to a pyenv or system build).
    dirs.add(Path(os.path.realpath(sys.executable)).parent.parent)
    return {d.resolve() for d in dirs if d.exists() and d.resolve() != Path("/")}


def _pythonpath_dirs() -> list[Path]:
    """Folders given to the parent through PYTHONPATH: left out of the view (``PYTHONPATH=.`` in a folder of
    submissions would show the child every other one); the grader package is linked in by itself."""
    out = []
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and os.path.isdir(entry):
            path = Path(entry).resolve()
            if path != Path("/") and path not in out:
                out.append(path)
    return out


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
