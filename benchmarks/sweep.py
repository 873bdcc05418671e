"""Many trainings under the grader's recipe in one go, for a lent GPU: in order, resumable, one table.

    python benchmarks/sweep.py benchmarks/sweeps/ten_epochs.toml --data DIR --out runs --jobs 4
    python benchmarks/sweep.py benchmarks/sweeps/ten_epochs.toml --data DIR --out /tmp/dry \
        --limit 500 --epochs 1 --only default wd_1.5e-3          # a dry run on the CPU

A sweep file lists `[[run]]` tables, most wanted first: `name`, `design` (a submission folder,
relative to the repository), `epochs` (default 10) and `training` (what the run's rubric sets in
`[training]`: weight_decay, label_smoothing, seed, ...). Each run is the grader's own training,
`grade DESIGN --train --data DIR --epochs N --rubric OUT/NAME/rubric.toml`, with the evidence-based
retrain off so that one schedule is measured. Its training_log.json is kept as OUT/NAME.json; a run
whose log is there already is not run again, so a sweep cut short (a lent machine taken back) goes
on where it stopped; `--deadline S` starts no run after S seconds. DIR is an image-folder tree DIR/{train,test}/<class>/*. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_sweep(path: Path) -> list[dict]:
    runs = tomllib.loads(path.read_text()).get("run", [])
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: run names repeat")
    return [{"epochs": 10, "training": {}} | r for r in runs]


def rubric_text(training: dict) -> str:
    lines = ["[training]", "evidence_max_epochs = 0  # one schedule per run"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in training.items()]
    return "\n".join(lines) + "\n"


def run_one(run: dict, data: Path, out: Path, epochs: int | None, deadline: float = math.inf) -> dict:
    """Train one run unless its log is there or the deadline has passed; returns the log."""
    log_file = out / f"{run['name']}.json"
    if log_file.is_file():
        return json.loads(log_file.read_text())
    if time.monotonic() > deadline:
        return {"error": "not started: the sweep's deadline had passed", "epochs": []}
    work = out / run["name"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "rubric.toml").write_text(rubric_text(run["training"]))
    command = [sys.executable, "-m", "grader", str(REPO / run["design"]), "--train", "--data", str(data)]
    command += ["--epochs", str(epochs or run["epochs"]), "--rubric", str(work / "rubric.toml")]
    command += ["--out", str(work / "grade"), "-q"]
    start = time.perf_counter()
    with open(work / "grade.log", "w") as printed:
        subprocess.run(command, check=False, cwd=work, stdout=printed, stderr=subprocess.STDOUT)
    produced = work / "grade" / "training_log.json"
    if not produced.is_file():
        return {"error": f"no training log (see {work / 'grade.log'})", "epochs": []}
    log = json.loads(produced.read_text()) | {"sweep_wall_s": round(time.perf_counter() - start, 1)}
    tmp = log_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(log, indent=1))
    os.replace(tmp, log_file)  # only a whole log counts as done
    return log


def row(run: dict, log: dict) -> str:
    epochs = log.get("epochs", [])
    if not epochs:
        return f"| {run['name']} | {run['design']} | {_change(run)} | - | {log.get('error', 'no epochs')} | | | |"
    target = float(log.get("target", 85.0))
    first = next((e["epoch"] for e in epochs if e["test_acc"] >= target), None)
    seconds = statistics.median(e["seconds"] for e in epochs)
    return (
        f"| {run['name']} | {run['design']} | {_change(run)} | {len(epochs)} | {epochs[-1]['test_acc']:.2f}% "
        f"| {max(e['test_acc'] for e in epochs):.2f}% | {first if first else f'not reached ({target:g}%)'} "
        f"| {seconds:.1f} |"
    )


def _change(run: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in run["training"].items()) or "the default recipe"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep file of [[run]] tables")
    parser.add_argument("--data", type=Path, required=True, help="image-folder tree DIR/{train,test}/<class>/*")
    parser.add_argument("--out", type=Path, required=True, help="where each run's log is kept (resumable)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (several share one GPU)")
    parser.add_argument("--epochs", type=int, help="override every run's epochs (dry runs)")
    parser.add_argument("--limit", type=int, help="train on this many images only (dry runs)")
    parser.add_argument("--only", nargs="*", help="run these names only")
    parser.add_argument("--deadline", type=float, help="start no run after this many seconds (runs under way finish)")
    args = parser.parse_args()
    runs = [r for r in load_sweep(args.sweep) if not args.only or r["name"] in args.only]
    data = args.data.resolve()
    if args.limit:
        from training import subset

        data = subset(data, Path(tempfile.mkdtemp()) / "data", args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    deadline = time.monotonic() + args.deadline if args.deadline else math.inf
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        logs = list(pool.map(lambda r: run_one(r, data, out, args.epochs, deadline), runs))
    print(f"machine: {os.cpu_count()} cores; {logs[0].get('device', '?') if logs else '?'}; the grader's recipe")
    print("| run | design | change from the default recipe | epochs | last epoch | best | to target | s / epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for run, log in zip(runs, logs, strict=True):
        print(row(run, log))


if __name__ == "__main__":
    main()
