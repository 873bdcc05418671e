"""The grader's recipe per model design: epochs to the target, best accuracy, seconds per epoch, and
the harness's epoch against a bare PyTorch loop; the rebuilt graph's training against the module's.

    python benchmarks/recipe.py --data DIR reference=reference_solution wide=benchmarks/models/highres_ref
    python benchmarks/recipe.py --logs reference=benchmarks/results/reference_training_log.json
    python benchmarks/recipe.py --side-by-side module=LOG.json graph=LOG.json
    python benchmarks/recipe.py --graph-vs-module reference_solution --data DIR [--limit 10000 --rounds 2]

A design is NAME=FOLDER (a submission: model.py with Net, transforms.py with train_transforms),
trained by `grade FOLDER --train --data DIR --epochs N` (the probe, then the grader's own training
of the exported graph and its trusted evaluation, as a student is graded), or NAME=LOG.json, a
training_log.json such a run wrote. DIR is an image-folder tree DIR/{train,test}/<class>/*. --ratio
adds harness / bare for one epoch on --ratio-limit train images (target <= 1.10). --side-by-side
prints two logs' per-epoch test accuracy and seconds in one table. --graph-vs-module times one
epoch of the recipe on the module itself and on its rebuilt train graph (same initial weights,
alternating, --rounds each), and checks that their losses agree (target: graph / module <= 1.05).
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def grade_train(folder: Path, data: Path, epochs: int, out: Path, rubric: Path | None) -> dict:
    command = [
        sys.executable,
        "-m",
        "grader",
        str(folder),
        "--train",
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--out",
        str(out),
        "-q",
    ]
    if rubric is not None:
        command += ["--rubric", str(rubric)]
    subprocess.run(command, check=False, cwd=out.parent)
    log = out / "training_log.json"
    if not log.is_file():
        raise SystemExit(f"{folder}: the training job wrote no log (see {out})")
    return json.loads(log.read_text())


def summary(name: str, log: dict) -> dict:
    epochs = log.get("epochs", [])
    target = float(log.get("target", 85.0))
    first = next((e["epoch"] for e in epochs if e["test_acc"] >= target), None)
    return {
        "design": name,
        "epochs": len(epochs),
        "to_target": first,
        "best": max((e["test_acc"] for e in epochs), default=None),
        "s_per_epoch": statistics.median(e["seconds"] for e in epochs) if epochs else None,
        "target": target,
    }


def _load(folder: Path, module: str):
    spec = importlib.util.spec_from_file_location(f"design_{module}", folder / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    spec.loader.exec_module(mod)
    return mod


def harness_over_bare(folder: Path, data: Path, limit: int) -> float:
    """One epoch on ``limit`` train images: the grader's training of the rebuilt graph ÷ a bare loop in this process."""
    import torch
    import torch.nn.functional as F
    from training import subset

    from grader.training import recipe
    from grader.training.data import load_split

    tmp = Path(tempfile.mkdtemp())
    small = subset(data, tmp / "data", limit)
    out = tmp / "out"
    out.mkdir()
    harness = grade_train(folder, small, 1, out / "g", None)["epochs"][0]["seconds"]
    train = load_split("train", small)
    hyp = dict(recipe.HYP, workers=1)
    torch.manual_seed(0)
    model = _load(folder, "model").Net().to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(
        recipe.AugmentedImages(train.images, train.labels, _load(folder, "transforms").train_transforms),
        batch_size=hyp["batch_size"],
        shuffle=True,
        drop_last=True,
        num_workers=1,
        persistent_workers=True,
    )
    opt = recipe.make_optimizer(model, hyp)
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return harness / (time.perf_counter() - start)


def graph_over_module(folder: Path, data: Path, limit: int, rounds: int) -> list[dict]:
    """One epoch on ``limit`` train images, the module and its rebuilt train graph in turn (same start)."""
    import copy

    import torch

    from grader.child.graph_export import export_model
    from grader.graph import load_graph
    from grader.training import recipe
    from grader.training.data import load_split
    from grader.training.initialise import initialise

    torch.manual_seed(0)
    module = _load(folder, "model").Net()
    pipeline = _load(folder, "transforms").train_transforms
    graph, tensors = export_model(module, (3, 32, 32), folder, "train")
    train_graph = load_graph(json.loads(json.dumps(graph)), tensors)
    start = copy.deepcopy(train_graph.model)
    initialise(train_graph, 0, start)
    weights = start.tensors_by_target()
    split = load_split("train", data)
    pick = np.random.default_rng(0).permutation(len(split))[:limit]
    images, labels = split.images[pick], split.labels[pick]
    hyp = dict(recipe.HYP, epochs=1, workers=1)
    rows = []
    for round_ in range(rounds):
        for kind in ("module", "graph"):
            if kind == "module":
                model = copy.deepcopy(module)
                model.load_state_dict({k: weights[k] for k in model.state_dict()})
            else:
                model = copy.deepcopy(start)
            began = time.perf_counter()
            (stats,) = list(recipe.train(model, images, labels, pipeline, hyp, torch.device("cpu")))
            rows.append(
                {"round": round_ + 1, "kind": kind, "seconds": time.perf_counter() - began, "loss": stats.train_loss}
            )
    return rows


