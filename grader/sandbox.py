"""Run untrusted code in a child process with hard limits and a kill from outside.

- bubblewrap (Debian ``bubblewrap``) when it works here: a read-only view of the filesystem, private
  /tmp, no network, its own PID namespace, with the data, the cache and the user's home masked so the
  child cannot read the test split or anyone else's files; only ``writable`` folders can be written.
- otherwise a plain subprocess with the same limits (the report says the isolation is weaker).
- both: a clean environment, rlimits (data memory, CPU seconds, processes, file size, open files), a
  new session killed as a group on timeout, and, when the grader runs as root, the ``nobody`` user.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

NOBODY = 65534
OUTPUT_CAP = 64_000  # characters of stdout/stderr kept from a child


@dataclass
class Limits:
    wall_s: float = 120.0
    cpu_s: int = 600
    memory_mb: int = 6144  # RLIMIT_DATA: heap + private mappings (RLIMIT_AS would break torch's import)
    processes: int = 512  # threads count too
    file_mb: int = 256
    open_files: int = 1024


@dataclass
class ChildResult:
    returncode: int | None
    timed_out: bool
    wall_s: float
    stdout: str
    stderr: str
    isolation: str  # "bubblewrap" | "plain"
    signal: str | None = None
    notes: list[str] = field(default_factory=list)
    stopped: bool = False  # stopped on purpose by the caller's poll (early stop)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def failure(self) -> dict | None:
        """A typed reason when the child did not end normally."""
        if self.stopped:
            return None
        if self.timed_out:
            return {"type": "timeout", "message": f"killed after {self.wall_s:.0f} s (the time limit)"}
        if self.returncode == 0:
            return None
        tail = (self.stderr.strip().splitlines() or [""])[-1][:300]
        memory = "MemoryError" in self.stderr or "Cannot allocate" in self.stderr
        if self.signal == "SIGKILL" or memory:
            return {
                "type": "out_of_memory",
                "message": f"the child ran out of memory or was killed ({self.signal or tail})",
            }
        if self.signal == "SIGXCPU":
            return {"type": "timeout", "message": "CPU time limit exceeded"}
        if self.signal == "SIGXFSZ":
            return {"type": "file_too_large", "message": "the child wrote a file over the size limit"}
        if self.signal:
            return {"type": "crash", "message": f"the child died from {self.signal}: {tail}"}
        return {"type": "crash", "message": f"the child exited with status {self.returncode}: {tail}"}


@functools.lru_cache(maxsize=1)
def drop_to_nobody() -> bool:
    """When the grader runs as root, children run as ``nobody`` if that user can run this Python."""
    if os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(
            [sys.executable, "-c", "import grader"], preexec_fn=_drop_privileges, capture_output=True, timeout=60
        )
        return r.returncode == 0
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def bubblewrap_works() -> bool:
    """True when bwrap is installed and can make namespaces here (as the user children run as)."""
    exe = shutil.which("bwrap")
    if exe is None or os.environ.get("S6_GRADER_NO_BWRAP"):
        return False
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
            preexec_fn=_drop_privileges if drop_to_nobody() else None,
            capture_output=True,
            timeout=60,
        )
        return r.returncode == 0
    except Exception:
        return False


def _drop_privileges() -> None:
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
            candidates.append((Path("/sys/fs/cgroup"), {"pids.max": str(processes)} | ({"memory.max": str(memory_mb << 20)} if memory_mb else {})))  # fmt: skip
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


def _limit(limits: Limits, memory: bool, group: ProcessGroupLimit | None = None) -> None:
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
    if drop_to_nobody():
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        _drop_privileges()
    elif os.geteuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))


def child_env(extra: dict[str, str] | None = None, gpu: bool = False) -> dict[str, str]:
    """A clean environment: nothing of the grader's own (tokens, proxies, data paths) leaks in."""
    env = {
        "PATH": os.path.dirname(sys.executable) + ":/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/mpl",
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",  # see grader/cli.py: no spinning threads on shared cores
        "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor",
        "NO_PROXY": "*",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    if extra:
        env.update(extra)
    return env


def _readable_roots() -> list[str]:
    """Folders the child must still see after the home folder is masked: Python and the grader."""
    import grader

    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.abspath(grader.__file__)))}
    paths.update(p for p in sys.path if p and os.path.isdir(p) and "site-packages" in p)
    return sorted(paths)


