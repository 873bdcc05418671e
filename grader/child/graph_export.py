"""Child side: turn the student's model into inert data (graph JSON + safetensors weights).

Untrusted side (runs inside the sandbox next to the student's code). The output is plain JSON and safetensors so the
trusted side never unpickles anything; the trusted side re-validates every field it reads.

Graph format (``GRAPH_SCHEMA``)::

    {"schema": ..., "mode": "eval"|"train", "batch_dynamic": bool, "example_batch": int, "input_shape": [3, 32, 32],
     "inputs": [{"name", "kind": parameter|buffer|constant|user_input, "target", "shape", "dtype"}],
     "nodes": [{"name", "op": placeholder|call_function|output, "target": "aten::conv2d.default",
                "args": [...], "kwargs": {...}, "shape": [...]|null, "module": "c1.0.0",
                "module_type": "Conv2d", "source": "model.py:34", "code": "x = self.conv(x)"}]}

Arguments: a node reference is ``{"node": name}``; lists/tuples are lists; scalars stay scalars;
dtypes, devices, layouts and memory formats are ``{"dtype": "float32"}`` and so on.
"""

from __future__ import annotations

import operator
import re
from pathlib import Path
from typing import Any

import torch

GRAPH_SCHEMA = "s6-grader/graph/1"

_KIND = {"PARAMETER": "parameter", "BUFFER": "buffer", "CONSTANT_TENSOR": "constant", "USER_INPUT": "user_input"}
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)\n\s*(?P<code>[^\n]*)')


class ExportError(Exception):
    """The model could not be turned into an aten graph (the message says why)."""


def export_model(
    model: torch.nn.Module, input_shape: tuple[int, int, int], root: Path, mode: str = "eval"
) -> tuple[dict, dict]:
    """Export ``model`` in ``mode`` ('eval', or 'train': batch norm on batch statistics and updating its
    running statistics, dropout active) with a dynamic batch; return (graph JSON, tensors to save).

    The model is left in eval mode. Exporting does not run the model on real tensors, so its weights
    and BatchNorm statistics are the same afterwards."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    model.train(mode == "train")
    try:
        return _export(model, input_shape, root, mode)
    finally:
        model.eval()


MODES = ("eval", "train")


def _export(model: torch.nn.Module, input_shape: tuple[int, int, int], root: Path, mode: str) -> tuple[dict, dict]:
    from torch.export import Dim, export

    example = torch.randn(2, *input_shape)
    batch_dynamic = True
    try:
        ep = export(model, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=4096)},), strict=False)
    except Exception:
        # Models that hard-code the batch size (x.view(2, -1)...) still export with a static batch.
        batch_dynamic = False
        try:
            ep = export(model, (example,), strict=False)
        except Exception as exc:
            raise ExportError(f"torch.export failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    return _serialize(ep, batch_dynamic, input_shape, root, mode)


def _serialize(
    ep: Any, batch_dynamic: bool, input_shape: tuple[int, int, int], root: Path, mode: str
) -> tuple[dict, dict]:
    sig = ep.graph_signature
    for out_spec in sig.output_specs:  # a graph that hands back more than its output (a mutation) is not one model
        if out_spec.kind.name != "USER_OUTPUT":
            raise ExportError(f"unsupported graph output kind {out_spec.kind.name} ({out_spec.target})")
    state = dict(ep.state_dict)
    state.update(dict(ep.constants))
    inputs, tensors = [], {}
    for spec in sig.input_specs:
        kind = _KIND.get(spec.kind.name)
        if kind is None:
            raise ExportError(f"unsupported graph input kind {spec.kind.name} ({spec.arg})")
        entry = {"name": spec.arg.name, "kind": kind, "target": spec.target}
        if kind != "user_input":
            value = state.get(spec.target)
            if not isinstance(value, torch.Tensor):
                raise ExportError(f"graph input {spec.target} is not a tensor ({type(value).__name__})")
            entry.update(shape=list(value.shape), dtype=str(value.dtype).removeprefix("torch."))
            # safetensors stores each tensor on its own: detach, make contiguous, and unshare storage.
            tensors[spec.target] = value.detach().to("cpu").contiguous().clone()
        inputs.append(entry)
    nodes = [_node(n, root) for n in ep.graph.nodes]
    graph = {
        "schema": GRAPH_SCHEMA,
        "mode": mode,
        "batch_dynamic": batch_dynamic,
        "example_batch": 2,
        "input_shape": list(input_shape),
        "inputs": inputs,
        "nodes": nodes,
    }
    return graph, tensors


def _node(n: torch.fx.Node, root: Path) -> dict:
    out: dict[str, Any] = {"name": n.name, "op": n.op}
    if n.op == "call_function":
        out["target"] = target_name(n.target)
    elif n.op not in ("placeholder", "output"):
        raise ExportError(f"unsupported graph node {n.op} {n.target}")
    out["args"] = _encode(n.args)
    out["kwargs"] = _encode(dict(n.kwargs))
    val = n.meta.get("val")
    out["shape"] = [_dim(d) for d in val.shape] if isinstance(val, torch.Tensor) else None
    stack = n.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        out["module"] = path
        out["module_type"] = (cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))).rsplit(".", 1)[-1]
    out.update(_source(n.meta.get("stack_trace") or "", root))
    return out


def target_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}::{target._schema.name.split('::')[-1]}.{target._overloadname}"
    if getattr(target, "__module__", None) in ("_operator", "operator"):
        return f"operator.{target.__name__}"
    if target in (operator.getitem,):
        return "operator.getitem"
    name = getattr(target, "__qualname__", None) or repr(target)
    return f"{getattr(target, '__module__', '?')}.{name}"


def _source(trace: str, root: Path) -> dict:
    """The innermost frame of the trace that lies in the submission: 'model.py:34' and its code."""
    best = None
    root_s = str(root)
    for m in _FRAME.finditer(trace):
        if m.group("file").startswith(root_s):
            best = m
    if best is None:
        return {}
    rel = best.group("file")[len(root_s) :].lstrip("/")
    return {"source": f"{rel}:{best.group('line')}", "code": best.group("code").strip()[:200]}


def _dim(d: Any) -> int | str:
    try:
        return int(d)
    except Exception:
        return str(d)


def _encode(v: Any) -> Any:
    if isinstance(v, torch.fx.Node):
        return {"node": v.name}
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _encode(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        if isinstance(v, float) and v != v:
            return {"float": "nan"}
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return {"float": "inf" if v > 0 else "-inf"}
        return v
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": v.type}
    if isinstance(v, torch.memory_format):
        return {"memory_format": str(v).removeprefix("torch.")}
    if isinstance(v, torch.layout):
        return {"layout": str(v).removeprefix("torch.")}
    raise ExportError(f"graph argument of type {type(v).__name__} cannot be serialized")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
