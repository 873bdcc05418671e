"""The child's system-call filter: a small seccomp-BPF program built from one table, installed with ctypes.

Untrusted side (runs inside the sandbox next to the student's code): ``grader/child/enter.py`` installs
it in every child, under every layer (bubblewrap, Landlock, plain), after Landlock and before the
command runs. A filter cannot be lifted; it survives ``execve`` and ``fork``, and ``no_new_privs`` is
set with it.

What it refuses (``RULES``; everything else is allowed):
- ``socket``/``socketpair`` of any family but ``AF_UNIX`` (no INET/INET6/NETLINK/PACKET, so no raw
  socket and no datagram either): ``EAFNOSUPPORT``, as a kernel without that family would answer;
- ptrace and its relatives, mount and the new mount API, bpf, perf_event_open, kexec, module loading,
  keyctl/add_key/request_key, userfaultfd, io_uring (its ring can open sockets without ``socket()``),
  open_by_handle_at, personality changes, unshare, setns, and ``clone`` with a ``CLONE_NEW*`` flag:
  ``EPERM``;
- ``clone3``, whose flags live in memory a filter cannot read: ``ENOSYS``, so libc falls back to
  ``clone`` (which the filter can read);
- a system call of another ABI (32-bit x86 on x86_64, AArch32 on aarch64) or of the x32 ABI: the
  process is killed. On an architecture this table does not know, ``install`` refuses, and the child
  does not run.

Why not a library: ``pyseccomp`` (libseccomp's API over ctypes) needs the system's ``libseccomp.so``,
which a pip-only install (a conda or non-Debian machine) may lack; ``seccompy``, the pure-Python one
on PyPI, lets x32 system calls through its filters. The program here is a list of comparisons, one
block per rule, each ending in a return, checked by its own unit tests (tests/unit/test_unit_sandbox.py).
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
from dataclasses import dataclass

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little-endian words).
NR_OFFSET, ARCH_OFFSET = 0, 4


def arg_offset(index: int) -> int:
    """Offset of the low 32-bit word of argument ``index`` (the word an ``int`` argument lives in)."""
    return 16 + 8 * index


# Return values (SECCOMP_RET_*).
ALLOW = 0x7FFF0000
KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000


def errno_action(code: int) -> int:
    return _ERRNO | (code & 0xFFFF)


# Classic BPF opcodes.
LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
RET_K = 0x06  # BPF_RET | BPF_K

AF_UNIX = 1
PERSONALITY_QUERY, PER_LINUX = 0xFFFFFFFF, 0
CLONE_NEW = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True)
class Arch:
    audit: int  # AUDIT_ARCH_*: what seccomp_data.arch holds for this ABI
    x32: bool  # x86_64: numbers with X32_SYSCALL_BIT set are another ABI sharing the arch value


ARCHES = {
    "x86_64": Arch(audit=0xC000003E, x32=True),
    "aarch64": Arch(audit=0xC00000B7, x32=False),
}
ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}

# name: (x86_64, aarch64), from <asm/unistd_64.h> and <asm-generic/unistd.h>.
NUMBERS = {
    "socket": (41, 198),
    "socketpair": (53, 199),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "open_by_handle_at": (304, 265),
    "personality": (135, 92),
    "unshare": (272, 97),
    "setns": (308, 268),
    "clone": (56, 220),
    "clone3": (435, 435),
}


@dataclass(frozen=True)
class Deny:
    """The call fails with ``code``."""

    code: int


@dataclass(frozen=True)
class OnlyValues:
    """Allowed only when the low word of argument ``arg`` is one of ``values``; else fails with ``code``."""

    arg: int
    values: tuple[int, ...]
    code: int


@dataclass(frozen=True)
class NoBits:
    """Allowed only when the low word of argument ``arg`` has none of ``mask``'s bits; else fails with ``code``."""

    arg: int
    mask: int
    code: int


Rule = Deny | OnlyValues | NoBits

_EPERM = Deny(errno.EPERM)
RULES: dict[str, Rule] = {
    # network: only local sockets (the probe needs none; Python's multiprocessing uses AF_UNIX)
    "socket": OnlyValues(0, (AF_UNIX,), errno.EAFNOSUPPORT),
    "socketpair": OnlyValues(0, (AF_UNIX,), errno.EAFNOSUPPORT),
    # other processes
    "ptrace": _EPERM,
    "process_vm_readv": _EPERM,
    "process_vm_writev": _EPERM,
    "pidfd_getfd": _EPERM,
    # mounts
    "mount": _EPERM,
    "umount2": _EPERM,
    "pivot_root": _EPERM,
    "open_tree": _EPERM,
    "move_mount": _EPERM,
    "fsopen": _EPERM,
    "fsconfig": _EPERM,
    "fsmount": _EPERM,
    "fspick": _EPERM,
    "mount_setattr": _EPERM,
    # the kernel itself
    "bpf": _EPERM,
    "perf_event_open": _EPERM,
    "kexec_load": _EPERM,
    "kexec_file_load": _EPERM,
    "init_module": _EPERM,
    "finit_module": _EPERM,
    "delete_module": _EPERM,
    "keyctl": _EPERM,
    "add_key": _EPERM,
    "request_key": _EPERM,
    "userfaultfd": _EPERM,
    "io_uring_setup": Deny(errno.ENOSYS),
    "io_uring_enter": Deny(errno.ENOSYS),
    "io_uring_register": Deny(errno.ENOSYS),
    "open_by_handle_at": _EPERM,
    "personality": OnlyValues(0, (PERSONALITY_QUERY, PER_LINUX), errno.EPERM),
    # namespaces
    "unshare": _EPERM,
    "setns": _EPERM,
    "clone": NoBits(0, CLONE_NEW, errno.EPERM),
    "clone3": Deny(errno.ENOSYS),
}


