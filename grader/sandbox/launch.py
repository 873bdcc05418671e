"""Run untrusted code in a child process: the view's filesystem layer, limits, a kill from outside.

Trusted side.

Every child (probe, training, tests) starts the same way, built from one ``ChildView``:

    [bwrap <view>] python -s <lib>/grader/child/enter.py <landlock policy> -- ARGV

``enter.py`` restricts the process with Landlock (a second layer under bubblewrap, the main one
without it) before ARGV runs. The environment is clean; rlimits, a pids cgroup and a session killed
as a group on timeout bound what the child can take. The result records which layers were active.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grader.failures import ErrorKind, Failure
from grader.sandbox.layers import available, best_layer, bwrap_args, landlock_abi, landlock_policy
from grader.sandbox.limits import NOBODY, Limits, ProcessGroupLimit, apply_limits, drop_to_nobody
from grader.sandbox.view import ChildView, child_view

OUTPUT_CAP = 64_000  # characters of stdout/stderr kept from a child
LANDLOCK_REFUSED = 97  # grader/child/enter.py's status when Landlock could not be applied
BOOT = "import sys; sys.path.pop(0); from grader.child import main; main()"  # no cwd on sys.path


def child_command(kind: str, spec: Path) -> list[str]:
    """The argv of the grader's own child (``probe``: the only one; the training is trusted)."""
    return [sys.executable, "-s", "-c", BOOT, kind, str(spec)]


@dataclass
class ChildResult:
    returncode: int | None
    timed_out: bool
    wall_s: float
    stdout: str
    stderr: str
    isolation: str  # "bubblewrap" | "landlock" | "plain"
    signal: str | None = None
    notes: list[str] = field(default_factory=list)
    stopped: bool = False  # stopped on purpose by the caller's poll (early stop)
    layers: dict = field(default_factory=dict)  # what protected the run (results.json, the report)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def failure(self) -> dict | None:
        """A typed reason when the child did not end normally."""
        if self.stopped:
            return None
        if self.timed_out:
            return Failure(ErrorKind.TIMEOUT, f"killed after {self.wall_s:.0f} s (the time limit)").to_dict()
        if self.returncode == 0:
            return None
        tail = (self.stderr.strip().splitlines() or [""])[-1][:300]
        if self.returncode == LANDLOCK_REFUSED and "Landlock could not be applied" in self.stderr:
            return Failure(ErrorKind.SANDBOX_FAILED, tail).to_dict()
        memory = "MemoryError" in self.stderr or "Cannot allocate" in self.stderr
        if self.signal == "SIGKILL" or memory:
            return Failure(
                ErrorKind.OUT_OF_MEMORY, f"the child ran out of memory or was killed ({self.signal or tail})"
            ).to_dict()
        if self.signal == "SIGXCPU":
            return Failure(ErrorKind.TIMEOUT, "CPU time limit exceeded").to_dict()
        if self.signal == "SIGXFSZ":
            return Failure(ErrorKind.FILE_TOO_LARGE, "the child wrote a file over the size limit").to_dict()
        if self.signal:
            return Failure(ErrorKind.CRASH, f"the child died from {self.signal}: {tail}").to_dict()
        return Failure(ErrorKind.CRASH, f"the child exited with status {self.returncode}: {tail}").to_dict()


