"""Trusted side's evaluation: the rebuilt graph with handed-over weights, on the TEST split.

The test images get the deterministic part of the student's own train pipeline (Normalize, ToFloat,
ToTensorV2: what the model was trained to expect), rebuilt from its plain-data config, then the
grader's tensor convention (``recipe.to_model_input``). Every accuracy figure comes from here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from grader.augment_inspect import leaves
from grader.graph import GraphError, LoadedGraph, RebuiltModel
from grader.training.recipe import to_model_input

EVAL_TRANSFORMS = {"Normalize", "ToFloat", "FromFloat", "ToTensorV2"}


def eval_preprocess(config: dict | None) -> Callable[[np.ndarray], torch.Tensor]:
    """A function image -> model input: the student's deterministic transforms, or plain /255."""
    pipeline = None
    if isinstance(config, dict):
        import albumentations as A

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                full = A.from_dict(config)
            kept = [t for t in leaves(full) if type(t).__name__ in EVAL_TRANSFORMS]
            pipeline = A.Compose(kept) if kept else None
        except Exception:
            pipeline = None

    def apply(image: np.ndarray) -> torch.Tensor:
        out = pipeline(image=image)["image"] if pipeline is not None else image
        return to_model_input(out)

    return apply


def preprocess(images: np.ndarray, config: dict | None) -> torch.Tensor:
    fn = eval_preprocess(config)
    return torch.stack([fn(img) for img in images])


def outputs_probabilities(graph: LoadedGraph) -> bool:
    """True when the model ends in softmax (probabilities): the loss then takes their log."""
    calls = [n for n in graph.nodes if n.op == "call_function"]
    tail = [n.aten for n in calls[-3:]]
    return any(op in ("softmax", "_softmax") for op in tail) and not any(
        op in ("log_softmax", "_log_softmax") for op in tail
    )


@dataclass
class EvalResult:
    loss: float
    acc: float  # percent
    predictions: np.ndarray


def evaluate(
    model: RebuiltModel,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 500,
    probabilities: bool = False,
) -> EvalResult:
    model.eval().to(device)
    total_loss, correct = 0.0, 0
    preds = []
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            xb = x[i : i + batch_size].to(device)
            yb = y[i : i + batch_size].to(device)
            out = model(xb).float()
            logp = torch.log(out.clamp_min(1e-12)) if probabilities else F.log_softmax(out, 1)
            total_loss += float(F.nll_loss(logp, yb, reduction="sum"))
            p = out.argmax(1)
            correct += int((p == yb).sum())
            preds.append(p.cpu())
    n = max(1, len(y))
    return EvalResult(total_loss / n, 100.0 * correct / n, torch.cat(preds).numpy() if preds else np.zeros(0))


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A submitted checkpoint: safetensors, or a state_dict loaded with ``weights_only=True``."""
    state: object  # whatever the file holds, until checked below
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise GraphError(
            "bad_checkpoint",
            f"{path.name} cannot be read as safetensors or a weights-only state_dict: {type(exc).__name__}: {str(exc)[:200]}",
        ) from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GraphError("bad_checkpoint", f"{path.name} is not a state_dict of tensors")
    # Checkpoints saved from nn.DataParallel or torch.compile carry a prefix.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def model_with_weights(graph: LoadedGraph, weights: dict[str, torch.Tensor]) -> RebuiltModel:
    """A copy of the rebuilt model carrying ``weights`` (trainable state only is required)."""
    import copy

    model = copy.deepcopy(graph.model)
    needed = {i.target for i in graph.inputs if i.kind in ("parameter", "buffer")}
    model.load_weights(weights, strict_targets=needed)
    return model
