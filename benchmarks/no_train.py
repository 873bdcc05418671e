"""Wall time of `grade reference_solution --no-train` next to `python -c "import torch"`.

    python benchmarks/no_train.py [--runs 5]

Prints a table (median and min of N runs each), one row per sandbox layer this machine offers
(bubblewrap with Landlock inside, Landlock alone, plain), and each one's ratio to importing torch; the
goal is <= 1.5x for each. The runs are interleaved, so background load falls on every row alike.

Then what every child pays for the seccomp filter and the capability drop (grader/child/enter.py's
steps, timed inside a fresh child from the first import of their modules to the measured status):
the budget is <= 0.1 s. Last, the capture run's share of a grading (the student's entry point run to its
first training step, grader/child/capture.py), from the probe's own timings, on the reference solution
and on a Colab notebook submission (the test fixture `colab_notebook`), and where a grading's time goes:
the probe child starts with the grading and loads its libraries while the grader reads the submission
(its ``preload``), then builds and exports the model; the grader then analyses the graph, runs the
checks and writes the report.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host import machine

REPO = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


# What grader/child/enter.py adds to every child's start, besides Landlock: timed from inside.
CONFINE = """
import time
start = time.perf_counter()
from grader.child import privileges, seccomp
privileges.drop_capabilities()
seccomp.install()
left = privileges.problem(privileges.status())
print(time.perf_counter() - start, left is None)
"""


def confinement_seconds(runs: int) -> list[float]:
    """Seconds the filter and the capability drop took in each of ``runs`` fresh children."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = []
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-s", "-c", CONFINE], capture_output=True, text=True, env=env, check=True)
        seconds, clean = r.stdout.split()
        assert clean == "True", r.stdout
        out.append(float(seconds))
    return out


def capture_share(runs: int) -> list[tuple[str, float, dict]]:
    """(submission, wall s, the probe's timings) per run of `grade --no-train`, the reference and a notebook."""
    import json

    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.submissions import build

    folder = Path(tempfile.mkdtemp())
    subs = {"reference_solution": REPO / "reference_solution", "colab notebook": build("colab_notebook", folder / "nb")}
    rows = []
    for _ in range(runs):
        for name, sub in subs.items():
            out = folder / "out"
            wall = timed([sys.executable, "-m", "grader", str(sub), "--no-train", "--out", str(out), "-q"])
            probe = json.loads((out / "probe.json").read_text())
            grading = json.loads((out / "results.json").read_text())
            rows.append((name, wall, (probe.get("timings") or {}) | {"grader": grading.get("timings") or {}}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from grader.sandbox.layers import LAYERS, available

    out = Path(tempfile.mkdtemp()) / "out"
    grade = [sys.executable, "-m", "grader", str(REPO / "reference_solution"), "--no-train", "--out", str(out), "-q"]
    commands = {"python -c 'import torch'": [sys.executable, "-c", "import torch"]}
    for layer in LAYERS:
        if available(layer):
            commands[f"grade --no-train --isolation {layer}"] = [*grade, "--isolation", layer]
    for cmd in commands.values():  # warm the page cache
        timed(cmd)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(timed(cmd))
    base = statistics.median(times["python -c 'import torch'"])
    print(f"machine: {machine()}; {args.runs} runs each, interleaved")
    print(f"| {'command':<40} | median s | min s | ÷ import torch |")
    print(f"|{'-' * 42}|----------|-------|----------------|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name:<40} | {med:8.2f} | {min(values):5.2f} | {med / base:13.2f}x |")
    worst = max(statistics.median(v) for n, v in times.items() if n.startswith("grade")) / base
    print(f"worst ratio (median): {worst:.2f}x  (goal <= 1.5x for each layer: {'met' if worst <= 1.5 else 'not met'})")
    confine = confinement_seconds(max(args.runs, 10))
    slowest = max(confine)
    print()
    print(f"| {'in every child, before its command':<40} | median ms | max ms |")
    print(f"|{'-' * 42}|-----------|--------|")
    print(
        f"| {'seccomp filter + capability drop':<40} | {statistics.median(confine) * 1e3:9.1f} | {slowest * 1e3:6.1f} |"
    )
    print(f"budget <= 100 ms: {'met' if slowest <= 0.1 else 'not met'} ({len(confine)} children)")
    rows = capture_share(min(args.runs, 3))
    print()
    print("| submission | grade --no-train s (median) | probe s | capture s | export s | capture ÷ grading |")
    print("|---|---|---|---|---|---|")
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        wall = statistics.median(r[1] for r in mine)
        probe = statistics.median(float(r[2].get("total", 0)) for r in mine)
        capture = statistics.median(float(r[2].get("capture", 0)) for r in mine)
        export = statistics.median(float(r[2].get("export", 0)) for r in mine)
        print(f"| {name} | {wall:.2f} | {probe:.2f} | {capture:.2f} | {export:.2f} | {capture / wall:.0%} |")
    print()
    print("Where a grading's time goes (medians, seconds; the child's rows run beside the grader's first two):")
    print(
        "| submission | submission read (grader) | child: libraries (preload) | child: waited | child: build + capture | child: export | grader: analysis | grader: checks | grade() total | command |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]

        def med(key: str, *, grader: bool = False, mine: list = mine) -> float:
            return statistics.median(float((r[2]["grader"] if grader else r[2]).get(key, 0) or 0) for r in mine)

        work = sum(med(k) for k in ("transforms", "capture", "model_captured", "model", "libraries"))
        print(
            f"| {name} | {med('handoff_s', grader=True):.2f} | {med('preload'):.2f} | {med('waited'):.2f} | {work:.2f} "
            f"| {med('export'):.2f} | {med('analyze_s', grader=True):.2f} | {med('checks_s', grader=True):.2f} "
            f"| {med('total_s', grader=True):.2f} | {statistics.median(r[1] for r in mine):.2f} |"
        )


if __name__ == "__main__":
    main()
