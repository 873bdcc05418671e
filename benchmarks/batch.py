"""Batch throughput: N generated submissions graded ``--no-train`` with ``--jobs 1`` and ``--jobs 2``,
each with no grading started ahead (``--ahead 0``) and with one per slot (``--ahead`` = jobs).

    python benchmarks/batch.py            # N=6
    python benchmarks/batch.py -n 20 --jobs 1 2 4 --ahead 0 1 jobs --json benchmarks/results/batch.json

Each submission is the reference solution with a distinct comment (so that every content hash differs
and nothing is skipped); each run writes into a fresh output folder. Prints submissions per minute per
``--jobs``, the ratio to the first, the machine (cores, CPU model) and its load average at the start,
since a busy machine (a training job in the background) lowers every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host import cpu_jiffies

REPO = Path(__file__).resolve().parents[1]
TARGET_PER_MIN = 30.0  # issue 26's goal on a 2-core machine


def make_class(root: Path, n: int) -> Path:
    subs = root / "subs"
    subs.mkdir(parents=True)
    for i in range(n):
        dest = subs / f"student{i:03d}"
        shutil.copytree(REPO / "reference_solution", dest, ignore=shutil.ignore_patterns("__pycache__"))
        model = dest / "model.py"
        model.write_text(model.read_text() + f"\n# submission {i}\n")
    return subs


def run(subs: Path, out: Path, jobs: int, ahead: str, timeout: float) -> dict:
    command = [sys.executable, "-m", "grader", "batch", str(subs), "--out", str(out), "--jobs", str(jobs)]
    command += ["--no-train", "--quiet", "--timeout", str(timeout)]
    command += ["--ahead", str(jobs) if ahead == "jobs" else ahead]
    busy_before = cpu_jiffies()[0]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    busy = (cpu_jiffies()[0] - busy_before) / os.sysconf("SC_CLK_TCK")
    graded = len(list(out.glob("*/done.json")))
    if graded == 0:
        raise SystemExit(f"the batch graded nothing (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return {
        "jobs": jobs,
        "ahead": jobs if ahead == "jobs" else int(ahead),
        "wall_s": round(wall, 2),
        "graded": graded,
        "per_min": round(60 * graded / wall, 2),
        "cpu_s_each": round(busy / graded, 2) if busy else None,
    }


def machine() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cores": os.cpu_count(), "cpu": model, "load_1m": round(load[0], 2), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=6, help="submissions (default 6)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to compare (default 1 2)")
    parser.add_argument(
        "--ahead",
        nargs="+",
        default=["0", "jobs"],
        help="--ahead values to compare per --jobs: numbers, or 'jobs' for as many as --jobs (default: 0 jobs)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="per-submission limit (default 600 s)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the generated class and outputs")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="s6-batch-bench-"))
    try:
        host = machine()
        subs = make_class(root, args.n)
        rows = [
            run(subs, root / f"out-j{jobs}-a{ahead}", jobs, ahead, args.timeout)
            for jobs in args.jobs
            for ahead in args.ahead
        ]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    base = rows[0]["per_min"]
    print(f"machine: {host['cores']} cores, {host['cpu']}, load average {host['load_1m']} at start")
    print(f"{'jobs':>4}  {'ahead':>5}  {'submissions':>11}  {'wall s':>7}  {'per min':>7}  {'ratio':>5}  cpu s each")
    for row in rows:
        row["ratio"] = round(row["per_min"] / base, 2) if base else None
        print(
            f"{row['jobs']:>4}  {row['ahead']:>5}  {row['graded']:>11}  {row['wall_s']:>7.1f}  {row['per_min']:>7.1f}  {row['ratio']:>5}  {row['cpu_s_each']}"
        )
    best = max(r["per_min"] for r in rows)
    print(f"target >= {TARGET_PER_MIN:g}/min: {'met' if best >= TARGET_PER_MIN else 'not met'} (best {best:.1f}/min)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": host, "n": args.n, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
