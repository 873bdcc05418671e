"""No privileges in a child: drop every capability, and say what the process holds (from /proc/self/status).

Untrusted side (runs inside the sandbox next to the student's code): ``grader/child/enter.py`` drops
what is left and measures the process before the command runs; the trusted launcher also calls
``drop_bounding_set`` in the forked child before it execs (``grader/sandbox/limits.py``), because once
the uid is ``nobody`` the bounding set can no longer be emptied.

A uid-0 process regains its bounding set at every ``execve``, so "no capabilities" for root needs an
empty bounding set; ``problem`` says when a process would keep or regain any capability.
"""

from __future__ import annotations

import ctypes
import functools

_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_CAP_VERSION_3 = 0x20080522
CAPABILITY_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
STATUS_FIELDS = ("Uid", "Gid", *CAPABILITY_FIELDS, "NoNewPrivs", "Seccomp")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@functools.lru_cache(maxsize=1)
def libc() -> ctypes.CDLL:
    """The C library already loaded in this process (no search, no subprocess); call it before a fork."""
    return ctypes.CDLL(None, use_errno=True)


def drop_bounding_set() -> None:
    """Empty the bounding set and the ambient set (needs CAP_SETPCAP for the first; best effort)."""
    c = libc()
    zero = ctypes.c_ulong(0)
    c.prctl(_PR_CAP_AMBIENT, ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL), zero, zero, zero)
    for cap in range(64):
        if c.prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), zero, zero, zero) != 0:
            break  # EINVAL: past the kernel's last capability; EPERM: no CAP_SETPCAP (not root)


def drop_capabilities() -> None:
    """Drop every capability of this process: bounding and ambient sets (where it may), then effective,
    permitted and inheritable (always allowed)."""
    drop_bounding_set()
    data = (_CapData * 2)()
    libc().capset(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), data)


def status(text: str | None = None) -> dict:
    """Uid, gid, the capability sets (hex), NoNewPrivs and Seccomp of this process's /proc/self/status."""
    if text is None:
        with open("/proc/self/status") as f:
            text = f.read()
    out: dict = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            fields = value.split()
            if key in ("Uid", "Gid"):
                out[key.lower()] = [int(v) for v in fields]
            elif key in CAPABILITY_FIELDS:
                out[key] = fields[0] if fields else ""
            else:
                out[key] = int(fields[0]) if fields else None
    return out


def problem(state: dict) -> str | None:
    """Why a process in ``state`` holds (or would regain at execve) a capability; None when it cannot."""
    held = [key for key in ("CapInh", "CapPrm", "CapEff", "CapAmb") if int(state.get(key) or "0", 16)]
    if held:
        return f"capabilities still held ({', '.join(f'{k} {state[k]}' for k in held)})"
    if 0 in state.get("uid", []) and int(state.get("CapBnd") or "0", 16):
        return f"uid 0 with a bounding set ({state['CapBnd']}) it would regain at execve"
    return None
