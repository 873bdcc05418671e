"""Trusted side's evaluation: the rebuilt eval graph with a set of weights, on the TEST split.

The test images get the deterministic part of the student's own train pipeline (Normalize, ToFloat,
ToTensorV2: what the model was trained to expect), rebuilt from its plain-data config, then the
grader's tensor convention (``recipe.to_model_input``). Every accuracy figure comes from here.

One image's prediction must not depend on the others: the images go in a seeded shuffled order (an
image-folder split read in file order is sorted by class), and a sample is predicted again in other
batches, of another size; outputs that change are ``BatchDependent``, and no accuracy is given.
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
    predictions: np.ndarray  # per image, in the split's own order


class BatchDependent(Exception):
    """An image's output changed when the other images of its batch did (the message has the figures)."""


RECHECK_TOLERANCE = 1e-3  # relative to the largest output: float noise of another batch size stays far below


def evaluation_order(n: int, seed: int) -> torch.Tensor:
    """The seeded shuffle the images are evaluated in (not the split's order, which is by class)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 7919))


def _outputs(
    model: RebuiltModel, x: torch.Tensor, order: torch.Tensor, device: torch.device, batch: int
) -> torch.Tensor:
    """The model's outputs for ``x[order]``, batch by batch, in that order (on the CPU, float32)."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(order), batch):
            outs.append(model(x[order[i : i + batch]].to(device)).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


def evaluate(
    model: RebuiltModel,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 500,
    probabilities: bool = False,
    seed: int = 0,
    fixed_batch: bool = False,
) -> EvalResult:
    """Loss and accuracy of ``model`` on (x, y), evaluated in a seeded shuffled order.

    Then a sample of the images is predicted again in another order and in batches of half the size
    (``fixed_batch``: a graph that only runs at its own batch size keeps it): an output that changes
    beyond float noise raises :class:`BatchDependent`.
    """
    model.eval()
    if isinstance(model, RebuiltModel):
        model.move_to(device)  # what the graph creates follows too (a GPU run)
    else:
        model.to(device)
    n = len(y)
    if n == 0:
        return EvalResult(0.0, 0.0, np.zeros(0, dtype=np.int64))
    order = evaluation_order(n, seed)
    shuffled = _outputs(model, x, order, device, batch_size)
    out = torch.empty_like(shuffled)
    out[order] = shuffled  # back in the split's order
    _recheck(model, x, out, device, batch_size, seed, fixed_batch)
    logp = torch.log(out.clamp_min(1e-12)) if probabilities else F.log_softmax(out, 1)
    loss = float(F.nll_loss(logp, y, reduction="sum")) / n
    predictions = out.argmax(1)
    acc = 100.0 * int((predictions == y).sum()) / n
    return EvalResult(loss, acc, predictions.numpy())


def _recheck(
    model: RebuiltModel, x: torch.Tensor, out: torch.Tensor, device: torch.device, batch: int, seed: int, fixed: bool
) -> None:
    """Predict a sample again with other neighbours (another order, batches of another size)."""
    n = len(out)
    other = evaluation_order(n, seed + 1)[: min(n, 2 * batch)]
    size = batch if fixed else max(1, min(batch, len(other)) // 2)
    if fixed and len(other) % batch:
        other = other[: max(batch, len(other) - len(other) % batch)]
    again = _outputs(model, x, other, device, size)
    first = out[other]
    scale = max(1.0, float(first.abs().max()))
    gap = (again - first).abs().max(dim=1).values
    worst = int(gap.argmax())
    if float(gap[worst]) > RECHECK_TOLERANCE * scale:
        raise BatchDependent(
            f"test image {int(other[worst])} gets other outputs when the rest of its batch changes (by "
            f"{float(gap[worst]):.3g}, outputs up to {scale:.3g}): in eval mode the model mixes the images of a "
            "batch, so one image's prediction is not its own"
        )


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


def check_checkpoint(graph: LoadedGraph, weights: dict[str, torch.Tensor]) -> None:
    """A submitted checkpoint loads exactly: the graph's parameters and buffers, each with its shape and
    dtype, and nothing else. GraphError('weights_mismatch') names what differs."""
    held = {i.target: i for i in graph.inputs if i.kind in ("parameter", "buffer")}
    problems = []
    missing = sorted(set(held) - set(weights))
    extra = sorted(set(weights) - set(held))
    if missing:
        problems.append(
            f"missing {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        )
    if extra:
        problems.append(
            f"tensors the model does not hold: {', '.join(extra[:3])}"
            + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        )
    for target in sorted(set(held) & set(weights)):
        inp, value = held[target], weights[target]
        if tuple(value.shape) != inp.shape:
            problems.append(f"{target} has shape {list(value.shape)}, the model's is {list(inp.shape)}")
        elif str(value.dtype).removeprefix("torch.") != inp.dtype:
            problems.append(f"{target} is {str(value.dtype).removeprefix('torch.')}, the model's is {inp.dtype}")
    if problems:
        raise GraphError(
            "weights_mismatch", "the checkpoint does not match the graded model: " + "; ".join(problems[:4])
        )
