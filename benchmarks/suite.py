"""Where the test suite's time goes: per test file, its tests' seconds and the CLI gradings it runs.

    python benchmarks/suite.py                 # the README's test command, profiled
    python benchmarks/suite.py -- tests/batch  # any pytest arguments after --

Runs ``python -m pytest -q --durations=0`` (the suite's own ``addopts`` apply: two xdist workers)
with ``S6_GRADING_LOG`` set, so that every grading a test runs through ``tests/grading.py`` writes a
line (the submission, the arguments, the seconds), and prints Markdown tables: the whole run (wall
time against the 8-minute goal, and how many cores the machine kept busy meanwhile), then each test file's
tests, their seconds (setup + call + teardown, summed over workers) and its gradings.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host import cpu_jiffies

REPO = Path(__file__).resolve().parent.parent
GOAL_S = 8 * 60  # issue 26: the suite in 8 minutes on the 2-core development machine
DURATION = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+?)::")


def run_suite(pytest_args: list[str], grading_log: Path) -> tuple[float, float, str]:
    """The suite's wall seconds, the cores the machine kept busy meanwhile (whatever ran), its output."""
    busy_before, total_before = cpu_jiffies()
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--durations=0",
            "--durations-min=0",
            "-p",
            "no:cacheprovider",
            *pytest_args,
        ],
        cwd=REPO,
        env={**os.environ, "S6_GRADING_LOG": str(grading_log)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    busy_after, total_after = cpu_jiffies()
    cores = (busy_after - busy_before) / max(1, total_after - total_before) * (os.cpu_count() or 1)
    return wall, cores, proc.stdout + proc.stderr


def per_file(output: str, grading_log: Path) -> dict[str, dict[str, float]]:
    files: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: {"tests": 0, "seconds": 0.0, "gradings": 0, "grading_s": 0.0}
    )
    tests: dict[str, set[str]] = collections.defaultdict(set)
    for line in output.splitlines():
        if m := DURATION.match(line):
            seconds, _phase, path = m.groups()
            files[path]["seconds"] += float(seconds)
            tests[path].add(line.split("::", 1)[1].strip())
    for path, names in tests.items():
        files[path]["tests"] = len(names)
    if grading_log.is_file():
        for line in grading_log.read_text().splitlines():
            row = json.loads(line)
            path = row["test"].split("::", 1)[0] or "(outside a test)"
            files[path]["gradings"] += 1
            files[path]["grading_s"] += row["seconds"]
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pytest_args", nargs="*", help="pytest arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s6-suite-") as scratch:
        log = Path(scratch) / "gradings.jsonl"
        wall, cores, output = run_suite(args.pytest_args, log)
        files = per_file(output, log)
    summary = next((line for line in reversed(output.splitlines()) if " in " in line and "passed" in line), "?")
    print(f"pytest: {summary.strip('= ')}\n")
    print("| measure | value |\n|---|---|")
    print(f"| wall | {wall / 60:.1f} min ({wall / GOAL_S:.2f}x the {GOAL_S // 60}-minute goal) |")
    print(f"| cores busy on average (the whole machine: {os.cpu_count()} cores) | {cores:.2f} |")
    gradings = sum(f["gradings"] for f in files.values())
    seconds = sum(f["grading_s"] for f in files.values())
    print(f"| CLI gradings (tests/grading.py) | {gradings:.0f}, {seconds:.0f} s (several may run at once) |")
    print()
    print("| test file | tests | seconds | share | CLI gradings | seconds in them (overlapping) |")
    print("|---|---|---|---|---|---|")
    total = sum(f["seconds"] for f in files.values()) or 1.0
    for path, f in sorted(files.items(), key=lambda item: -item[1]["seconds"]):
        share = f["seconds"] / total
        print(
            f"| {path} | {f['tests']:.0f} | {f['seconds']:.0f} | {share:.0%} | {f['gradings']:.0f} | {f['grading_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
