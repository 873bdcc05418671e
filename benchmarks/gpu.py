"""The training job on a GPU: wall time to the accuracy verdict, throughput, GPU use, and a batch of
four trainings sharing one GPU. Written to run once on a lent GPU machine; tested on the CPU.

    python benchmarks/gpu.py --data DIR                    # on the GPU machine
    python benchmarks/gpu.py --data DIR --device cpu --limit 2000 --epochs 1 --batch 2   # a dry run

DIR is an image-folder tree DIR/{train,test}/<class>/*. Prints a Markdown table: for the reference,
`grade reference_solution --train` wall time (start to verdict), the epoch seconds, images/s of
training, epochs to the target, the best accuracy, the GPU's mean and peak utilisation and memory
(sampled with nvidia-smi every 0.5 s, when present); then `grade batch --per-gpu 4` over copies of
the reference: the wall time for all of them and per submission.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))


class GpuSampler(threading.Thread):
    """nvidia-smi's utilisation and memory every ``every`` seconds, while the measured command runs."""

    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        self.every, self.samples, self.stopped = every, [], threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def run(self) -> None:
        while self.available and not self.stopped.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if out:
                util, mem = (float(v) for v in out.splitlines()[0].split(","))
                self.samples.append((util, mem))
            self.stopped.wait(self.every)

    def summary(self) -> str:
        if not self.samples:
            return "no nvidia-smi" if not self.available else "no samples"
        util = [u for u, _ in self.samples]
        mem = max(m for _, m in self.samples)
        return f"mean {statistics.mean(util):.0f}%, peak {max(util):.0f}%, memory peak {mem:,.0f} MiB"


def timed(command: list[str], cwd: Path) -> tuple[float, str, int]:
    sampler = GpuSampler()
    sampler.start()
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    sampler.stopped.set()
    sampler.join()
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    return wall, sampler.summary(), proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=int, default=0, help="train images (0: all)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4, help="submissions in the --per-gpu batch")
    parser.add_argument("--per-gpu", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s6-gpu-bench-"))
    data = args.data
    if args.limit:
        from training import subset

        data = subset(args.data, tmp / "data", args.limit)
    out = tmp / "single"
    grade = [sys.executable, "-m", "grader"]
    common = ["--train", "--data", str(data), "--epochs", str(args.epochs), "--device", args.device]
    wall, gpu, _ = timed([*grade, str(REPO / "reference_solution"), *common, "--out", str(out), "-q"], tmp)
    log = json.loads((out / "training_log.json").read_text())
    epochs = log["epochs"]
    images = len(epochs) * (args.limit or 50000)
    train_s = sum(e["seconds"] for e in epochs)
    figures = {
        "device": log.get("device"),
        "wall_to_verdict_s": round(wall, 1),
        "epoch_s_median": round(statistics.median(e["seconds"] for e in epochs), 2),
        "train_images_per_s": round(images / train_s),
        "epochs_run": len(epochs),
        "epochs_to_target": log.get("epochs_to_target"),
        "best_test_acc": log.get("best_test_acc"),
        "gpu": gpu,
    }
    subs = tmp / "class"
    for i in range(args.batch):
        shutil.copytree(REPO / "reference_solution", subs / f"student{i}")
        (subs / f"student{i}" / "model.py").write_text(
            (subs / f"student{i}" / "model.py").read_text() + f"\n# copy {i}\n"
        )
    gpus = ["--gpus", "0", "--per-gpu", str(args.per_gpu)] if args.device.startswith("cuda") else ["--gpus", "none"]
    batch_cmd = [
        *grade,
        "batch",
        str(subs),
        "--out",
        str(tmp / "grades"),
        *common[:-2],
        *gpus,
        "--jobs",
        str(args.per_gpu),
    ]
    batch_wall, batch_gpu, _ = timed(batch_cmd, tmp)
    figures |= {
        "batch": args.batch,
        "batch_wall_s": round(batch_wall, 1),
        "batch_per_submission_s": round(batch_wall / args.batch, 1),
        "batch_gpu": batch_gpu,
    }
    print(
        f"machine: {os.cpu_count()} cores, device {figures['device']}; {args.limit or 50000} train images, {args.epochs} planned epochs"
    )
    print("| measure | value |\n|---|---|")
    print(
        f"| `grade reference_solution --train` wall, start to verdict | {figures['wall_to_verdict_s']} s (goal <= 60 s) |"
    )
    print(f"| epoch (median) | {figures['epoch_s_median']} s |")
    print(f"| training images/s | {figures['train_images_per_s']:,} |")
    print(f"| epochs run / to target | {figures['epochs_run']} / {figures['epochs_to_target'] or 'not reached'} |")
    print(f"| best test accuracy | {figures['best_test_acc']}% |")
    print(f"| GPU (single) | {figures['gpu']} |")
    print(
        f"| `grade batch --per-gpu {args.per_gpu}`, {args.batch} submissions | {figures['batch_wall_s']} s ({figures['batch_per_submission_s']} s each) |"
    )
    print(f"| GPU (batch) | {figures['batch_gpu']} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