def child_env(
    home: str, extra: dict[str, str] | None = None, gpu: bool = False, python_path: str = ""
) -> dict[str, str]:
    """A clean environment: nothing of the grader's own (tokens, proxies, data paths) leaks in."""
    env = {
        "PATH": os.path.dirname(sys.executable) + ":/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "USER": "student",
        "LOGNAME": "student",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": python_path,
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{home}/mpl",
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",  # see grader/cli.py: no spinning threads on shared cores
        "TORCHINDUCTOR_CACHE_DIR": f"{home}/inductor",
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


def choose_layer(isolation: str) -> str | None:
    """The layer for ``isolation`` ('auto' = the strongest here), or None when the one asked for is missing."""
    if isolation == "auto":
        return best_layer()
    return isolation if available(isolation) else None


def run_sandboxed(
    argv: list[str],
    *,
    view: ChildView | None = None,
    cwd: Path | None = None,
    writable: Sequence[Path] = (),
    readable: Sequence[Path] = (),
    forbidden: Sequence[Path] = (),
    limits: Limits | None = None,
    env: dict[str, str] | None = None,
    gpu: bool = False,
    isolation: str = "auto",
    poll: Callable[[], bool] | None = None,
) -> ChildResult:
    """Run ``argv`` (a Python command) as untrusted code; never raises for what the child does.

    The child sees ``view`` (or the view of ``cwd``/``writable``/``readable``/``forbidden``, built by
    ``child_view``). ``poll`` is called about twice a second while the child runs; when it returns
    True the child is stopped (early stop) and the result says ``stopped``.
    """
    limits = limits or Limits()
    if view is None:
        view = child_view(cwd=cwd or Path.cwd(), writable=writable, readable=readable, forbidden=forbidden, gpu=gpu)
    layer = choose_layer(isolation)
    if layer is None:
        return ChildResult(
            None,
            False,
            0.0,
            "",
            f"the {isolation} sandbox is not available here",
            isolation,
            notes=[f"{isolation} is not available on this machine"],
        )
    conflicts = view.conflicts()
    if conflicts:  # refused on every layer: even a mask would name the path to the child
        shown, secret = conflicts[0]
        message = f"{secret} lies inside {shown}, which the sandbox must show the child; move it elsewhere"
        return ChildResult(None, False, 0.0, "", message, layer, notes=[message])
    scratch = Path(tempfile.mkdtemp(prefix="s6-child-"))
    try:
        return _run(argv, view, layer, scratch, limits, env, poll)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(
    argv: list[str],
    view: ChildView,
    layer: str,
    scratch: Path,
    limits: Limits,
    env: dict[str, str] | None,
    poll: Callable[[], bool] | None,
) -> ChildResult:
    lib, tmp = scratch / "lib", scratch / "tmp"
    lib.mkdir()
    tmp.mkdir()
    (lib / "grader").symlink_to(view.grader_package, target_is_directory=True)
    use_landlock = layer in ("bubblewrap", "landlock") and landlock_abi() >= 1
    policy = landlock_policy(view, lib, tmp, layer) if use_landlock else {"landlock": False}
    home = "/tmp" if layer == "bubblewrap" else str(tmp)
    enter = [sys.executable, "-s", str(lib / "grader" / "child" / "enter.py"), json.dumps(policy), "--"]
    command = ([*bwrap_args(view, lib)] if layer == "bubblewrap" else []) + enter + list(argv)
    python_path = os.pathsep.join([str(lib), *map(str, view.python_path)])
    if drop_to_nobody():
        for folder in [*view.read_write, scratch]:
            _give_to_nobody(folder)
    group = ProcessGroupLimit(limits.processes, None if view.gpu else limits.memory_mb) if os.geteuid() == 0 else None
    layers = {
        "filesystem": layer,
        "bubblewrap": layer == "bubblewrap",
        "landlock_abi": landlock_abi() if use_landlock else None,
        "network": "off" if layer == "bubblewrap" else ("tcp denied" if use_landlock and landlock_abi() >= 4 else "on"),
        "pids_limit": limits.processes
        if (group is not None and group.active) or os.geteuid() != 0 or drop_to_nobody()
        else None,
        "memory_mb": None if view.gpu else limits.memory_mb,
        "wall_s": limits.wall_s,
    }
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(
                command,
                cwd=str(view.cwd),
                env=child_env(home, env, view.gpu, python_path),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=functools.partial(apply_limits, limits, not view.gpu, group),
            )
        except OSError as exc:
            if group is not None:
                group.close()
            return ChildResult(None, False, 0.0, "", f"could not start the child: {exc}", layer, layers=layers)
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
    elif code is not None and code > 128 and layer == "bubblewrap":
        # bwrap reports a signalled child as 128 + signal number.
        try:
            sig = signal.Signals(code - 128).name
        except ValueError:
            sig = None
    result = ChildResult(code, timed_out, wall, stdout, stderr, layer, sig, layers=layers)
    result.stopped = stopped
    if layers["pids_limit"] is None:
        result.notes.append("the number of processes is not limited (running as root, no writable pids cgroup)")
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
