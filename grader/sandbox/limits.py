"""Limits on a sandboxed child that do not depend on the filesystem layer: rlimits, a pids (and memory)
cgroup, no capabilities and the ``nobody`` user where it can run Python, death with the parent.

Trusted side.
"""

from __future__ import annotations

import functools
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from grader.child.privileges import drop_bounding_set

NOBODY = 65534


@dataclass
class Limits:
    wall_s: float = 120.0
    cpu_s: int = 600
    memory_mb: int = 6144  # RLIMIT_DATA: heap + private mappings (RLIMIT_AS would break torch's import)
    processes: int = 512  # threads count too
    file_mb: int = 256
    open_files: int = 1024
    tmp_mb: int = 256  # bubblewrap: the size of the child's own /tmp and of its own /dev/shm (tmpfs, in memory)


@functools.lru_cache(maxsize=1)
def drop_to_nobody() -> bool:
    """When the grader runs as root, children run as ``nobody`` if that user can run this Python."""
    if os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(
            [sys.executable, "-c", "import grader"], preexec_fn=drop_privileges, capture_output=True, timeout=60
        )
        return r.returncode == 0
    except Exception:
        return False


def drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


class ProcessGroupLimit:
    """A pids (and memory) cgroup for one child, where this machine lets the grader make one.

    RLIMIT_NPROC does not bind root, so a fork bomb run as root is stopped by the pids cgroup instead.
    Best effort: cgroup v2 or v1 hierarchies that are writable; otherwise nothing (and a note).
    """

    def __init__(self, processes: int, memory_mb: int | None):
        self.dirs: list[Path] = []
        name = f"s6-grader-{os.getpid()}-{time.monotonic_ns()}"
        candidates = []
        if Path("/sys/fs/cgroup/cgroup.controllers").is_file():
            candidates.append(
                (
                    Path("/sys/fs/cgroup"),
                    {"pids.max": str(processes)} | ({"memory.max": str(memory_mb << 20)} if memory_mb else {}),
                )
            )
        else:
            candidates.append((Path("/sys/fs/cgroup/pids"), {"pids.max": str(processes)}))
            if memory_mb:
                candidates.append((Path("/sys/fs/cgroup/memory"), {"memory.limit_in_bytes": str(memory_mb << 20)}))
        for base, settings in candidates:
            try:
                folder = base / name
                folder.mkdir()
                self.dirs.append(folder)
                for key, value in settings.items():
                    (folder / key).write_text(value)
            except OSError:
                continue

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    @staticmethod
    def _kill_members(folder: Path) -> None:
        """Processes that escaped the session kill (setsid) are still in the cgroup: kill them."""
        for _ in range(20):
            try:
                pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                return
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)

    def enter(self) -> None:
        """In the child, before exec: join the cgroups."""
        for folder in self.dirs:
            try:
                (folder / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass

    def close(self) -> None:
        for folder in self.dirs:
            self._kill_members(folder)
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the child is killed when the grader dies (bubblewrap does this by itself)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def apply_limits(
    limits: Limits, memory: bool, group: ProcessGroupLimit | None = None, drop_capabilities: bool = True
) -> None:
    """In the forked child, before exec: its own session, the rlimits and cgroups, no capabilities where
    ``drop_capabilities`` (every layer but bubblewrap), ``nobody`` where it can run Python. What the child
    then holds is measured by grader/child/enter.py (which drops whatever is left)."""
    os.setsid()
    _die_with_parent()
    if group is not None:
        group.enter()
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
    if memory:
        size = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (size, size))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20, limits.file_mb << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() == 0 and drop_capabilities:
        # A uid-0 process regains its bounding set at execve: empty it while CAP_SETPCAP is still held
        # (bubblewrap, which needs its capabilities to build the sandbox, drops them itself: --cap-drop ALL).
        drop_bounding_set()
    if drop_to_nobody():
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        drop_privileges()  # a uid change from 0 clears the effective and permitted sets
    elif os.geteuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
