"""Run untrusted code in a child process: the view's filesystem layer, limits, a kill from outside.

Trusted side.

Every child (the probe, and the tests' children) starts the same way, built from one ``ChildView``:

    [bwrap <view>] python -s <lib>/grader/child/enter.py <policy> -- ARGV

``enter.py`` restricts the process with Landlock (a second layer under bubblewrap, the main one
without it), drops every capability and installs the seccomp filter (``grader/child/seccomp.py``)
before ARGV runs, under every layer. When the grader runs as root, the forked child empties its
capability bounding set before it execs, and becomes ``nobody`` where that user can run this Python
(``limits.py``); bubblewrap is told ``--cap-drop ALL``. The environment is clean; a private TMPDIR
(bubblewrap: a size-limited tmpfs /tmp and /dev/shm of its own; Landlock alone: a folder of its own
and no /dev/shm) is removed afterwards whatever the child left in it; rlimits, a pids cgroup and a
session killed as a group on timeout bound what the child can take. The result records which layers
were active, and the uid and capabilities the child had as ``enter.py`` measured them.
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
from typing import Any

from grader.child.privileges import libc
from grader.failures import ErrorKind, Failure
from grader.sandbox.layers import (
    available,
    best_layer,
    bwrap_args,
    bwrap_sizes_tmpfs,
    landlock_abi,
    landlock_policy,
)
from grader.sandbox.limits import NOBODY, Limits, ProcessGroupLimit, apply_limits, drop_to_nobody
from grader.sandbox.view import ChildView, child_view

OUTPUT_CAP = 64_000  # characters of stdout/stderr kept from a child
SANDBOX_REFUSED = 97  # grader/child/enter.py's status when a layer could not be applied (the code did not run)
REPORT_CAP = 4096  # bytes read from enter.py's report pipe
SCRATCH_PREFIX = "s6-child-"  # + the grader's pid: a folder of a grader that died is swept by the next one
STALE_SCRATCH_S = 3600.0
BOOT = "import sys; sys.path.pop(0); from grader.child import main; main()"  # no cwd on sys.path


def child_command(kind: str, spec: Path | None) -> list[str]:
    """The argv of the grader's own child (``probe``: the only one; the training is trusted).

    ``spec`` None: a warm child, which loads its libraries at once and then reads its spec's path as
    one line on stdin (``run_sandboxed``'s ``handoff``); an empty line ends it unused."""
    return [sys.executable, "-s", "-c", BOOT, kind, "-" if spec is None else str(spec)]


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
    refused: str | None = None  # enter.py did not run the command: a layer could not be applied

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
        if self.refused is not None:  # said on enter.py's pipe, which no student code can write to
            return Failure(ErrorKind.SANDBOX_FAILED, f"{self.refused[:300]}; the code was not run").to_dict()
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
    """A clean environment: nothing of the grader's own (tokens, proxies, data paths) leaks in.

    ``python_path``: the child's own lib folder alone (the grader package); the parent's PYTHONPATH is
    never passed on, nor shown (grader/sandbox/view.py)."""
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
    handoff: Callable[[], str | None] | None = None,
) -> ChildResult:
    """Run ``argv`` (a Python command) as untrusted code; never raises for what the child does.

    The child sees ``view`` (or the view of ``cwd``/``writable``/``readable``/``forbidden``, built by
    ``child_view``). ``poll`` is called about twice a second while the child runs; when it returns
    True the child is stopped (early stop) and the result says ``stopped``.

    ``handoff``: the child starts at once, confined as always, and gets one line on its stdin when
    ``handoff()`` returns it (None: an empty line, the child's cue to end unused). What the caller
    puts into the writable folders meanwhile is the child's from then on; the time limit counts from
    the handoff, so a child that loads its libraries while its submission is still being read costs
    the caller no wall time (grader/pipeline.py).
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
    _sweep_stale_scratch()
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    try:
        return _run(argv, view, layer, scratch, limits, env, poll, handoff)
    finally:
        remove_tree(scratch)


def _run(
    argv: list[str],
    view: ChildView,
    layer: str,
    scratch: Path,
    limits: Limits,
    env: dict[str, str] | None,
    poll: Callable[[], bool] | None,
    handoff: Callable[[], str | None] | None = None,
) -> ChildResult:
    lib, tmp = scratch / "lib", scratch / "tmp"
    lib.mkdir()
    tmp.mkdir()
    (lib / "grader").symlink_to(view.grader_package, target_is_directory=True)
    use_landlock = layer in ("bubblewrap", "landlock") and landlock_abi() >= 1
    policy = landlock_policy(view, lib, tmp, layer) if use_landlock else {"landlock": False}
    home = "/tmp" if layer == "bubblewrap" else str(tmp)
    report_read, report_write = os.pipe()  # enter.py -> here: what it applied and measured, before ARGV runs
    policy |= {"seccomp": True, "report_fd": report_write}
    enter = [sys.executable, "-s", str(lib / "grader" / "child" / "enter.py"), json.dumps(policy), "--"]
    command = ([*bwrap_args(view, lib, limits.tmp_mb)] if layer == "bubblewrap" else []) + enter + list(argv)
    if drop_to_nobody():
        for folder in [*view.read_write, scratch]:
            _give_to_nobody(folder)
    group = ProcessGroupLimit(limits.processes, None if view.gpu else limits.memory_mb) if os.geteuid() == 0 else None
    layers: dict[str, Any] = {
        "filesystem": layer,
        "bubblewrap": layer == "bubblewrap",
        "landlock_abi": landlock_abi() if use_landlock else None,
        "network": "off" if layer == "bubblewrap" else ("tcp denied" if use_landlock and landlock_abi() >= 4 else "on"),
        "pids_limit": limits.processes
        if (group is not None and group.active) or os.geteuid() != 0 or drop_to_nobody()
        else None,
        "memory_mb": None if view.gpu else limits.memory_mb,
        "wall_s": limits.wall_s,
        # What the child could share with other children: bubblewrap mounts its own; under Landlock alone
        # /dev/shm is not in the view and TMPDIR is a folder of its own; plain shows the host's /dev/shm.
        "tmp": {"bubblewrap": "tmpfs", "landlock": "folder", "plain": "folder"}[layer],
        "tmp_mb": limits.tmp_mb if layer == "bubblewrap" and bwrap_sizes_tmpfs() else None,
        "dev_shm": {"bubblewrap": "tmpfs", "landlock": "none", "plain": "host"}[layer],
        # Landlock checks opening a file or listing a folder, not looking a path up: stat() answers outside the view.
        "names_visible": layer == "landlock",
    }
    libc()  # loaded here, before the fork: the forked child only calls it
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(
                command,
                cwd=str(view.cwd),
                env=child_env(home, env, view.gpu, str(lib)),
                stdin=subprocess.DEVNULL if handoff is None else subprocess.PIPE,
                stdout=out,
                stderr=err,
                pass_fds=(report_write,),
                preexec_fn=functools.partial(apply_limits, limits, not view.gpu, group, layer != "bubblewrap"),
            )
        except OSError as exc:
            os.close(report_read)
            os.close(report_write)
            if group is not None:
                group.close()
            return ChildResult(None, False, 0.0, "", f"could not start the child: {exc}", layer, layers=layers)
        os.close(report_write)
        timed_out = stopped = False
        try:
            if handoff is not None:
                _hand_over(proc, handoff(), view)
                start = time.monotonic()
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
            report = _read_report(report_read)
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
    layers |= _measured(report.get("applied"))
    if layers["seccomp"] and layer != "bubblewrap":
        layers["network"] = "unix sockets only"
    result = ChildResult(code, timed_out, wall, stdout, stderr, layer, sig, layers=layers)
    result.stopped = stopped
    if code == SANDBOX_REFUSED and isinstance(report.get("refused"), str):
        result.refused = report["refused"]
    if layers["pids_limit"] is None:
        result.notes.append("the number of processes is not limited (running as root, no writable pids cgroup)")
    return result


def _hand_over(proc: subprocess.Popen, line: str | None, view: ChildView) -> None:
    """Give a waiting child its one line (an empty one: end unused) and close its stdin."""
    if line is not None and drop_to_nobody():  # what the caller put there since is the child's too
        for folder in view.read_write:
            _give_to_nobody(folder)
    stdin = proc.stdin
    if stdin is None:
        return
    try:
        stdin.write(((line or "").replace("\n", " ") + "\n").encode())
        stdin.close()
    except OSError:  # the child ended already (a layer refused, a crash): its status says so
        pass


def _read_report(fd: int) -> dict:
    """enter.py's one JSON line (written and closed before the command ran); {} when there is none."""
    try:
        os.set_blocking(fd, False)
        data = os.read(fd, REPORT_CAP)
    except OSError:
        data = b""
    finally:
        os.close(fd)
    try:
        report = json.loads(data.decode().splitlines()[0]) if data else {}
    except (ValueError, UnicodeDecodeError, IndexError):
        report = {}
    return report if isinstance(report, dict) else {}


