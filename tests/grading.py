"""Helpers for tests that grade fixture submissions through the `grade` CLI."""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures import submissions

from grader.batch import forkrun

REPO = Path(__file__).resolve().parent.parent
TEST_RUBRIC = """
[limits]
probe_seconds = 25
"""


def run_grade(sub: Path, out: Path, *args: str, timeout: float = 300) -> tuple[int, dict, str]:
    """Run the `grade` CLI on ``sub``; return (exit status, results JSON, terminal output).

    The grading is a process of its own, forked from the batch's fork server (torch and the grader
    already imported: two CPU seconds less per grading, the suite's largest repeated cost), or a fresh
    ``python -m grader`` where a fork server cannot run."""
    argv = [str(sub), "--out", str(out), *args]
    env = {**os.environ, "COLUMNS": "200"}
    start = time.perf_counter()
    if forkrun.available():
        code, output = _forked(argv, env, timeout)
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "grader", *argv], capture_output=True, text=True, timeout=timeout, env=env
        )
        code, output = proc.returncode, proc.stdout + proc.stderr
    _log_grading(sub, args, time.perf_counter() - start)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    return code, results, output


def _log_grading(sub: Path, args: tuple[str, ...], seconds: float) -> None:
    """One JSON line per grading into $S6_GRADING_LOG, when set: benchmarks/suite.py counts them."""
    if log := os.environ.get("S6_GRADING_LOG"):
        line = {"test": os.environ.get("PYTEST_CURRENT_TEST", ""), "submission": sub.name, "args": list(args)}
        with open(log, "a") as f:
            f.write(json.dumps({**line, "seconds": round(seconds, 2)}) + "\n")


def _forked(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="s6-test-grade-") as scratch:
        log = Path(scratch) / "output.log"
        process = forkrun.start(argv, log, env, None, os.cpu_count() or 1, name=b"s6-test-grade")
        process.join(timeout)
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the grading is a session of its own
            process.join(10)
            raise subprocess.TimeoutExpired(argv, timeout)
        output = log.read_text(errors="replace") if log.is_file() else "(the forked grading wrote nothing)"
    # The fork server's own line about the grading's CPU time is not the CLI's output.
    lines = [line for line in output.splitlines(keepends=True) if not line.startswith("[batch] cpu ")]
    return int(process.exitcode or 0), "".join(lines)


def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this run sees (the run's base temp), or this session's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def once_per_run(root: Path, name: str) -> Iterator[bool]:
    """Under an exclusive lock on ``root/name.lock``: True for the first worker, which must build
    ``name``, False for the others once it is built (a builder that fails leaves it to the next).

    With whole files per xdist worker, a session-scoped fixture would be built once per worker; the
    expensive ones (gradings) are built once per run this way and read by all."""
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / f"{name}.done"
        yield not done.is_file()
        done.touch()


class Graded:
    """Fixture submissions graded without training, each once per run (whichever worker asks first),
    several at a time (each grading is mostly a child process)."""

    def __init__(self, root: Path):
        self.root = root
        self.rubric = root / "rubric.toml"
        staged = root / f"rubric.{os.getpid()}.toml"  # another worker may be reading it: replace, never rewrite
        staged.write_text(TEST_RUBRIC)
        os.replace(staged, self.rubric)
        self.pool = concurrent.futures.ThreadPoolExecutor(2)
        self.futures: dict[str, concurrent.futures.Future] = {}

    def submit(self, *names: str) -> None:
        for name in names:
            if name not in self.futures:
                self.futures[name] = self.pool.submit(self._grade_once, name)

    def _grade_once(self, name: str) -> tuple[int, dict, str]:
        kept = self.root / "kept" / f"{name}.json"
        with once_per_run(self.root, f"graded-{name}") as build:
            if build:
                sub = self.root / "subs" / name
                shutil.rmtree(sub, ignore_errors=True)
                submissions.build(name, sub)
                code, results, output = run_grade(
                    sub, self.root / "out" / name, "--no-train", "--rubric", str(self.rubric)
                )
                kept.parent.mkdir(exist_ok=True)
                kept.write_text(json.dumps([code, results, output]))
        code, results, output = json.loads(kept.read_text())
        return code, results, output

    def __getitem__(self, name: str) -> tuple[int, dict, str]:
        self.submit(name)
        return self.futures[name].result()


def by_id(results: dict) -> dict[str, dict]:
    return {c["id"]: c for c in results.get("checks", [])}
