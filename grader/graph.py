"""Trusted side: rebuild the student's model from the probe's inert graph JSON and weights.

Nothing the child produced is imported or unpickled: the JSON is validated node by node against an
allowlist of ``torch.ops.aten`` operators, weights come from safetensors, and the result is a
``torch.fx.GraphModule`` wrapped in :class:`RebuiltModel`. That rebuilt model is the artifact that is
analysed (shapes, receptive field), trained weights are loaded into, and evaluated on the test split.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

GRAPH_SCHEMA = "s6-grader/graph/1"
MAX_TENSOR_ELEMENTS = 64_000_000  # any one tensor the graph may create (a 200k-param model needs far less)
MAX_WEIGHT_ELEMENTS = 50_000_000

# Elementwise activations: allowed in the graph, and see-through for the analyses (the receptive field and
# the depthwise -> pointwise link pass straight through them; grader.analysis.layers.POINTWISE).
ACTIVATIONS = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "leaky_relu",
        "leaky_relu_",
        "gelu",
        "silu",
        "silu_",
        "sigmoid",
        "sigmoid_",
        "tanh",
        "tanh_",
        "hardtanh",
        "hardtanh_",
        "elu",
        "elu_",
        "selu",
        "celu",
        "hardswish",
        "hardswish_",
        "hardsigmoid",
        "hardsigmoid_",
        "mish",
        "softplus",
        "prelu",
        "_prelu_kernel",
        "threshold",
    }
)

# Dropout in its aten spellings: the identity in eval mode, so see-through for the analyses too.
DROPOUTS = frozenset(
    {
        "dropout",
        "dropout_",
        "feature_dropout",
        "alpha_dropout",
        "feature_alpha_dropout",
        "native_dropout",
    }
)

# The op families below are shared with the analyses (grader.analysis.windows and .layers), which
# group them by what they do to a feature map; the allowlist is their union plus the rest.
# Normalisations in their aten spellings: per-channel affine in eval mode.
NORMS = frozenset(
    {
        "batch_norm",
        "_native_batch_norm_legit_no_training",
        "native_batch_norm",
        "_native_batch_norm_legit",
        "group_norm",
        "native_group_norm",
        "instance_norm",
        "layer_norm",
        "native_layer_norm",
    }
)
# Copies, aliases and dtype/device moves: the values pass through unchanged.
COPIES = frozenset(
    {"clone", "contiguous", "alias", "detach", "detach_", "_to_copy", "to", "type_as", "lift_fresh_copy"}
)
# Elementwise arithmetic.
ARITHMETIC = frozenset(
    {
        "add",
        "add_",
        "sub",
        "sub_",
        "mul",
        "mul_",
        "div",
        "div_",
        "neg",
        "abs",
        "pow",
        "sqrt",
        "rsqrt",
        "exp",
        "log",
        "clamp_",
        "reciprocal",
        "square",
        "sign",
        "floor",
        "ceil",
        "round",
        "lerp",
        "addcmul",
        "addcdiv",
        "rsub",
    }
)
# Elementwise choices between values (an elementwise max of shifted maps is max pooling by hand).
SELECTIONS = frozenset({"maximum", "minimum", "where", "clamp", "clamp_min", "clamp_max"})
COMPARISONS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})
# Factories, sizes and asserts that export inserts: no feature map goes in.
FACTORIES = frozenset(
    {
        "zeros",
        "ones",
        "full",
        "arange",
        "scalar_tensor",
        "zeros_like",
        "ones_like",
        "full_like",
        "empty_like",
        "sym_size",
        "sym_numel",
        "sym_stride",
        "_assert_scalar",
        "sym_constrain_range_for_size",
        "_assert_tensor_metadata",
    }
)

# aten operators a CIFAR-10 CNN may legitimately use; anything else is refused with its name.
ALLOWED_ATEN = {
    # convolution, normalisation, linear
    *NORMS,
    "conv2d",
    "convolution",
    "conv1d",
    "_convolution",
    "linear",
    "addmm",
    "mm",
    "bmm",
    "matmul",
    "t",
    # pooling (max pooling is allowed here so that the no_maxpool rule can see it)
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "_adaptive_avg_pool2d",
    "max_pool2d",
    "max_pool2d_with_indices",
    "adaptive_max_pool2d",
    "avg_pool1d",
    "max_pool1d",
    "lp_pool2d",
    # reductions
    "mean",
    "sum",
    "amax",
    "amin",
    "max",
    "min",
    "logsumexp",
    "var",
    "std",
    # activations
    *ACTIVATIONS,
    "glu",
    "log_softmax",
    "_log_softmax",
    "softmax",
    "_softmax",
    # dropout (eval mode: identity)
    *DROPOUTS,
    # elementwise arithmetic, choices and comparisons
    *ARITHMETIC,
    *SELECTIONS,
    *COMPARISONS,
    # copies and shape
    *COPIES,
    "view",
    "reshape",
    "_unsafe_view",
    "flatten",
    "unflatten",
    "squeeze",
    "squeeze_",
    "unsqueeze",
    "permute",
    "transpose",
    "expand",
    "expand_as",
    "repeat",
    "cat",
    "concat",
    "stack",
    "split",
    "split_with_sizes",
    "chunk",
    "slice",
    "select",
    "narrow",
    "index_select",
    "roll",
    "flip",
    "pad",
    "constant_pad_nd",
    "reflection_pad2d",
    "replication_pad2d",
    "pixel_shuffle",
    "pixel_unshuffle",
    "upsample_nearest2d",
    "upsample_bilinear2d",
    "_upsample_nearest_exact2d",
    "view_as",
    # factories, sizes and asserts that export inserts
    *FACTORIES,
    "scaled_dot_product_attention",
}
ALLOWED_OPERATORS = {
    "getitem",
    "add",
    "sub",
    "mul",
    "floordiv",
    "truediv",
    "neg",
    "mod",
    "pow",
    "eq",
    "ge",
    "le",
    "lt",
    "gt",
}
_DTYPES = {
    name: getattr(torch, name)
    for name in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
}
_FORMATS = {"contiguous_format", "channels_last", "preserve_format"}


class GraphError(Exception):
    """The graph or its weights are unusable; ``kind`` is the typed reason shown in the report."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class Node:
    """One node of the rebuilt graph, with the shape the trusted side measured itself."""

    name: str
    op: str  # placeholder | call_function | output
    target: str  # "aten::conv2d.default", "operator.getitem", "" for placeholders
    args: list
    kwargs: dict
    module: str = ""
    module_type: str = ""
    source: str = ""
    code: str = ""
    shape: tuple[int, ...] | None = None  # measured on the trusted side (batch 2)
    shape_alt: tuple[int, ...] | None = None  # measured again at batch 3: the dims that differ carry the batch
    inputs: list[str] = field(default_factory=list)  # names of node arguments, in order

    @property
    def aten(self) -> str:
        """'conv2d' for 'aten::conv2d.default' ('' for non-aten targets)."""
        if not self.target.startswith("aten::"):
            return ""
        return self.target[len("aten::") :].split(".")[0]

    def where(self) -> str:
        """'c2.0.0 (Conv2d, model.py:34)': how messages name a layer."""
        parts = [p for p in (self.module_type, self.source) if p]
        label = self.module or self.name
        return f"{label} ({', '.join(parts)})" if parts else label


