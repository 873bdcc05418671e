"""The training child: runs INSIDE the sandbox. ``grader.child.main`` with ``train SPEC``.

Untrusted side (runs inside the sandbox next to the student's code).

It builds the student's model and train transforms (as the probe did), trains with the grader's
recipe on the TRAIN split only (an .npy file the trusted side wrote; the test split is never here),
and after every epoch writes ``epoch_NNN.safetensors`` (the state_dict), ``state_NNN.safetensors``
(what a resumed run starts from) and ``epoch_NNN.json`` (train loss/accuracy, lr, seconds), each
atomically, the JSON last. ``progress.json`` is refreshed during the epoch. The trusted parent
evaluates each epoch's weights itself and stops this process once the target is reached. With
``resume`` in the spec (a state the parent kept from an interrupted run) it continues after that
state's epoch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from grader.boundary import write_output
from grader.failures import ErrorKind, Failure


def _write_atomic(path: Path, data: bytes) -> None:
    write_output(path.parent, path.name, data)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"]).resolve()
    out = Path(spec["out"])
    status: dict[str, Any] = {"phase": "starting"}

    def fail(err: dict) -> int:
        status.update(phase="failed", error=err)
        _write_atomic(out / "status.json", json.dumps(status).encode())
        return 0

    from grader.child.probe import import_file, resolve_transforms, setup_runtime, typed_error

    setup_runtime(spec, root)
    import numpy as np
    import torch
    from safetensors.torch import save

    from grader.training import recipe

    modules: dict[str, Any] = {}
    seed = int(spec["hyp"].get("seed", 0))
    try:
        recipe.seed_everything(seed)  # whatever the module draws at import is the same every run
        module = import_file(root / spec["model"]["file"], root)
        modules[spec["model"]["file"]] = module
        cls = getattr(module, spec["model"]["class"])
        recipe.seed_everything(seed)  # the initial weights do not depend on what the import drew
        model = cls(*spec["model"].get("args", []), **spec["model"].get("kwargs", {}))
    except BaseException as exc:
        return fail(typed_error(exc, root, "building the model"))
    pipeline = None
    if spec.get("transforms"):
        try:
            pipeline, _ = resolve_transforms(spec, root, modules)
        except BaseException as exc:
            return fail(typed_error(exc, root, "building the transforms"))
    images = np.load(spec["train_images"], mmap_mode="r")
    labels = np.load(spec["train_labels"])
    device = torch.device(spec.get("device", "cpu"))
    last = time.monotonic()

    def progress(epoch: int, seen: int, loss: float, acc: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 1.0:
            last = now
            data = {"epoch": epoch, "seen": seen, "total": len(labels), "loss": loss, "acc": acc}
            _write_atomic(out / "progress.json", json.dumps(data).encode())

    resume = None
    if spec.get("resume"):
        try:
            resume = recipe.TrainState.from_bytes(Path(spec["resume"]["file"]).read_bytes())
            if resume.epoch != int(spec["resume"]["epoch"]):
                raise ValueError(f"it is of epoch {resume.epoch}, not {spec['resume']['epoch']}")
        except Exception as exc:
            return fail(Failure(ErrorKind.RESUME_FAILED, f"the saved training state: {exc}").to_dict())
    status["phase"] = "training"
    _write_atomic(out / "status.json", json.dumps(status).encode())
    try:
        for stats in recipe.train(
            model,
            images,
            labels,
            pipeline,
            spec["hyp"],
            device,
            spec.get("outputs_are_probabilities", False),
            progress,
            resume,
        ):
            name = f"{stats.epoch:03d}"
            _write_atomic(out / f"epoch_{name}.safetensors", save(stats.weights))
            if stats.state is not None:
                _write_atomic(out / f"state_{name}.safetensors", stats.state.to_bytes())
            _write_atomic(out / f"epoch_{name}.json", json.dumps(stats.log_entry()).encode())
    except BaseException as exc:
        err = typed_error(exc, root, "training")
        if isinstance(exc, FloatingPointError):
            err["type"] = ErrorKind.DIVERGED.value
        return fail(err)
    status["phase"] = "done"
    _write_atomic(out / "status.json", json.dumps(status).encode())
    return 0
