"""CPU seconds of one grading, by kind, as the test suite runs them: what its 126 gradings cost.

    python benchmarks/grading_cpu.py            # 3 runs of each kind
    python benchmarks/grading_cpu.py --runs 5

Grades the tests' ``base`` fixture as a fresh ``python -m grader`` command, one at a time: without
training, with the tests' training (the tiny generated image folder, ``test_training``'s rubric: batch
32, a 50% target, at most 6 epochs), and evaluating the weights that training wrote. The CPU is the
whole machine's busy time over each command (``/proc/stat``): the rusage of the grader would miss its
sandboxed child, which bubblewrap's PID namespace reaps. Run it on an otherwise idle machine. The
suite forks its gradings from a server that has imported torch and the grader, so each of its
gradings costs about one ``import torch`` less than the command measured here.
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

from host import cpu_jiffies, machine

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "tests" / "fixtures" / "submissions" / "base"
TEST_TRAINING_RUBRIC = """
[rules.accuracy]
target = 50.0

[training]
epochs = 6
batch_size = 32
lr = 0.8
"""


def graded(args: list[str], out: Path) -> tuple[float, float]:
    """(CPU seconds of the whole machine, wall seconds) of one ``grade`` command."""
    tick = os.sysconf("SC_CLK_TCK")
    before = cpu_jiffies()[0]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", *args, "--out", str(out), "-q"], capture_output=True, cwd=REPO)
    return (cpu_jiffies()[0] - before) / tick, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="gradings of each kind (default 3)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.data import make_image_folder

    with tempfile.TemporaryDirectory(prefix="s6-grading-cpu-") as scratch:
        root = Path(scratch)
        data = make_image_folder(root / "data")
        rubric = root / "rubric.toml"
        rubric.write_text(TEST_TRAINING_RUBRIC)
        trained = root / "trained"
        common = ["--data", str(data), "--rubric", str(rubric)]
        subprocess.run(
            [sys.executable, "-m", "grader", str(BASE), "--train", *common, "--out", str(trained), "-q"],
            capture_output=True,
            cwd=REPO,
        )
        weights = trained / "weights.safetensors"
        if not weights.is_file():
            raise SystemExit("the training grading wrote no weights: run `grade` on tests/fixtures/submissions/base")
        kinds = {
            "without training (--no-train)": [str(BASE), "--no-train"],
            "with the tests' training (--train)": [str(BASE), "--train", *common],
            "evaluating weights (--weights)": [str(BASE), "--weights", str(weights), *common],
        }
        rows = []
        for name, kind_args in kinds.items():
            runs = [graded(kind_args, root / f"out-{len(rows)}-{i}") for i in range(args.runs)]
            rows.append((name, statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)))
    print(f"machine: {machine()}")
    print(f"one grading of tests/fixtures/submissions/base, a fresh command, median of {args.runs}")
    print("| kind | CPU s (whole machine) | wall s |\n|---|---|---|")
    for name, cpu, wall in rows:
        print(f"| {name} | {cpu:.2f} | {wall:.2f} |")


if __name__ == "__main__":
    main()