def run_sandboxed(
    argv: list[str],
    *,
    cwd: Path,
    writable: list[Path],
    hidden: list[Path] = (),  # type: ignore[assignment]
    readable: list[Path] = (),  # type: ignore[assignment]
    limits: Limits | None = None,
    env: dict[str, str] | None = None,
    gpu: bool = False,
    isolation: str = "auto",
    poll: Callable[[], bool] | None = None,
) -> ChildResult:
    """Run ``argv`` (a Python command) as untrusted code; never raises for what the child does.

    ``poll`` is called about twice a second while the child runs; when it returns True the child is
    stopped (early stop) and the result says ``stopped``.
    """
    limits = limits or Limits()
    use_bwrap = isolation == "bubblewrap" or (isolation == "auto" and bubblewrap_works())
    if drop_to_nobody():
        for folder in writable:
            _give_to_nobody(folder)
    group = ProcessGroupLimit(limits.processes, None if gpu else limits.memory_mb) if os.geteuid() == 0 else None
    command = list(argv)
    if use_bwrap:
        command = _bwrap_prefix(cwd, writable, list(hidden), gpu, list(readable)) + command
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(
                command,
                cwd=str(cwd),
                env=child_env(env, gpu),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=functools.partial(_limit, limits, not gpu, group),
            )
        except OSError as exc:
            if group is not None:
                group.close()
            return ChildResult(
                None, False, 0.0, "", f"could not start the child: {exc}", "bubblewrap" if use_bwrap else "plain"
            )
        timed_out = stopped = False
        try:
            while True:
                try:
                    proc.wait(timeout=0.5 if poll else limits.wall_s)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() - start > limits.wall_s:
                        timed_out = True
                        break
                    if poll is not None and poll():
                        stopped = True
                        break
        finally:
            _kill_group(proc)
            if group is not None:
                group.close()
        wall = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read()[-OUTPUT_CAP:], err.read()[-OUTPUT_CAP:]
    code = proc.returncode
    sig = None
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
    elif code is not None and code > 128 and use_bwrap:
        # bwrap reports a signalled child as 128 + signal number.
        try:
            sig = signal.Signals(code - 128).name
        except ValueError:
            sig = None
    result = ChildResult(code, timed_out, wall, stdout, stderr, "bubblewrap" if use_bwrap else "plain", sig)
    result.stopped = stopped
    if group is None and os.geteuid() == 0 and not drop_to_nobody():
        result.notes.append("the number of processes is not limited (running as root, no pids cgroup)")
    elif group is not None and not group.active and not drop_to_nobody():
        result.notes.append("the number of processes is not limited (no writable pids cgroup here)")
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's whole session (it may have forked); bwrap's PID namespace dies with it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _give_to_nobody(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        try:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        except OSError:
            pass


def _bwrap_prefix(cwd: Path, writable: list[Path], hidden: list[Path], gpu: bool, readable: list[Path]) -> list[str]:
    args = ["bwrap", "--die-with-parent", "--unshare-all", "--new-session"]
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    masked = [Path.home(), *hidden]
    for path in masked:
        if path.exists():
            args += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    # Python and the grader must stay visible where a mask (or the private /tmp) covers them.
    for root in _readable_roots():
        if any(_inside(Path(root), m) for m in [*masked, Path("/tmp")]):
            args += ["--ro-bind", root, root]
    for folder in readable:
        args += ["--ro-bind", str(folder), str(folder)]
    for folder in writable:
        args += ["--bind", str(folder), str(folder)]
    if gpu:
        for dev in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(dev), str(dev)]
    args += ["--chdir", str(cwd), "--"]
    return args


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
