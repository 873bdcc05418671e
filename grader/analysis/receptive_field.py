"""Receptive field: the analytic recurrence through the graph, and an empirical gradient check.

Trusted side.

Recurrence per layer (per axis): ``k_eff = d*(k-1)+1; rf_out = rf_in + (k_eff-1)*j_in; j_out = j_in*s``.
Where branches meet (residual adds, concatenations) the largest RF wins. The RF reported is the one
of a unit of the last feature map before global pooling.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from grader.analysis.layers import SpatialLayer, arg
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
    rf: int  # analytic RF of one unit of the last feature map before global pooling
    jump: int
    at: str  # node name of that feature map
    at_layer: str  # its producing layer, for messages
    size: tuple[int, int]  # that map's H x W
    rows: list[RFRow]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


def analytic_rf(graph: LoadedGraph, layers: list[SpatialLayer]) -> RFResult:
    """Propagate (rf, jump) per axis through every node; return the RF before global pooling."""
    by_node = {layer.node.name: layer for layer in layers}
    state: dict[str, tuple[int, int, int, int]] = {}  # name -> (rf_h, rf_w, j_h, j_w)
    user_input = next(i.name for i in graph.inputs if i.kind == "user_input")
    state[user_input] = (1, 1, 1, 1)
    pooled_from: list[str] = []  # inputs of global pools, in order
    rows_by_node: dict[str, RFRow] = {}
    transition_sizes: set[int] = set()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        layer = by_node.get(node.name)
        ins = [state[i] for i in node.inputs if i in state]
        if not ins:
            continue
        if layer is not None:
            src = arg(node, 0, "input")
            s_in = state.get(src["node"]) if isinstance(src, dict) else None
            if s_in is None:
                continue
            if layer.kind in ("global_avg", "global_max") or (
                layer.kind in ("avgpool", "maxpool") and layer.out_hw == (1, 1)
            ):
                # The final pooling (global or not): the RF is the one of the map it pools.
                pooled_from.append(src["node"])
                continue
            rh, rw, jh, jw = s_in
            kh, kw = layer.k_eff
            if layer.kind == "upsample":
                scale = max(1, layer.out_hw[0] // max(1, layer.in_hw[0]))
                state[node.name] = (rh, rw, max(1, jh // scale), max(1, jw // scale))
                continue
            out = (rh + (kh - 1) * jh, rw + (kw - 1) * jw, jh * layer.stride[0], jw * layer.stride[1])
            state[node.name] = out
            if is_transition(layer):
                transition_sizes.add(layer.out_hw[0])
            rows_by_node[node.name] = RFRow(
                layer=layer.node.module or node.name,
                what=layer.describe(),
                block=0,
                in_size=layer.in_hw[0],
                rf_in=max(rh, rw),
                kernel=max(kh, kw),
                padding=max(layer.padding),
                stride=max(layer.stride),
                jump_in=max(jh, jw),
                jump_out=max(out[2], out[3]),
                rf_out=max(out[0], out[1]),
                out_size=layer.out_hw[0],
                source=node.source,
                notes="; ".join(layer.notes),
            )
            continue
        if node.shape is not None and len(node.shape) == 4:
            # Pointwise ops and branch merges: the largest RF (and jump) of the inputs.
            # range(4): the four values of a state, which mypy sees only as tuple[int, ...].
            state[node.name] = tuple(max(s[i] for s in ins) for i in range(4))  # type: ignore[assignment]
    # Blocks are the resolution stages: a transition row opens the block it leads into, and
    # parallel reducers to the same size (a residual shortcut) belong to the same block.
    for row in rows_by_node.values():
        row.block = 1 + sum(1 for s in transition_sizes if s >= row.out_size)
    if pooled_from:
        at = pooled_from[-1]
    else:
        four_d = [n for n in graph.nodes if n.name in state and n.shape is not None and len(n.shape) == 4]
        if not four_d:
            raise ValueError("the graph has no 4-D feature map")
        at = four_d[-1].name
    rh, rw, jh, jw = state[at]
    ancestors = _ancestors(graph, at)
    rows = [row for name, row in rows_by_node.items() if name in ancestors or name == at]
    node = graph.by_name()[at]
    size = (node.shape[2], node.shape[3]) if node.shape and len(node.shape) == 4 else (0, 0)
    producer = rows[-1].layer if rows else at
    return RFResult(max(rh, rw), max(jh, jw), at, producer, size, rows)


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


def measure_rf(graph: LoadedGraph, at: str, analytic: int, jump: int, square: bool = False) -> MeasuredRF:
    """Empirical RF: gradient of the centre unit of feature map ``at`` w.r.t. the input.

    The rebuilt graph is run with positive weights (conv/linear 1/fan-in, BN as identity) on a
    positive input so that no ReLU hides a path; the nonzero extent of the input gradient is the RF.
    The input is just tall enough for the analytic window (when the graph allows other sizes) and,
    unless ``square`` (some layer is not symmetric), only as wide as the native input: the vertical
    extent is the RF, at a fraction of the cost of a square input.
    """
    model = copy.deepcopy(graph.model).float()
    _positive_weights(graph, model)
    _max_to_avg_pooling(model)
    for tensor in model.parameters():
        tensor.requires_grad_(False)  # only the input's gradient is needed
    _truncate_at(model, at)
    native = graph.input_shape[1]
    step = max(8, jump)
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


def _max_to_avg_pooling(model: RebuiltModel) -> None:
    """Max pooling passes the gradient to one element per window; average pooling with the same
    geometry sees the same window, so the measurement uses it instead."""
    swaps = {
        torch.ops.aten.max_pool2d.default: _max_pool_as_avg,
        torch.ops.aten.max_pool2d_with_indices.default: _max_pool_with_indices_as_avg,
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