@dataclass
class GraphInput:
    name: str
    kind: str  # parameter | buffer | constant | user_input
    target: str
    shape: tuple[int, ...] = ()
    dtype: str = "float32"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def attribute_name(target: str) -> str:
    """The attribute of a :class:`RebuiltModel` that holds the tensor ``target`` ('c1.0.weight')."""
    return "t_" + target.replace(".", "__")


class RebuiltModel(nn.Module):
    """The student's model as an fx graph of allowlisted aten ops with the probe's (or trained) weights.

    Parameters are ``nn.Parameter`` (trainable when floating point), everything else the graph reads is
    a buffer; ``state_dict()`` keys are attribute names, ``tensors_by_target()`` gives the model's own
    names ('c1.0.weight'), the names of checkpoints and of ``trained.safetensors``."""

    def __init__(self, gm: torch.fx.GraphModule, inputs: list[GraphInput], tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.gm = gm
        self.graph_inputs = inputs
        self._slots: list[tuple[str, str]] = []  # (kind, attribute name) per placeholder, in order
        self.targets: dict[str, str] = {}  # attribute name -> the model's own tensor name
        for inp in inputs:
            if inp.kind == "user_input":
                self._slots.append(("x", ""))
                continue
            attr = attribute_name(inp.target)
            value = tensors[inp.target]
            if inp.kind == "parameter":
                self.register_parameter(attr, nn.Parameter(value, requires_grad=value.is_floating_point()))
            else:
                self.register_buffer(attr, value)
            self._slots.append((inp.kind, attr))
            self.targets[attr] = inp.target

    def tensors_by_target(self) -> dict[str, torch.Tensor]:
        """Every tensor the graph reads, by the model's own names, detached on the CPU (copies)."""
        return {
            target: getattr(self, attr).detach().to("cpu").contiguous().clone() for attr, target in self.targets.items()
        }

    def move_to(self, device: torch.device) -> RebuiltModel:
        """The tensors to ``device``, and every tensor the graph creates there too (factory calls)."""
        self.to(device)
        for node in self.gm.graph.nodes:
            if node.op == "call_function" and "device" in node.kwargs:
                node.kwargs = {**node.kwargs, "device": device}
        self.gm.recompile()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = [x if kind == "x" else getattr(self, attr) for kind, attr in self._slots]
        out = self.gm(*args)
        return out[0] if isinstance(out, (tuple, list)) else out

    def load_weights(self, tensors: dict[str, torch.Tensor], strict_targets: set[str] | None = None) -> None:
        """Load trained weights by their module path (state_dict keys); shapes must match the graph."""
        missing = []
        for inp in self.graph_inputs:
            if inp.kind == "user_input":
                continue
            value = tensors.get(inp.target)
            if value is None:
                if strict_targets is None or inp.target in strict_targets:
                    missing.append(inp.target)
                continue
            if tuple(value.shape) != inp.shape:
                raise GraphError(
                    "weights_mismatch",
                    f"weight {inp.target} has shape {list(value.shape)}, the graph expects {list(inp.shape)}",
                )
            attr = attribute_name(inp.target)
            with torch.no_grad():
                getattr(self, attr).copy_(value.to(getattr(self, attr).dtype))
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise GraphError("weights_mismatch", f"weights missing for {', '.join(missing[:3])}{more}")


@dataclass
class LoadedGraph:
    nodes: list[Node]
    inputs: list[GraphInput]
    model: RebuiltModel
    input_shape: tuple[int, int, int]
    batch_dynamic: bool
    output_shape: tuple[int, ...]
    model_class: str = ""  # the probed model's class name, from the probe's graph.json (facts_from_probe)
    mode: str = "eval"  # 'eval': what is analysed and evaluated; 'train': what the grader trains

    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def users(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def params_of(self, kind: str) -> list[GraphInput]:
        return [i for i in self.inputs if i.kind == kind]


def load_graph(graph: dict, weights: dict[str, torch.Tensor]) -> LoadedGraph:
    """Validate the probe's graph JSON, rebuild it and measure every node's shape on a batch of 2
    (and of 3, for a graph with a dynamic batch: the dims that change carry the batch).

    The rebuilt model holds copies of ``weights``. Whatever the JSON holds (it comes from the
    untrusted child), the outcome is a LoadedGraph or a GraphError, never another exception.
    """
    try:
        return _load_graph(graph, weights)
    except GraphError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise GraphError("bad_graph", f"malformed graph: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _load_graph(graph: dict, weights: dict[str, torch.Tensor]) -> LoadedGraph:
    if not isinstance(graph, dict) or graph.get("schema") != GRAPH_SCHEMA:
        raise GraphError("bad_graph", f"graph file is not {GRAPH_SCHEMA}")
    mode = graph.get("mode", "eval")
    if mode not in ("eval", "train"):
        raise GraphError("bad_graph", f"unknown graph mode {str(mode)[:20]!r}")
    raw_shape = graph.get("input_shape", ())
    if not isinstance(raw_shape, list) or not all(isinstance(v, int) for v in raw_shape):
        raise GraphError("bad_graph", f"bad input shape {raw_shape!r}")
    input_shape = tuple(raw_shape)
    if len(input_shape) != 3 or not all(0 < v <= 1024 for v in input_shape):
        raise GraphError("bad_graph", f"bad input shape {input_shape}")
    inputs = [_graph_input(i) for i in graph.get("inputs", [])]
    total = sum(i.numel for i in inputs if i.kind != "user_input")
    if total > MAX_WEIGHT_ELEMENTS:
        raise GraphError("too_large", f"the graph holds {total:,} weight elements")
    tensors: dict[str, torch.Tensor] = {}
    for inp in inputs:
        if inp.kind == "user_input":
            continue
        value = weights.get(inp.target)
        if value is None or tuple(value.shape) != inp.shape:
            raise GraphError("weights_mismatch", f"weights file does not match graph input {inp.target}")
        tensors[inp.target] = value.clone()  # the model's own: training and BatchNorm update it in place
    if sum(1 for i in inputs if i.kind == "user_input") != 1:
        raise GraphError("bad_graph", "the graph must take exactly one image batch")
    nodes, gm = _rebuild(graph.get("nodes", []), inputs)
    _check_writes(nodes, inputs, mode)
    model = RebuiltModel(gm, inputs, tensors).eval()
    batch_dynamic = bool(graph.get("batch_dynamic"))
    saved = {k: v.clone() for k, v in model.state_dict().items()} if mode == "train" else None
    output_shape = _measure_shapes(model, nodes, input_shape)
    if batch_dynamic:
        _measure_shapes(model, nodes, input_shape, batch=3)
    if saved is not None:  # a train graph updated its BatchNorm statistics while measured: put them back
        model.load_state_dict(saved)
    return LoadedGraph(nodes, inputs, model, input_shape, batch_dynamic, output_shape, mode=mode)


def _graph_input(raw: Any) -> GraphInput:
    try:
        kind = raw["kind"]
        if kind not in ("parameter", "buffer", "constant", "user_input"):
            raise ValueError(kind)
        shape = tuple(int(v) for v in raw.get("shape", ()))
        if any(v < 0 for v in shape):
            raise ValueError(shape)
        return GraphInput(str(raw["name"]), kind, str(raw["target"]), shape, str(raw.get("dtype", "float32")))
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphError("bad_graph", f"bad graph input {str(raw)[:100]}") from exc


def resolve_target(name: str) -> Any:
    """The callable for a target string, if it is allowlisted; GraphError otherwise."""
    if name.startswith("operator."):
        op = name.split(".", 1)[1]
        if op in ALLOWED_OPERATORS:
            return getattr(operator, op)
    elif name.startswith("aten::"):
        rest = name[len("aten::") :]
        base, _, overload = rest.partition(".")
        if base in ALLOWED_ATEN:
            packet = getattr(torch.ops.aten, base, None)
            if packet is not None:
                try:
                    return getattr(packet, overload or "default")
                except AttributeError:
                    pass
    raise GraphError("unsupported_op", f"operator {name} is not on the grader's allowlist")


def _rebuild(raw_nodes: list, inputs: list[GraphInput]) -> tuple[list[Node], torch.fx.GraphModule]:
    g = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    nodes: list[Node] = []
    placeholders = [i.name for i in inputs]
    seen_placeholders = []
    output_seen = False
    for raw in raw_nodes:
        if not isinstance(raw, dict):
            raise GraphError("bad_graph", "graph node is not an object")
        name, op = str(raw.get("name", "")), raw.get("op")
        if not name.isidentifier() or name in env:
            raise GraphError("bad_graph", f"bad or repeated node name {name!r}")
        if output_seen:
            raise GraphError("bad_graph", "nodes after the output")
        node = Node(
            name=name,
            op=str(op),
            target=str(raw.get("target", "")),
            args=raw.get("args", []),
            kwargs=raw.get("kwargs", {}),
            module=str(raw.get("module", "")),
            module_type=str(raw.get("module_type", "")),
            source=str(raw.get("source", "")),
            code=str(raw.get("code", "")),
        )
        refs: list[str] = []
        if op == "placeholder":
            env[name] = g.placeholder(name)
            seen_placeholders.append(name)
        elif op == "call_function":
            target = resolve_target(node.target)
            if not isinstance(node.args, list) or not isinstance(node.kwargs, dict):
                raise GraphError("bad_graph", f"node {name}: malformed arguments")
            args = _decode(node.args, env, refs)
            # The kwargs mapping is a container, never a marker ({"dtype": ...} is a keyword here).
            kwargs = {str(k): _decode(x, env, refs) for k, x in node.kwargs.items()}
            _check_sizes(node, args, kwargs)
            env[name] = g.create_node("call_function", target, tuple(args), kwargs, name=name)
        elif op == "output":
            out_args = _decode(node.args, env, refs)
            if not isinstance(out_args, list) or not out_args:
                raise GraphError("bad_graph", "the output node has no value")
            g.output(out_args[0])
            output_seen = True
        else:
            raise GraphError("bad_graph", f"node {name}: unsupported kind {op!r}")
        node.inputs = refs
        nodes.append(node)
    if seen_placeholders != placeholders:
        raise GraphError("bad_graph", "graph placeholders do not match its inputs")
    if not output_seen:
        raise GraphError("bad_graph", "graph has no output")
    gm = torch.fx.GraphModule(nn.Module(), g)
    # fx may rename a node (a clash with a Python name); remember ours for every fx node.
    gm.meta["s6_names"] = {fx_node.name: name for name, fx_node in env.items()}
    return nodes, gm


def _decode(v: Any, env: dict[str, torch.fx.Node], refs: list[str]) -> Any:
    if isinstance(v, list):
        return [_decode(x, env, refs) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            ((key, val),) = v.items()
            if key == "node":
                if not isinstance(val, str) or val not in env:
                    raise GraphError("bad_graph", f"reference to unknown node {val!r}")
                refs.append(val)
                return env[val]
            if key == "dtype":
                if not isinstance(val, str) or val not in _DTYPES:
                    raise GraphError("bad_graph", f"unsupported dtype {val!r}")
                return _DTYPES[val]
            if key == "device":
                return torch.device("cpu")  # moved as a whole later; student device choices are ignored
            if key == "memory_format":
                if not isinstance(val, str) or val not in _FORMATS:
                    raise GraphError("bad_graph", f"unsupported memory format {val!r}")
                return getattr(torch, val)
            if key == "layout":
                return torch.strided
            if key == "float":
                if val not in ("nan", "inf", "-inf"):
                    raise GraphError("bad_graph", f"bad float marker {val!r}")
                return float(val)
        return {str(k): _decode(x, env, refs) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise GraphError("bad_graph", f"unsupported argument {str(v)[:60]}")


def _check_sizes(node: Node, args: list, kwargs: dict) -> None:
    """Refuse factory/expand calls that would allocate absurd tensors on the trusted side."""
    if node.aten not in {"zeros", "ones", "full", "arange", "expand", "repeat", "view", "reshape"}:
        return
    for value in list(args) + list(kwargs.values()):
        sizes = isinstance(value, list) and value and all(isinstance(d, int) for d in value)
        if sizes and math.prod(abs(d) for d in value) > MAX_TENSOR_ELEMENTS:
            raise GraphError("too_large", f"node {node.name} asks for a tensor of shape {value}")


# Ops that return a view of (or the same memory as) their first argument: an in-place op on their result
# writes into that argument.
VIEW_OPS = {
    "view",
    "_unsafe_view",
    "reshape",
    "alias",
    "detach",
    "detach_",
    "slice",
    "select",
    "narrow",
    "squeeze",
    "squeeze_",
    "unsqueeze",
    "permute",
    "transpose",
    "t",
    "expand",
    "expand_as",
    "flatten",
    "unflatten",
    "split",
    "split_with_sizes",
    "chunk",
    "view_as",
    "contiguous",
    "lift_fresh_copy",
}


def _check_writes(nodes: list[Node], inputs: list[GraphInput], mode: str) -> None:
    """A forward may write into its own tensors only as BatchNorm does in training (its running
    statistics, updated inside ``batch_norm``, and its counter, ``num_batches_tracked += 1``). Any
    other in-place op on a parameter, buffer or constant (a table the forward fills from the images it
    sees, weights it rewrites) is refused: what is evaluated must not depend on what ran before."""
    kinds = {i.name: i for i in inputs}
    by_name = {n.name: n for n in nodes}

    def root(name: str) -> str:
        seen = 0
        while name in by_name and by_name[name].aten in VIEW_OPS and by_name[name].inputs and seen < 10_000:
            name, seen = by_name[name].inputs[0], seen + 1
        if name in by_name and by_name[name].target == "operator.getitem" and by_name[name].inputs:
            return root(by_name[name].inputs[0])
        return name

    for node in nodes:
        if node.op != "call_function" or not node.aten.endswith("_") or node.aten.startswith("_") or not node.inputs:
            continue
        if node.aten in ("detach_",):
            continue
        written = kinds.get(root(node.inputs[0]))
        if written is None or written.kind == "user_input":
            continue
        counter = (
            mode == "train"
            and node.aten == "add_"
            and written.kind == "buffer"
            and written.shape == ()
            and not written.dtype.startswith(("float", "bfloat"))
            and node.args[1:2] == [1]
        )
        if not counter:
            where = f" ({node.source})" if node.source else ""
            raise GraphError(
                "writes_own_tensor",
                f"the forward writes into {written.kind} {written.target} with {node.aten}{where}: a model may "
                "update only BatchNorm's statistics in its forward",
            )


@contextlib.contextmanager
def _memory_headroom(extra_bytes: int = 4 << 30) -> Iterator[None]:
    """Lower this process's soft RLIMIT_DATA to what it uses now plus ``extra_bytes`` while the graph
    runs: an absurd allocation fails at once (RuntimeError) instead of exhausting the machine.
    The soft limit is restored afterwards (Linux; elsewhere a no-op)."""
    try:
        import resource

        status = Path("/proc/self/status").read_text()
        used_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmData:")))
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = used_kb * 1024 + extra_bytes
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (OSError, ValueError, StopIteration, ImportError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _measure_shapes(
    model: RebuiltModel, nodes: list[Node], input_shape: tuple[int, int, int], batch: int = 2
) -> tuple[int, ...]:
    """Run the rebuilt graph once and record each node's output shape: trusted shapes (``Node.shape``
    at batch 2, ``Node.shape_alt`` at any other batch)."""
    by_name = {n.name: n for n in nodes}
    names = model.gm.meta["s6_names"]
    shapes: dict[str, tuple[int, ...]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            name = names.get(n.name, n.name)
            for t in result if isinstance(result, (tuple, list)) else (result,):
                if isinstance(t, torch.Tensor) and t.numel() > MAX_TENSOR_ELEMENTS:
                    raise GraphError("too_large", f"node {name} makes a tensor of shape {list(t.shape)}")
            if isinstance(result, torch.Tensor):
                shapes[name] = tuple(result.shape)
            elif isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
                shapes[name] = tuple(result[0].shape)
            return result

    x = torch.zeros(batch, *input_shape)
    args = [x if kind == "x" else getattr(model, attr) for kind, attr in model._slots]
    try:
        with torch.no_grad(), _memory_headroom():
            out = Recorder(model.gm).run(*args)
    except GraphError:
        raise
    except Exception as exc:
        raise GraphError("graph_failed", f"the rebuilt graph does not run: {type(exc).__name__}: {exc}") from exc
    for name, shape in shapes.items():
        if batch == 2:
            by_name[name].shape = shape
        else:
            by_name[name].shape_alt = shape
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor):
        raise GraphError("bad_graph", "the graph's output is not a tensor")
    return tuple(out.shape)
