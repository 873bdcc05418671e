"""Grade one submission in a process of its own: a wall-clock limit, a memory limit, a kill of its whole tree.

Trusted side.

The single-submission grader already sandboxes the student's code; this extra process per submission
gives the batch its own isolation: a grader that hangs, crashes or leaks memory on one submission
takes only that submission down, and two students' ``utils``/``model`` modules never meet in one
interpreter. The process is forked from a fork server that preloaded torch and the grader
(``forkrun``, the default) or is a fresh ``python -m grader`` (``launch="exec"``). Either way it dies
with the batch (``PR_SET_PDEATHSIG``), so a killed batch leaves no graders running behind it, and on
a timeout its whole process tree is killed, not only its group (the sandboxed child runs in a session
of its own).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from grader.batch import forkrun
from grader.boundary import UnsafeOutput, read_output
from grader.failures import ErrorKind, Failure

# The files of the grader's --out folder the batch keeps (the initial weights only where they exist).
KEEP = ("results.json", "report.html", "graph.json", "probe.json", "summary.txt", "weights.safetensors")
KEEP_MAX_BYTES = 64 * 1024 * 1024
LOG_MAX_CHARS = 200_000


@dataclass
class Unit:
    """One grading job: a submission folder, how to grade it, and its limits."""

    student: str
    source: Path
    train: bool = False
    timeout_s: float = 600.0
    memory_mb: int | None = 8192
    gpu: str | None = None  # a CUDA index for CUDA_VISIBLE_DEVICES; "inherit" keeps the caller's (Ray sets it)
    threads: int = 1
    grade_args: list[str] = field(default_factory=list)  # --rubric, --isolation, --data, ...
    hide: list[str] = field(default_factory=list)  # folders the student's code must not read
    launch: str = "fork"  # "fork": from the preloaded fork server; "exec": a fresh `python -m grader`
    state_dir: Path | None = None  # the student's interrupted training, kept across batch runs

    def command(self, out: Path) -> list[str]:
        mode = (
            ["--train", "--device", "cuda"] if self.train and self.gpu else ["--train" if self.train else "--no-train"]
        )
        if self.train and self.state_dir is not None:
            mode += ["--state-dir", str(self.state_dir)]
        return [sys.executable, "-m", "grader", str(self.source), "--out", str(out), "--quiet", *mode, *self.grade_args]


@dataclass
class UnitOutput:
    """What came back: the grader's files (by name), its exit status, and a typed error when it broke."""

    files: dict[str, bytes]
    returncode: int | None
    wall_s: float
    log: str
    error: dict | None = None

    def results(self) -> dict | None:
        data = self.files.get("results.json")
        if data is None:
            return None
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        return parsed if isinstance(parsed, dict) else None


def run_unit(unit: Unit, scratch: Path | None = None) -> UnitOutput:
    """Run the grader on ``unit`` and collect its output; never raises for what the grader does."""
    return start_unit(unit, scratch).finish()


def start_unit(unit: Unit, scratch: Path | None = None, ahead: bool = False) -> StartedUnit:
    """Start the grader on ``unit``; ``finish()`` waits for it and collects its output.

    ``ahead``: the grading is forked now but waits for its turn (``finish`` gives it): meanwhile its
    sandboxed probe child loads its libraries, and nothing of the submission is read. The caller
    takes a CPU slot between the two calls, so the slot is held only while the grading works."""
    tmp = Path(tempfile.mkdtemp(prefix=f"batch-{unit.student[:40]}-", dir=scratch))
    started = StartedUnit(unit, tmp, unit.command(tmp / "out"))
    try:
        started.handle = _start(unit, started.command, started.log_path, ahead)
    except OSError as exc:
        started.error = Failure(ErrorKind.BATCH_ERROR, f"could not start the grader: {exc}").to_dict()
    return started


@dataclass
class StartedUnit:
    """A grading process that was started, and what ``finish`` needs to wait for it and collect."""

    unit: Unit
    tmp: Path
    command: list[str]
    handle: _Handle | None = None
    error: dict | None = None  # it could not be started
    since: float = field(default_factory=time.monotonic)

    @property
    def log_path(self) -> Path:
        return self.tmp / "grader.log"

    def finish(self) -> UnitOutput:
        """Give the grading its turn, wait for it within the unit's limit, collect; never raises for what
        the grader does. The limit counts from the turn."""
        unit, handle = self.unit, self.handle
        try:
            if handle is None:
                return UnitOutput({}, None, 0.0, "", self.error)
            waited = handle.go()
            started = time.monotonic()
            error = None
            if not handle.wait(unit.timeout_s):
                error = Failure(
                    ErrorKind.TIMEOUT, f"grading took more than {unit.timeout_s:g} s and was killed"
                ).to_dict()
                kill_tree(handle.pid)  # while it is alive, so that its descendants can still be found
            _kill_group(handle.pid)  # whatever it left running in its group
            returncode = handle.reap()
            wall = time.monotonic() - started
            text = (
                self.log_path.read_bytes()[-LOG_MAX_CHARS:].decode(errors="replace") if self.log_path.exists() else ""
            )
            files = _collect(self.tmp / "out")
            how = unit.launch + (f", {started - self.since:.1f} s before its turn" if waited else "")
            header = f"$ {' '.join(self.command)}\nstarted by {how}, exit status {returncode}, {wall:.1f} s\n"
            output = UnitOutput(files, returncode, wall, header + text, error)
            if output.error is None and output.results() is None:
                output.error = _crash(returncode, text)
            return output
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