def side_by_side(logs: list[tuple[str, dict]]) -> None:
    """Per-epoch test accuracy and seconds of each log, in one table."""
    epochs = max(len(log.get("epochs", [])) for _, log in logs)
    print("| epoch | " + " | ".join(f"{name} test acc | {name} s" for name, _ in logs) + " |")
    print("|---|" + "---|---|" * len(logs))
    for i in range(epochs):
        cells = []
        for _, log in logs:
            rows = log.get("epochs", [])
            cells += [f"{rows[i]['test_acc']:.2f}%", f"{rows[i]['seconds']:.0f}"] if i < len(rows) else ["-", "-"]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("designs", nargs="*", metavar="NAME=FOLDER", help="submissions to train")
    parser.add_argument("--logs", nargs="*", default=[], metavar="NAME=LOG.json", help="training logs to summarise")
    parser.add_argument("--data", type=Path, help="image-folder tree (needed to train)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rubric", type=Path)
    parser.add_argument("--ratio", action="store_true", help="also harness / bare for one epoch")
    parser.add_argument("--ratio-limit", type=int, default=5000)
    parser.add_argument("--side-by-side", nargs="*", default=[], metavar="NAME=LOG.json", help="per-epoch logs")
    parser.add_argument("--graph-vs-module", type=Path, metavar="FOLDER", help="time module vs rebuilt graph")
    parser.add_argument("--limit", type=int, default=10_000, help="train images for --graph-vs-module")
    parser.add_argument("--rounds", type=int, default=2, help="epochs of each for --graph-vs-module")
    args = parser.parse_args()
    if args.side_by_side:
        side_by_side(
            [(n, json.loads(Path(p).read_text())) for n, _, p in (i.partition("=") for i in args.side_by_side)]
        )
        return
    if args.graph_vs_module is not None:
        if args.data is None:
            parser.error("--graph-vs-module needs --data")
        rows = graph_over_module(args.graph_vs_module.resolve(), args.data, args.limit, args.rounds)
        print(f"machine: {os.cpu_count()} cores, CPU; one epoch of the recipe on {args.limit} train images")
        print("| round | trained | seconds | train loss |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['round']} | {r['kind']} | {r['seconds']:.1f} | {r['loss']:.6f} |")
        module = statistics.median(r["seconds"] for r in rows if r["kind"] == "module")
        graph = statistics.median(r["seconds"] for r in rows if r["kind"] == "graph")
        same = len({round(r["loss"], 6) for r in rows}) == 1
        print(f"\ngraph / module: {graph / module:.3f} (target <= 1.05); the same losses: {same}")
        return
    if args.designs and args.data is None:
        parser.error("--data is needed to train a design")
    rows = []
    for item in args.logs:
        name, _, path = item.partition("=")
        rows.append(summary(name, json.loads(Path(path).read_text())) | {"ratio": None})
    for item in args.designs:
        name, _, folder = item.partition("=")
        folder = Path(folder).resolve()
        with tempfile.TemporaryDirectory() as tmp:
            row = summary(name, grade_train(folder, args.data, args.epochs, Path(tmp) / "out", args.rubric))
        row["ratio"] = harness_over_bare(folder, args.data, args.ratio_limit) if args.ratio else None
        rows.append(row)
    print(f"machine: {os.cpu_count()} cores; the grader's recipe and trusted evaluation")
    print("| design | epochs run | epochs to target | best test acc | s / epoch (median) | harness / bare |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        to = r["to_target"] if r["to_target"] is not None else f"not reached ({r['target']:g}%)"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"| {r['design']} | {r['epochs']} | {to} | {r['best']:.2f}% | {r['s_per_epoch']:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
