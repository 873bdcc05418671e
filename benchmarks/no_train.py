"""Wall time of `grade reference_solution --no-train` next to `python -c "import torch"`.

    python benchmarks/no_train.py [--runs 5]

Prints a table (median and min of N runs each) and their ratio; the target is <= 3x, since a
no-train grade imports torch twice (the grader and its sandboxed probe), partly in parallel.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


def machine() -> str:
    cpu = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp()) / "out"
    grade = [sys.executable, "-m", "grader", str(REPO / "reference_solution"), "--no-train", "--out", str(out), "-q"]
    torch_import = [sys.executable, "-c", "import torch"]
    timed(torch_import)  # warm the page cache for both
    timed(grade)
    rows = []
    for name, cmd in (("python -c 'import torch'", torch_import), ("grade reference_solution --no-train", grade)):
        times = [timed(cmd) for _ in range(args.runs)]
        rows.append((name, statistics.median(times), min(times)))
    print(f"machine: {machine()}; {args.runs} runs each")
    print(f"| {'command':<38} | median s | min s |")
    print(f"|{'-' * 40}|----------|-------|")
    for name, med, low in rows:
        print(f"| {name:<38} | {med:8.2f} | {low:5.2f} |")
    ratio = rows[1][1] / rows[0][1]
    print(f"ratio (median): {ratio:.2f}x  (target <= 3x: {'met' if ratio <= 3 else 'not met'})")


if __name__ == "__main__":
    main()