class _Handle:
    """A started grading, whichever way it was started: give it its turn, wait with a limit, then reap."""

    def __init__(
        self,
        pid: int,
        wait: Callable[[float | None], bool],
        reap: Callable[[], int | None],
        turn: Connection | None = None,
    ):
        self.pid, self.wait, self.reap, self._turn = pid, wait, reap, turn

    def go(self) -> bool:
        """Tell a grading started ahead that its turn has come; False when it was not started ahead."""
        if self._turn is None:
            return False
        try:
            self._turn.send_bytes(b"go")
        except OSError:  # it died while it waited: its exit status says how
            pass
        finally:
            self._turn.close()
        return True


def _start(unit: Unit, command: list[str], log_path: Path, ahead: bool = False) -> _Handle:
    memory = unit.memory_mb if not unit.gpu else None  # CUDA maps far more than it uses
    if unit.launch == "fork" and forkrun.available():
        theirs, turn = multiprocessing.Pipe(duplex=False) if ahead else (None, None)  # (its end, ours)
        process = forkrun.start(command[3:], log_path, _env(unit), memory, unit.threads, turn=theirs)
        if theirs is not None:
            theirs.close()  # the child has its own copy

        def wait_fork(timeout: float | None) -> bool:
            process.join(timeout)
            return not process.is_alive()

        def reap_fork() -> int | None:
            process.join()
            return process.exitcode

        assert process.pid is not None  # forkrun.start returns it started
        return _Handle(process.pid, wait_fork, reap_fork, turn)
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            _launcher(command, memory),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(unit),
            start_new_session=True,  # its own group: a timeout kills it without touching the batch
        )

    def wait_exec(timeout: float | None) -> bool:
        try:
            popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    return _Handle(popen.pid, wait_exec, popen.wait)


def _launcher(command: list[str], memory_mb: int | None) -> list[str]:
    """``python -m grader.batch.launch``: limits and the parent-death signal, set in the child, then exec.

    (``preexec_fn`` would do the same, but it is unsafe in a threaded parent like the batch.)
    """
    limit = ["--memory-mb", str(memory_mb)] if memory_mb else []
    return [sys.executable, "-m", "grader.batch.launch", "--parent", str(os.getpid()), *limit, "--", *command]


def _env(unit: Unit) -> dict[str, str]:
    env = dict(os.environ)
    # One grader per core: torch's own thread pool would otherwise oversubscribe the machine.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(unit.threads)
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if unit.hide:
        env["S6_GRADER_HIDE"] = os.pathsep.join(unit.hide)
    if unit.gpu is None:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.pop("S6_GRADER_ASSUME_CUDA", None)
    elif unit.gpu != "inherit":
        env["CUDA_VISIBLE_DEVICES"] = unit.gpu
    return env


def _collect(out: Path) -> dict[str, bytes]:
    """The grading's kept files, by value: links, non-files and oversized files are left behind."""
    files = {}
    for name in KEEP:
        try:
            files[name] = read_output(out, name, KEEP_MAX_BYTES)
        except (OSError, UnsafeOutput):
            continue
    return files


def _crash(returncode: int | None, log: str) -> dict:
    lines = [line for line in log.strip().splitlines() if line.strip()]
    tail = lines[-1][:300] if lines else ""
    if returncode is not None and returncode < 0:
        name = (
            signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else str(-returncode)
        )
        kind = ErrorKind.OUT_OF_MEMORY if name == "SIGKILL" else ErrorKind.CRASH
        return Failure(kind, f"the grader died from {name} and wrote no results: {tail}").to_dict()
    if "MemoryError" in log:
        return Failure(ErrorKind.OUT_OF_MEMORY, f"the grader ran out of memory: {tail}").to_dict()
    return Failure(
        ErrorKind.CRASH, f"the grader exited with status {returncode} and wrote no results: {tail}"
    ).to_dict()


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s group and every descendant (sandboxed children live in sessions of their own)."""
    for _ in range(5):
        victims = descendants(pid)
        for child in victims:
            try:
                os.kill(child, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _kill_group(pid)
        if not victims:
            return


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc (Linux); empty where /proc is not there."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # The command name may contain spaces and parentheses: the fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