def _measured(applied: object) -> dict:
    """The uid, capabilities, no_new_privs and seccomp mode enter.py read from /proc/self/status just
    before it ran the command (the child's own measurement, not what the launcher asked for)."""
    if not isinstance(applied, dict):
        return {"uid": None, "capabilities": None, "seccomp": False, "no_new_privs": None}
    uid = applied.get("uid") or [None]
    caps = {key: str(applied.get(key, "")) for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    return {
        "uid": uid[1] if len(uid) > 1 else uid[0],  # the effective uid
        "capabilities": caps,
        "seccomp": applied.get("Seccomp") == 2,  # 2: a filter is installed
        "no_new_privs": applied.get("NoNewPrivs") == 1,
    }


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


def remove_tree(folder: Path) -> None:
    """Remove a child's folder whatever it left there, folders it made unreadable or unwritable too."""
    shutil.rmtree(folder, ignore_errors=True)
    if not os.path.lexists(folder):
        return
    try:
        os.chmod(folder, 0o700)
    except OSError:
        pass
    for root, dirs, _files in os.walk(folder):  # top-down: each folder is opened up before it is listed
        for name in dirs:
            path = os.path.join(root, name)
            try:
                if not os.path.islink(path):
                    os.chmod(path, 0o700)
            except OSError:
                pass
    shutil.rmtree(folder, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def _sweep_stale_scratch() -> None:
    """Once per grader: remove the child folders of graders that were killed before their cleanup ran."""
    base = Path(tempfile.gettempdir())
    try:
        entries = list(base.glob(f"{SCRATCH_PREFIX}*-*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or time.time() - entry.lstat().st_mtime < STALE_SCRATCH_S:
                continue
            os.kill(int(pid), 0)  # that grader still runs
        except ProcessLookupError:
            remove_tree(entry)
        except OSError:
            continue


def _give_to_nobody(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        try:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        except OSError:
            pass
