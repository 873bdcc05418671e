"""Receptive field: the analytic recurrence through the graph, and an empirical gradient check.

Trusted side.

Recurrence per layer (per axis): ``k_eff = d*(k-1)+1; rf_out = rf_in + (k_eff-1)*j_in; j_out = j_in*s``.
Through the graph it is followed as intervals (:mod:`grader.analysis.windows`): every unit of every tensor
knows the input pixels it sees, so slices (start, step), pads, reshapes that split or merge H or W,
windows written by hand and branches (the union of what they see) go through it exactly, and an op it
cannot follow makes the RF unknown (``RFResult.rf`` None, ``unknown`` says where) rather than a silent
number. The RF reported is the one of the centre unit of the last feature map before global pooling.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from grader.analysis.layers import SpatialLayer, arg
from grader.analysis.windows import RESHAPES, SHIFTS, Geo, Lost, Many, State, propagate, rf_of
from grader.graph import LoadedGraph, Node, RebuiltModel


@dataclass
class RFRow:
    """One row of the RF table, as students draw it (the seed README's columns)."""

    layer: str
    what: str
    block: int
    in_size: int
    rf_in: int
    kernel: int  # k_eff along the larger axis
    padding: int
    stride: int
    jump_in: int
    jump_out: int
    rf_out: int
    out_size: int
    source: str = ""
    notes: str = ""


def rf_recurrence(rows: list[tuple[int, int, int]], rf: int = 1, jump: int = 1) -> list[tuple[int, int]]:
    """(kernel, dilation, stride) per layer -> (rf_out, jump_out) per layer. The textbook recurrence."""
    out = []
    for kernel, dilation, stride in rows:
        k_eff = dilation * (kernel - 1) + 1
        rf = rf + (k_eff - 1) * jump
        jump = jump * stride
        out.append((rf, jump))
    return out


@dataclass
class RFResult:
    rf: int | None  # analytic RF of the centre unit of the last map before global pooling; None: unknown
    jump: int
    at: str  # node name of that feature map
    at_layer: str  # its producing layer, for messages
    size: tuple[int, int]  # that map's H x W
    rows: list[RFRow]
    unknown: str = ""  # why the recurrence could not follow the graph (rf is None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


_FINAL = ("global_avg", "global_max")


def _final_pool(layer: SpatialLayer) -> bool:
    """The final pooling (global or not): the RF is the one of the map it pools."""
    return layer.kind in _FINAL or (layer.kind in ("avgpool", "maxpool") and layer.out_hw == (1, 1))


def analytic_rf(graph: LoadedGraph, layers: list[SpatialLayer]) -> RFResult:
    """Follow what every unit sees through every node; return the RF before global pooling."""
    states = propagate(graph)
    pooled_from: list[str] = []  # the maps global pools read, in order
    for layer in layers:
        if _final_pool(layer):
            src = _map_before(graph, _input_of(layer))
            if src and states.get(src) is not None:
                pooled_from.append(src)
    if pooled_from:
        at = pooled_from[-1]
    else:
        four_d = [
            n
            for n in graph.nodes
            if isinstance(states.get(n.name), (Geo, Lost)) and n.shape is not None and len(n.shape) == 4
        ]
        if not four_d:
            raise ValueError("the graph has no 4-D feature map")
        at = four_d[-1].name
    rows_by_node: dict[str, RFRow] = {}
    transition_sizes: set[int] = set()
    for layer in layers:
        if _final_pool(layer) or layer.kind == "upsample":
            continue
        src = _input_of(layer)
        if states.get(src) is None:
            continue
        rf_in, jump_in = _rf(states.get(src))
        rf_out, jump_out = _rf(states.get(layer.node.name))
        if is_transition(layer):
            transition_sizes.add(layer.out_hw[0])
        kh, kw = layer.k_eff
        rows_by_node[layer.node.name] = RFRow(
            layer=layer.node.module or layer.node.name,
            what=layer.describe(),
            block=0,
            in_size=layer.in_hw[0],
            rf_in=rf_in,
            kernel=max(kh, kw),
            padding=max(layer.padding),
            stride=max(layer.stride),
            jump_in=jump_in,
            jump_out=jump_out,
            rf_out=rf_out,
            out_size=layer.out_hw[0],
            source=layer.node.source,
            notes="; ".join(layer.notes),
        )
    # Blocks are the resolution stages: a transition row opens the block it leads into, and
    # parallel reducers to the same size (a residual shortcut) belong to the same block.
    for row in rows_by_node.values():
        row.block = 1 + sum(1 for s in transition_sizes if s >= row.out_size)
    ancestors = _ancestors(graph, at)
    rows = [row for name, row in rows_by_node.items() if name in ancestors or name == at]
    node = graph.by_name()[at]
    size = (node.shape[2], node.shape[3]) if node.shape and len(node.shape) == 4 else (0, 0)
    producer = rows[-1].layer if rows else at
    state = states.get(at)
    if isinstance(state, Geo) and len(state.dims) >= 3:
        rf, jump = rf_of(state)
        return RFResult(rf, jump, at, producer, size, rows)
    reason = state.reason if isinstance(state, Lost) else f"the map {at} is not one the recurrence follows"
    return RFResult(None, 1, at, producer, size, rows, unknown=reason)


def _input_of(layer: SpatialLayer) -> str:
    if layer.origin:
        return layer.origin
    src = arg(layer.node, 0, "input")
    return src["node"] if isinstance(src, dict) and isinstance(src.get("node"), str) else ""


def _map_before(graph: LoadedGraph, name: str) -> str:
    """The 4-D map a pooling reads, through the reshapes (and a first mean) between them."""
    by_name = graph.by_name()
    for _ in range(16):
        node = by_name.get(name)
        if node is None or (node.shape is not None and len(node.shape) == 4) or not node.inputs:
            return name
        if node.aten not in RESHAPES and node.aten not in SHIFTS and node.aten not in ("mean", "amax", "max"):
            return name
        name = node.inputs[0]
    return name


def _rf(state: State) -> tuple[int, int]:
    if isinstance(state, Many):
        state = state.items[0]
    if isinstance(state, Geo) and len(state.dims) >= 3:
        return rf_of(state)
    return (0, 0)


def is_transition(layer: SpatialLayer) -> bool:
    """A layer that starts a new block: it strides, or it is a dilated conv that shrinks the map."""
    return layer.stride != (1, 1) or (layer.shrinks and layer.is_dilated)


def _ancestors(graph: LoadedGraph, name: str) -> set[str]:
    by_name = graph.by_name()
    seen, stack = set(), [name]
    while stack:
        n = by_name.get(stack.pop())
        if n is None:
            continue
        for i in n.inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return seen


@dataclass
class MeasuredRF:
    measured: int | None
    input_size: int
    clipped: bool  # the RF window reached the image border: the figure is a lower bound
    note: str


def measure_rf(graph: LoadedGraph, at: str, analytic: int | None, jump: int, square: bool = False) -> MeasuredRF:
    """Empirical RF: gradient of the centre unit of feature map ``at`` w.r.t. the input.

    The rebuilt graph is run with positive weights (conv/linear 1/fan-in, BN as identity) on a
    positive input so that no ReLU hides a path; the nonzero extent of the input gradient is the RF.
    Every selection (max pooling, ``maximum``, ``where``, ``amax``, ``max.dim``) is replaced by the mean
    of what it selects from, so the gradient reaches the whole window (a max sends it to one element),
    and normalisations that compute statistics of the map are the identity (the recurrence ignores
    their statistics, as it does BatchNorm's).
    The input is just tall enough for the analytic window (when the graph allows other sizes) and,
    unless ``square`` (some layer is not symmetric, or the recurrence finds another extent along W than
    along H), only as wide as the native input: the vertical extent is the RF, at a fraction of the cost
    of a square input.
    """
    square = square or not _symmetric_at(graph, at)
    model = copy.deepcopy(graph.model).float()
    _positive_weights(graph, model)
    _see_through_selections(model)
    for tensor in model.parameters():
        tensor.requires_grad_(False)  # only the input's gradient is needed
    _truncate_at(model, at)
    native = graph.input_shape[1]
    step = max(8, jump)
    if analytic is None:  # the recurrence could not follow the graph: a generous input
        wanted = min(512, 4 * native)
    else:
        wanted = min(512, max(native, step * math.ceil((analytic + 2 * jump + 2) / step)))
    note = ""
    for height in dict.fromkeys((wanted, native)):
        width = height if square else graph.input_shape[2]
        try:
            grad = _centre_gradient(graph, model, height, width)
        except Exception as exc:  # a graph with sizes baked in only runs at its own size
            note = f"{type(exc).__name__}"
            continue
        rows = torch.nonzero(grad.sum(1) > 0)
        cols = torch.nonzero(grad.sum(0) > 0)
        if len(rows) == 0:
            return MeasuredRF(None, height, False, "no input pixel reaches the centre unit")
        extent = int(rows.max() - rows.min()) + 1
        if square:
            extent = max(extent, int(cols.max() - cols.min()) + 1)
        clipped = bool(rows.min() == 0 or rows.max() == height - 1)
        if square:
            clipped = clipped or bool(cols.min() == 0 or cols.max() == width - 1)
        note = f"measured on a {height}x{width} input" + (
            " (window reaches the border: lower bound)" if clipped else ""
        )
        return MeasuredRF(extent, height, clipped, note)
    return MeasuredRF(None, native, False, f"the graph could not be run for the measurement ({note})")


def _symmetric_at(graph: LoadedGraph, at: str) -> bool:
    """Whether the recurrence gives the centre unit of ``at`` the same extent along H and W."""
    state = propagate(graph).get(at)
    if not isinstance(state, Geo) or len(state.dims) < 3:
        return False
    w = state.window({d: state.dims[d].size // 2 for d in range(2, len(state.dims))})
    return int(w[1] - w[0]) == int(w[3] - w[2])


# The aten max-pool signatures (the fx graph calls them with its recorded arguments); dilation is dropped.
def _max_pool_as_avg(
    x: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int] = (),
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    return torch.ops.aten.avg_pool2d.default(x, kernel_size, stride, padding, ceil_mode)


def _max_pool_with_indices_as_avg(
    x: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int] = (),
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
) -> tuple[torch.Tensor, None]:
    return _max_pool_as_avg(x, kernel_size, stride, padding, dilation, ceil_mode), None


def _mean_of(*values: torch.Tensor | None) -> torch.Tensor:
    tensors = [v for v in values if v is not None]
    return sum(tensors[1:], tensors[0]) / len(tensors)


def _where_as_mean(*args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
    condition, a, b = (*args, *kwargs.values())
    return (a + b) / 2 + torch.zeros_like(condition, dtype=torch.float32)


def _clamp_as_mean(x: torch.Tensor, min: torch.Tensor | None = None, max: torch.Tensor | None = None) -> torch.Tensor:
    return _mean_of(x, min, max)


def _all_dims(x: torch.Tensor, dim: Any) -> list[int]:
    if dim is None or (isinstance(dim, (list, tuple)) and not dim):
        return list(range(x.ndim))
    return [dim] if isinstance(dim, int) else list(dim)


def _amax_as_mean(x: torch.Tensor, dim: Any = (), keepdim: bool = False) -> torch.Tensor:
    return x.mean(_all_dims(x, dim), keepdim=keepdim)


def _max_dim_as_mean(x: torch.Tensor, dim: int, keepdim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim, keepdim=keepdim), x.argmax(dim, keepdim=keepdim)


def _whole_mean(x: torch.Tensor, *_: Any) -> torch.Tensor:
    return x.mean()


def _var_dim_as_mean(x: torch.Tensor, dim: Any = None, unbiased: bool = True, keepdim: bool = False) -> torch.Tensor:
    return x.mean(_all_dims(x, dim), keepdim=keepdim)


def _var_correction_as_mean(
    x: torch.Tensor, dim: Any = None, *, correction: Any = None, keepdim: bool = False
) -> torch.Tensor:
    return x.mean(_all_dims(x, dim), keepdim=keepdim)


def _adaptive_max_as_avg(x: torch.Tensor, output_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.ops.aten.adaptive_avg_pool2d.default(x, output_size)
    return out, torch.zeros_like(out, dtype=torch.long)


def _max_pool1d_as_avg(
    x: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int] = (),
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    return torch.ops.aten.avg_pool1d.default(x, kernel_size, stride, padding, ceil_mode)


def _identity(x: torch.Tensor, *_: Any, **__: Any) -> torch.Tensor:
    return x


def _identity_with_stats(x: torch.Tensor, *_: Any, **__: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return x, x.new_zeros(()), x.new_zeros(())


def _see_through_selections(model: RebuiltModel) -> None:
    """A max passes the gradient to one element of its window (``maximum`` splits it on ties, ``max.dim``
    and ``where`` do not); the mean of the same elements sees the same window, so the measurement uses it.
    Max pooling becomes average pooling with the same geometry."""
    aten = torch.ops.aten
    swaps: dict[Any, Any] = {
        aten.max_pool2d.default: _max_pool_as_avg,
        aten.max_pool2d_with_indices.default: _max_pool_with_indices_as_avg,
        aten.max_pool1d.default: _max_pool1d_as_avg,
        aten.adaptive_max_pool2d.default: _adaptive_max_as_avg,
        aten.maximum.default: _mean_of,
        aten.minimum.default: _mean_of,
        aten.max.other: _mean_of,
        aten.min.other: _mean_of,
        aten.where.self: _where_as_mean,
        aten.clamp.Tensor: _clamp_as_mean,
        aten.clamp_min.Tensor: _mean_of,
        aten.clamp_max.Tensor: _mean_of,
        aten.amax.default: _amax_as_mean,
        aten.amin.default: _amax_as_mean,
        aten.max.dim: _max_dim_as_mean,
        aten.min.dim: _max_dim_as_mean,
        aten.max.default: _whole_mean,
        aten.min.default: _whole_mean,
        aten.var.dim: _var_dim_as_mean,
        aten.std.dim: _var_dim_as_mean,
        aten.var.correction: _var_correction_as_mean,
        aten.std.correction: _var_correction_as_mean,
        aten.var.default: _whole_mean,
        aten.std.default: _whole_mean,
        aten.group_norm.default: _identity,
        aten.layer_norm.default: _identity,
        aten.instance_norm.default: _identity,
        aten.native_group_norm.default: _identity_with_stats,
        aten.native_layer_norm.default: _identity_with_stats,
    }
    for node in model.gm.graph.nodes:
        if node.op == "call_function" and node.target in swaps:
            node.target = swaps[node.target]
    model.gm.recompile()


def _positive_weights(graph: LoadedGraph, model: RebuiltModel) -> None:
    attr = {i.name: "t_" + i.target.replace(".", "__") for i in graph.inputs if i.kind != "user_input"}
    roles: dict[str, str] = {}
    for node in graph.nodes:
        if node.aten in ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"):
            for index, role in ((1, "one"), (2, "zero"), (3, "zero"), (4, "one")):
                ref = arg(node, index, "")
                if isinstance(ref, dict) and "node" in ref:
                    roles[ref["node"]] = role
        elif node.aten in ("conv2d", "convolution", "linear", "addmm"):
            w_index, b_index = (2, 0) if node.aten == "addmm" else (1, 2)
            for index, role in ((w_index, "fan_in"), (b_index, "zero")):
                ref = arg(node, index, "")
                if isinstance(ref, dict) and "node" in ref:
                    roles.setdefault(ref["node"], role)
    with torch.no_grad():
        for name, role in roles.items():
            if name not in attr:
                continue
            t = getattr(model, attr[name])
            if not t.is_floating_point():
                continue
            if role == "one":
                t.fill_(1.0)
            elif role == "zero":
                t.zero_()
            else:
                fan_in = max(1, t[0].numel()) if t.ndim > 1 else 1
                t.fill_(1.0 / fan_in)


def _truncate_at(model: RebuiltModel, at: str) -> None:
    """Make the (copied) model return feature map ``at``: the graph ends there.

    Cheaper than stopping an fx Interpreter with an exception, whose error path loads torch's
    compiler stack (~1.7 s) to format a traceback.
    """
    names = model.gm.meta["s6_names"]
    graph = model.gm.graph
    target = next(n for n in graph.nodes if names.get(n.name, n.name) == at)
    output = next(n for n in graph.nodes if n.op == "output")
    graph.erase_node(output)
    with graph.inserting_after(list(graph.nodes)[-1]):
        graph.output(target)
    graph.eliminate_dead_code()
    model.gm.recompile()


def _centre_gradient(graph: LoadedGraph, model: RebuiltModel, height: int, width: int) -> torch.Tensor:
    batch = 1 if graph.batch_dynamic else 2
    x = torch.ones(batch, graph.input_shape[0], height, width, requires_grad=True)
    fmap = model(x)
    h, w = fmap.shape[2] // 2, fmap.shape[3] // 2
    fmap[0, :, h, w].sum().backward()
    assert x.grad is not None  # x is the one leaf that requires grad (the weights do not): backward() set it
    return x.grad[0].abs().sum(0)


def find_node(graph: LoadedGraph, name: str) -> Node:
    return graph.by_name()[name]
