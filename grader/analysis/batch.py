"""Trusted facts: does the eval-mode graph mix the images of a batch?

In eval mode an image's prediction must be its own. A graph that averages over the batch (an
eval-only ``x + x.mean(0)``), normalises with the batch's statistics, or moves the batch dimension
where a convolution or matrix product sums over it, lets every image see the others: on a test split
read in class order, whole batches of one class then "agree". The trusted side measured every node's
shape at batch 2 and at batch 3 (``Node.shape`` / ``Node.shape_alt``): the dimensions that differ carry
the batch. A node is refused when

- its output carries no batch dimension although an input does (a reduction over the batch, a slice
  that keeps a fixed number of images),
- the batch is anywhere but the first dimension of a tensor (transposed into a contraction),
- it works along the batch dimension (``dim=0`` of a reduction, roll, flip, cat, index_select; a slice
  of the batch that is not the whole of it),
- it is BatchNorm on batch statistics (``training=True`` in the eval graph).

The evaluation checks the same thing by its effect too (``training/evaluate.py``: a sample predicted
again in other batches). A graph whose batch size is fixed cannot be checked here (its shapes do not
change); the effect check still runs.
"""

from __future__ import annotations

from grader.analysis.layers import arg
from grader.graph import LoadedGraph, Node

BN_OPS = {"batch_norm", "native_batch_norm", "_native_batch_norm_legit"}
# Ops whose "dim" argument (position 1 unless said) names the dimension they work along.
ALONG_DIM = {
    "mean": 1,
    "sum": 1,
    "amax": 1,
    "amin": 1,
    "max": 1,
    "min": 1,
    "logsumexp": 1,
    "var": 1,
    "std": 1,
    "softmax": 1,
    "_softmax": 1,
    "log_softmax": 1,
    "_log_softmax": 1,
    "roll": 2,
    "flip": 1,
    "cat": 1,
    "concat": 1,
    "stack": 1,
    "index_select": 1,
    "split": 2,
    "split_with_sizes": 2,
    "chunk": 2,
    "narrow": 1,
    "select": 1,
    "slice": 1,
    "cumsum": 1,
}
FULL_SLICE_END = 2**62  # what export writes for "to the end"


def batch_dims(node: Node) -> set[int] | None:
    """The dimensions of ``node``'s output that change with the batch size (None: not measured)."""
    if node.shape is None or node.shape_alt is None or len(node.shape) != len(node.shape_alt):
        return None
    return {i for i, (a, b) in enumerate(zip(node.shape, node.shape_alt, strict=True)) if a != b}


def batch_mixing(graph: LoadedGraph) -> list[str]:
    """Why the eval graph mixes the images of a batch: one line per offending node (empty: it does not)."""
    if graph.mode != "eval":
        raise ValueError("batch mixing is a question about the eval-mode graph")
    by_name = graph.by_name()
    user_input = next((i.name for i in graph.inputs if i.kind == "user_input"), None)
    problems: list[str] = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        reason = _reason(node, by_name, user_input) if graph.batch_dynamic else _bn_reason(node)
        if reason:
            problems.append(f"{reason} at {node.where()}")
    return problems


def _bn_reason(node: Node) -> str | None:
    if node.aten in BN_OPS and arg(node, 5, "training", False) is True:
        return "BatchNorm normalises with the batch's own statistics in eval mode"
    return None


def _reason(node: Node, by_name: dict[str, Node], user_input: str | None) -> str | None:
    bn = _bn_reason(node)
    if bn:
        return bn
    out = batch_dims(node)
    if out is None:
        return None  # an int (sym_size) or an untracked value
    ins: list[set[int]] = []
    for name in node.inputs:
        source = by_name.get(name)
        if source is None:
            continue
        dims = {0} if name == user_input else batch_dims(source)
        if dims is not None:
            ins.append(dims)
    carried = any(ins)
    op = node.aten or node.target
    if carried and not out:
        return f"{op} takes the batch away (its output is the same for any number of images)"
    if out and out != {0}:
        return f"{op} moves the batch out of the first dimension (dimension {sorted(out)})"
    if carried and node.aten in ALONG_DIM:
        dims = _dims(node, ALONG_DIM[node.aten])
        first = ins[0] if ins else set()
        if dims is None and node.aten in ("mean", "sum", "amax", "amin", "max", "min", "logsumexp", "var", "std"):
            return f"{op} reduces over every dimension, the batch among them"
        if dims is not None and first & dims:
            if node.aten == "slice" and _whole(node):
                return None
            return f"{op} works along the batch dimension"
    return None


def _dims(node: Node, index: int) -> set[int] | None:
    """The dim argument as a set of non-negative ints (None: no dim given)."""
    raw = arg(node, index, "dim", None)
    if raw is None or raw == []:
        return None
    values = raw if isinstance(raw, list) else [raw]
    rank = len(node.shape or ()) if node.aten not in ("mean", "sum", "amax", "amin", "var", "std", "logsumexp") else 0
    out = set()
    for v in values:
        if not isinstance(v, int):
            return None
        out.add(v if v >= 0 else v + max(rank, 1))
    return out


def _whole(node: Node) -> bool:
    """slice(x, dim, start, end, step) that keeps everything: what export writes for ``x[:, ...]``."""
    start, end, step = arg(node, 2, "start", None), arg(node, 3, "end", None), arg(node, 4, "step", 1)
    return start in (None, 0) and (end is None or (isinstance(end, int) and end >= FULL_SLICE_END)) and step == 1
