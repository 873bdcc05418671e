"""One epoch of the grader's training harness vs a bare PyTorch loop (same model, transforms, batch).

    python benchmarks/training.py --data DIR [--limit 10000] [--device cpu|cuda]

DIR is an image-folder tree DIR/{train,test}/<class>/* (e.g. from shared/data/unpack_cifar10.py).
Prints: the harness's epoch (the grader training the rebuilt graph, from `grade --train --epochs 1`) and the
whole `grade --train` wall time, a bare loop's epoch, their ratio (target <= 1.10), data-loader
images/s alone and model images/s alone (forward + backward on ready tensors).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "reference_solution"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from grader.training import recipe  # noqa: E402
from grader.training.data import load_split  # noqa: E402


def subset(src: Path, dest: Path, limit: int) -> Path:
    """An image-folder tree with the first ``limit`` train images (spread over classes) and all test ones."""
    classes = sorted(p.name for p in (src / "train").iterdir())
    per_class = max(1, limit // len(classes))
    for name in classes:
        (dest / "train" / name).mkdir(parents=True)
        for f in sorted((src / "train" / name).iterdir())[:per_class]:
            os.symlink(f, dest / "train" / name / f.name)
    os.symlink(src / "test", dest / "test")
    return dest


def bare_epoch(images: np.ndarray, labels: np.ndarray, hyp: dict, device: torch.device) -> tuple[float, float, float]:
    from model import Net
    from transforms import train_transforms

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        recipe.AugmentedImages(images, labels, train_transforms),
        batch_size=hyp["batch_size"],
        shuffle=True,
        drop_last=True,
        num_workers=hyp["workers"],
        pin_memory=device.type == "cuda",
        persistent_workers=hyp["workers"] > 0,
    )
    model = Net().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    # data loader alone
    start = time.perf_counter()
    seen = sum(len(y) for _, y in loader)
    loader_ips = seen / (time.perf_counter() - start)
    # model alone on ready tensors
    x = torch.randn(hyp["batch_size"], 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (hyp["batch_size"],), device=device)
    steps = max(3, len(labels) // hyp["batch_size"] // 4)
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    model_ips = steps * hyp["batch_size"] / (time.perf_counter() - start)
    # the bare epoch
    model.train()
    start = time.perf_counter()
    for xb, yb in loader:
        xb = xb.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        yb = yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(xb).float(), yb, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, loader_ips, model_ips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=10000, help="train images (0: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp())
    data = subset(args.data, tmp / "data", args.limit) if args.limit else args.data
    train = load_split("train", data)
    hyp = dict(recipe.HYP, workers=min(8, max(1, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 1)
    torch.set_num_threads(os.cpu_count() or 1)
    bare_s, loader_ips, model_ips = bare_epoch(train.images, train.labels, hyp, device)
    out = tmp / "out"
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grader",
            str(REPO / "reference_solution"),
            "--train",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--out",
            str(out),
            "-q",
            "--device",
            args.device,
        ],
        check=False,
        cwd=tmp,
    )
    grade_wall = time.perf_counter() - start
    log = json.loads((out / "training_log.json").read_text())
    harness_s = log["epochs"][0]["seconds"]
    print(
        f"machine: {os.cpu_count()} cores, device {device}; {len(train)} train images, batch {hyp['batch_size']}, workers {hyp['workers']}"
    )
    print("| measure | value |\n|---|---|")
    print(f"| harness epoch (the rebuilt graph, trusted) | {harness_s:.1f} s |")
    print(f"| bare PyTorch epoch | {bare_s:.1f} s |")
    print(f"| ratio harness / bare | {harness_s / bare_s:.2f} (target <= 1.10) |")
    print(f"| data loader alone | {loader_ips:,.0f} images/s |")
    print(f"| model alone (fwd+bwd) | {model_ips:,.0f} images/s |")
    print(f"| `grade --train --epochs 1` wall (probe, data, epoch, evaluation) | {grade_wall:.1f} s |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
