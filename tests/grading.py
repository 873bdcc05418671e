"""Helpers for tests that grade fixture submissions through the `grade` CLI."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

from fixtures import submissions

REPO = Path(__file__).resolve().parent.parent
TEST_RUBRIC = """
[limits]
probe_seconds = 25
"""


def run_grade(sub: Path, out: Path, *args: str, timeout: float = 300) -> tuple[int, dict, str]:
    """Run the `grade` CLI on ``sub``; return (exit status, results JSON, terminal output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "grader", str(sub), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    return proc.returncode, results, proc.stdout + proc.stderr


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