class SeccompError(OSError):
    """The filter cannot be built for this machine, or the kernel refused it."""


def machine_arch(machine: str | None = None) -> str:
    """The table's name for ``machine`` (default: this one); SeccompError for an architecture it lacks."""
    name = (machine or platform.machine()).lower()
    name = ALIASES.get(name, name)
    if name not in ARCHES:
        raise SeccompError(f"no seccomp filter for the {name or 'unknown'} architecture")
    return name


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    assert 0 <= jt <= 255 and 0 <= jf <= 255 and 0 <= k <= 0xFFFFFFFF
    return (code, jt, jf, k)


def _block(rule: Rule) -> list[tuple[int, int, int, int]]:
    """The instructions run when the call matched: each path ends in a return."""
    if isinstance(rule, Deny):
        return [_insn(RET_K, errno_action(rule.code))]
    if isinstance(rule, OnlyValues):
        n = len(rule.values)
        out = [_insn(LD_ABS_W, arg_offset(rule.arg))]
        # comparison i (at block position 1 + i) jumps to the ALLOW at position n + 2
        out += [_insn(JEQ_K, value, jt=n - i) for i, value in enumerate(rule.values)]
        return [*out, _insn(RET_K, errno_action(rule.code)), _insn(RET_K, ALLOW)]
    return [
        _insn(LD_ABS_W, arg_offset(rule.arg)),
        _insn(JSET_K, rule.mask, jt=0, jf=1),
        _insn(RET_K, errno_action(rule.code)),
        _insn(RET_K, ALLOW),
    ]


def program(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter for ``machine`` as (code, jt, jf, k) instructions."""
    name = machine_arch(machine)
    arch = ARCHES[name]
    column = list(ARCHES).index(name)
    out = [
        _insn(LD_ABS_W, ARCH_OFFSET),
        _insn(JEQ_K, arch.audit, jt=1),
        _insn(RET_K, KILL_PROCESS),  # another ABI's numbers mean other calls: never guess
        _insn(LD_ABS_W, NR_OFFSET),
    ]
    if arch.x32:
        out += [_insn(JGE_K, X32_SYSCALL_BIT, jt=0, jf=1), _insn(RET_K, KILL_PROCESS)]
    for name_, rule in RULES.items():
        block = _block(rule)  # A still holds the number: every block that loads an argument returns
        out += [_insn(JEQ_K, NUMBERS[name_][column], jt=0, jf=len(block)), *block]
    out.append(_insn(RET_K, ALLOW))
    return out


def packed(instructions: list[tuple[int, int, int, int]]) -> bytes:
    """struct sock_filter[]: u16 code, u8 jt, u8 jf, u32 k, in the machine's byte order."""
    return b"".join(struct.pack("=HBBI", *insn) for insn in instructions)


def run(instructions: list[tuple[int, int, int, int]], nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """What the program returns for one call: a tiny classic-BPF interpreter, for the tests."""
    words = [nr & 0xFFFFFFFF, arch]
    data = struct.pack("<IIQ", *words, 0) + b"".join(struct.pack("<Q", a) for a in (*args, 0, 0, 0, 0, 0, 0)[:6])
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = instructions[pc]
        if code == LD_ABS_W:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == RET_K:
            return k
        elif code in (JEQ_K, JGE_K, JSET_K):
            hit = {JEQ_K: acc == k, JGE_K: acc >= k, JSET_K: bool(acc & k)}[code]
            pc += jt if hit else jf
        else:
            raise ValueError(f"opcode {code:#x} at {pc}")
        pc += 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def install(machine: str | None = None) -> int:
    """Set ``no_new_privs`` and install the filter on this process; returns its length in instructions.

    Raises SeccompError when the architecture is unknown or the kernel refuses."""
    instructions = program(machine)
    code = ctypes.create_string_buffer(packed(instructions))
    prog = _SockFprog(len(instructions), ctypes.cast(code, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    zero = ctypes.c_ulong(0)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
        raise SeccompError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prog), zero, zero) != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"prctl(PR_SET_SECCOMP): {errno.errorcode.get(err, err)}")
    return len(instructions)
