"""Trusted facts about the rebuilt graph: its spatial layers, pooling, GAP, depthwise, dilation, params.

Everything here reads the :class:`~grader.graph.LoadedGraph` (the allowlisted aten graph with shapes
measured by the trusted side), never the student's module objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from grader.analysis.tensors import bn_counters, bn_statistics
from grader.analysis.windows import arg, hand_written, hw_of, propagate
from grader.graph import ACTIVATIONS, COPIES, DROPOUTS, NORMS, LoadedGraph, Node

# Ops that pass a feature map through without looking at neighbours (the RF and the
# depthwise -> pointwise link go straight through them).
POINTWISE = {*ACTIVATIONS, *DROPOUTS, *NORMS, *COPIES, "_assert_tensor_metadata"}
MAXPOOL_OPS = {"max_pool2d", "max_pool2d_with_indices", "adaptive_max_pool2d", "max_pool1d", "fractional_max_pool2d"}
# After global average pooling only these may follow (the classifier head).
HEAD_OPS = POINTWISE | {
    "view",
    "reshape",
    "_unsafe_view",
    "flatten",
    "squeeze",
    "squeeze_",
    "unsqueeze",
    "permute",
    "transpose",
    "t",
    "linear",
    "addmm",
    "mm",
    "matmul",
    "log_softmax",
    "_log_softmax",
    "softmax",
    "_softmax",
    "sym_size",
    "mul",
    "div",
    "add",
    "sub",
    "neg",
}


@dataclass
class SpatialLayer:
    """A node that looks at a neighbourhood or changes the spatial size: conv, pooling, GAP.

    Pooling written with other ops (:func:`grader.analysis.windows.hand_written`) is a layer too: ``node``
    is the op that completes the window, ``via`` the ops that compute it, ``origin`` the map it reads and
    ``spelled`` the aten ops it is written with; ``resample`` is a map made smaller without a convolution
    or a pooling op (a strided slice, a crop, ``pixel_unshuffle``)."""

    node: Node
    kind: str  # conv | maxpool | avgpool | global_avg | global_max | upsample | resample
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    in_channels: int = 0
    out_channels: int = 0
    in_hw: tuple[int, int] = (0, 0)
    out_hw: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)
    via: list[Node] = field(default_factory=list)
    origin: str = ""  # the map it reads, where that is not its first argument
    spelled: str = ""  # the aten ops a hand-written window is computed with

    @property
    def k_eff(self) -> tuple[int, int]:
        (kh, kw), (dh, dw) = self.kernel, self.dilation
        return (dh * (kh - 1) + 1, dw * (kw - 1) + 1)

    @property
    def is_depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels and max(self.kernel) > 1

    @property
    def is_pointwise(self) -> bool:
        return self.kind == "conv" and self.kernel == (1, 1) and self.groups == 1

    @property
    def is_dilated(self) -> bool:
        return self.kind == "conv" and any(d > 1 and k > 1 for k, d in zip(self.kernel, self.dilation, strict=True))

    @property
    def shrinks(self) -> bool:
        return self.out_hw[0] < self.in_hw[0] or self.out_hw[1] < self.in_hw[1]

    def describe(self) -> str:
        """'Conv2d 3x3 s2 d2 g96' style summary."""
        written = f" (written as {self.spelled})" if self.spelled else ""
        if self.kind in ("global_avg", "global_max"):
            return ("global average pool" if self.kind == "global_avg" else "global max pool") + written
        if self.kind == "resample":
            bits = [f"{self.in_hw[0]}x{self.in_hw[1]} -> {self.out_hw[0]}x{self.out_hw[1]} without a convolution"]
            if self.stride != (1, 1):
                bits.append(f"stride {_pair_text(self.stride)}")
            return " ".join(bits) + written
        bits = [{"conv": "conv", "maxpool": "max pool", "avgpool": "avg pool", "upsample": "upsample"}[self.kind]]
        bits.append(f"{self.kernel[0]}x{self.kernel[1]}")
        if self.stride != (1, 1):
            bits.append(f"stride {_pair_text(self.stride)}")
        if self.dilation != (1, 1):
            bits.append(f"dilation {_pair_text(self.dilation)}")
        if self.groups > 1:
            bits.append("depthwise" if self.is_depthwise else f"groups {self.groups}")
        return " ".join(bits) + written


def _pair_text(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _pair(v: Any, default: int) -> tuple[int, int]:
    if v is None or v == []:
        return (default, default)
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, list) and len(v) == 1:
        return (int(v[0]), int(v[0]))
    if isinstance(v, list) and len(v) >= 2:
        return (int(v[-2]), int(v[-1]))
    raise ValueError(f"unexpected size argument {v!r}")


def _ref_shape(graph: LoadedGraph, ref: Any) -> tuple[int, ...] | None:
    if isinstance(ref, dict) and "node" in ref:
        node = graph.by_name().get(ref["node"])
        return node.shape if node else None
    return None


def spatial_layers(graph: LoadedGraph) -> list[SpatialLayer]:
    """Every conv/pool/GAP node on 4-D feature maps, in graph order, with its hyperparameters; then pooling
    by what it computes (a max of shifted slices, a max over dims split from H or W) and downsampling
    without a convolution (a strided slice), each as one layer."""
    layers = []
    for node in graph.nodes:
        if node.op != "call_function" or not node.inputs:
            continue
        layer = _spatial_layer(graph, node) or _chained_mean(graph, node)
        if layer is not None:
            layers.append(layer)
    known = {layer.node.name for layer in layers}
    for found in hand_written(graph, propagate(graph), known):
        in_hw, out_hw = hw_of(found.origin), hw_of(found.node)
        shape = found.node.shape or ()
        origin_shape = found.origin.shape if found.origin is not None and found.origin.shape else ()
        layers.append(
            SpatialLayer(
                node=found.node,
                kind=found.kind,
                kernel=found.kernel,
                stride=found.stride,
                padding=found.padding,
                in_channels=origin_shape[1] if len(origin_shape) > 1 else 0,
                out_channels=shape[1] if len(shape) > 1 else 0,
                in_hw=in_hw,
                out_hw=out_hw,
                via=found.via,
                origin=found.origin.name if found.origin is not None else "",
                spelled=", ".join(found.ops),
            )
        )
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(layers, key=lambda layer: order[layer.node.name])


class _Shapes(TypedDict):
    """The SpatialLayer fields every kind of layer takes from the graph's shapes."""

    node: Node
    in_channels: int
    out_channels: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def _spatial_layer(graph: LoadedGraph, node: Node) -> SpatialLayer | None:
    op = node.aten
    in_shape = _ref_shape(graph, arg(node, 0, "input"))
    out_shape = node.shape
    if in_shape is None or out_shape is None or len(in_shape) != 4:
        return None
    in_hw, in_c = (in_shape[2], in_shape[3]), in_shape[1]
    out_hw = (out_shape[2], out_shape[3]) if len(out_shape) == 4 else (1, 1)
    out_c = out_shape[1] if len(out_shape) >= 2 else 0
    base: _Shapes = {"node": node, "in_channels": in_c, "out_channels": out_c, "in_hw": in_hw, "out_hw": out_hw}
    if op in ("conv2d", "convolution", "_convolution"):
        w_shape = _ref_shape(graph, arg(node, 1, "weight"))
        if w_shape is None or len(w_shape) != 4:
            return None
        if op == "conv2d":
            stride, padding, dilation, groups = (
                arg(node, 3, "stride"),
                arg(node, 4, "padding"),
                arg(node, 5, "dilation"),
                arg(node, 6, "groups", 1),
            )
        else:
            stride, padding, dilation, groups = (
                arg(node, 3, "stride"),
                arg(node, 4, "padding"),
                arg(node, 5, "dilation"),
                arg(node, 8, "groups", 1),
            )
        kernel = (w_shape[2], w_shape[3])
        dil = _pair(dilation, 1)
        if isinstance(padding, str):  # conv2d.padding overload: 'same' or 'valid'
            padding = [d * (k - 1) // 2 for k, d in zip(kernel, dil, strict=True)] if padding == "same" else [0, 0]
        layer = SpatialLayer(
            kind="conv",
            kernel=kernel,
            stride=_pair(stride, 1),
            padding=_pair(padding, 0),
            dilation=dil,
            groups=int(groups or 1),
            **base,
        )
        if layer.groups > 1 and not layer.is_depthwise:
            layer.notes.append(f"grouped ({layer.groups} groups on {in_c} channels), not depthwise")
        if any(d > 1 for d in dil) and kernel == (1, 1):
            layer.notes.append("dilation on a 1x1 kernel does nothing")
        return layer
    if op in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        kernel = _pair(arg(node, 1, "kernel_size"), 1)
        stride_raw = arg(node, 2, "stride")
        stride = kernel if stride_raw in (None, []) else _pair(stride_raw, 1)
        padding = _pair(arg(node, 3, "padding", 0), 0)
        dilation = _pair(arg(node, 4, "dilation", 1), 1) if op != "avg_pool2d" else (1, 1)
        kind = "avgpool" if op == "avg_pool2d" else "maxpool"
        covers = kernel[0] >= in_hw[0] + 2 * padding[0] and kernel[1] >= in_hw[1] + 2 * padding[1]
        if kind == "avgpool" and out_hw == (1, 1) and covers:
            kind = "global_avg"
        elif kind == "maxpool" and out_hw == (1, 1) and covers:
            kind = "global_max"
        layer = SpatialLayer(kind=kind, kernel=kernel, stride=stride, padding=padding, dilation=dilation, **base)
        if layer.kind == "avgpool" and out_hw == (1, 1):
            layer.notes.append(f"{kernel[0]}x{kernel[1]} kernel on a {in_hw[0]}x{in_hw[1]} map: not global")
        return layer
    if op in ("adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d"):
        avg = op != "adaptive_max_pool2d"
        if out_hw == (1, 1):
            return SpatialLayer(kind="global_avg" if avg else "global_max", kernel=in_hw, stride=in_hw, **base)
        stride = (max(1, in_hw[0] // max(1, out_hw[0])), max(1, in_hw[1] // max(1, out_hw[1])))
        kernel = (in_hw[0] - (out_hw[0] - 1) * stride[0], in_hw[1] - (out_hw[1] - 1) * stride[1])
        layer = SpatialLayer(kind="avgpool" if avg else "maxpool", kernel=kernel, stride=stride, **base)
        layer.notes.append(f"adaptive pool to {out_hw[0]}x{out_hw[1]}: not global")
        return layer
    if op in ("mean", "amax", "max", "sum", "logsumexp") and _reduces_hw(node, len(in_shape)):
        reduction = "global_avg" if op == "mean" else ("global_max" if op in ("amax", "max") else None)
        if reduction is None:
            return None
        return SpatialLayer(kind=reduction, kernel=in_hw, stride=in_hw, **base)
    if op in ("upsample_nearest2d", "upsample_bilinear2d", "_upsample_nearest_exact2d", "pixel_shuffle"):
        return SpatialLayer(kind="upsample", **base)
    return None


def _reduces_hw(node: Node, ndim: int) -> bool:
    dims = arg(node, 1, "dim")
    if isinstance(dims, int):
        dims = [dims]
    if not isinstance(dims, list) or not dims:
        return False
    norm = {d % ndim for d in dims if isinstance(d, int)}
    return {2, 3} <= norm


def _chained_mean(graph: LoadedGraph, node: Node) -> SpatialLayer | None:
    """``x.mean(-1).mean(-1)`` (or over 3 then 2): two means that together average H and W."""
    if node.aten != "mean" or node.shape is None:
        return None
    src = arg(node, 0, "input")
    first = graph.by_name().get(src["node"]) if isinstance(src, dict) and "node" in src else None
    if first is None or first.aten != "mean" or first.shape is None or len(first.shape) != 3:
        return None
    base_ref = arg(first, 0, "input")
    base = _ref_shape(graph, base_ref)
    if base is None or len(base) != 4:
        return None
    d1 = arg(first, 1, "dim")
    d2 = arg(node, 1, "dim")
    d1 = [d1] if isinstance(d1, int) else d1
    d2 = [d2] if isinstance(d2, int) else d2
    if not (isinstance(d1, list) and isinstance(d2, list) and len(d1) == len(d2) == 1):
        return None
    first_dim, second_dim = d1[0] % 4, d2[0] % 3
    if {first_dim, second_dim} != {3, 2} and not (first_dim == 2 and second_dim == 2):
        return None
    hw = (base[2], base[3])
    return SpatialLayer(
        kind="global_avg",
        kernel=hw,
        stride=hw,
        node=node,
        in_channels=base[1],
        out_channels=base[1],
        in_hw=hw,
        out_hw=(1, 1),
    )


@dataclass
class ParamFacts:
    """Every number the forward reads. ``params`` counts them all (parameters of any dtype, buffers,
    constants) except BatchNorm's running statistics and counters; ``hidden`` lists those that are not
    floating-point parameters, and beyond the rubric's budget they are hidden data."""

    params: int  # parameters + every other tensor read (not BN statistics): what the < 200k rule counts
    trainable: int  # floating-point parameters (torchsummary's "Total params")
    hidden: list[dict]  # the other tensors read: name, kind, shape, dtype, numel, the line that reads it
    hidden_total: int
    bn_buffers: int
    budget: int = 1024  # numbers allowed outside parameters and BN statistics (the rubric's hidden_budget)

    @property
    def hidden_data(self) -> bool:
        return self.hidden_total > self.budget


def param_facts(graph: LoadedGraph, train_graph: LoadedGraph | None = None, budget: int = 1024) -> ParamFacts:
    """What the forward reads, in the eval graph and (when there is one) the train graph."""
    graphs = [g for g in (graph, train_graph) if g is not None]
    bn: set[str] = set()  # targets
    hidden: dict[str, dict[str, Any]] = {}
    trainable = 0
    counted: set[str] = set()
    for g in graphs:
        names = {i.name: i for i in g.inputs}
        stats = set(bn_statistics(g)) | bn_counters(g)
        bn |= {names[n].target for n in stats if n in names}
    for g in graphs:
        users = g.users()
        for inp in g.inputs:
            if inp.kind == "user_input" or inp.target in counted:
                continue
            readers = users.get(inp.name) or []
            if inp.target in bn:
                continue
            float_parameter = inp.kind == "parameter" and inp.dtype.startswith(("float", "bfloat"))
            if float_parameter:
                counted.add(inp.target)
                trainable += inp.numel
                continue
            if not readers:
                continue  # not read by the forward: not part of the model
            counted.add(inp.target)
            line = next((r.source for r in readers if r.source), "")
            hidden[inp.target] = {
                "name": inp.target,
                "kind": inp.kind if inp.kind != "parameter" else f"{inp.dtype} parameter (not trainable)",
                "shape": list(inp.shape),
                "dtype": inp.dtype,
                "numel": inp.numel,
                "line": line,
            }
    bn_total = sum(i.numel for g in graphs[:1] for i in g.inputs if i.target in bn)
    others = sorted(hidden.values(), key=lambda h: -h["numel"])
    total = sum(h["numel"] for h in others)
    return ParamFacts(trainable + total, trainable, others, total, bn_total, budget)


def followed_by_pointwise(
    graph: LoadedGraph, layer: SpatialLayer, layers_by_node: dict[str, SpatialLayer]
) -> SpatialLayer | None:
    """The 1x1 conv a depthwise conv feeds, directly or through BN/activation/dropout (None if none)."""
    users = graph.users()
    frontier = [layer.node.name]
    seen = set()
    while frontier:
        name = frontier.pop()
        for user in users.get(name, []):
            if user.name in seen:
                continue
            seen.add(user.name)
            target = layers_by_node.get(user.name)
            if target is not None:
                if target.is_pointwise:
                    return target
                continue
            if user.aten in POINTWISE or user.target == "operator.getitem":
                frontier.append(user.name)
    return None


def downstream_ops(graph: LoadedGraph, start: Node) -> list[Node]:
    """Every call node that depends on ``start`` (its transitive users), in graph order."""
    users = graph.users()
    reach = set()
    stack = [start.name]
    while stack:
        for user in users.get(stack.pop(), []):
            if user.name not in reach:
                reach.add(user.name)
                stack.append(user.name)
    return [n for n in graph.nodes if n.name in reach and n.op == "call_function"]
