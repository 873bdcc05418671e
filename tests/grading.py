"""Helpers for tests that grade fixture submissions through the `grade` CLI."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

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
    if forkrun.available():
        code, output = _forked(argv, env, timeout)
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "grader", *argv], capture_output=True, text=True, timeout=timeout, env=env
        )
        code, output = proc.returncode, proc.stdout + proc.stderr
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    return code, results, output


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


class Graded:
    """Lazily graded fixture submissions, several at a time (each grade is mostly a child process)."""

    def __init__(self, root: Path):
        self.root = root
        self.rubric = root / "rubric.toml"
        self.rubric.write_text(TEST_RUBRIC)
        self.cache: dict[str, tuple[int, dict, str]] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(2)
        self.futures: dict[str, concurrent.futures.Future] = {}

    def submit(self, *names: str) -> None:
        for name in names:
            if name not in self.futures:
                sub = submissions.build(name, self.root / "subs" / name)
                out = self.root / "out" / name
                self.futures[name] = self.pool.submit(run_grade, sub, out, "--no-train", "--rubric", str(self.rubric))

    def __getitem__(self, name: str) -> tuple[int, dict, str]:
        self.submit(name)
        return self.futures[name].result()


def by_id(results: dict) -> dict[str, dict]:
    return {c["id"]: c for c in results.get("checks", [])}
