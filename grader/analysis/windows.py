"""Trusted side: which input pixels every tensor of the rebuilt graph sees, and pooling however it is written.

The geometry of a tensor is kept per dimension: ``rows[i]`` of a dimension is what index ``i`` adds to the
window of a unit, as ``(lo_h, hi_h, lo_w, hi_w)`` in input pixels, and the window of the unit at
``(i_1, ..., i_k)`` is ``base + rows_1[i_1] + ... + rows_k[i_k]``. The image itself has
``rows[i] = (i, i, 0, 0)`` along H, ``(0, 0, i, i)`` along W and zeros along the batch and the channels.
A dimension also knows how it continues past its ends (``rows[i + period] = rows[i] + step``: the map
continued as if unbounded, which is how the textbook recurrence counts padding), so a convolution,
a pad or a slice goes through it exactly, and so do reshapes that split or merge H and W, reductions
over any dimensions, concatenations and elementwise ops on maps shifted against each other (the
union of the windows). Where that is not enough (a map pooled over H x W and broadcast back over it,
attention, bilinear upsampling, an op the geometry does not know) the tensor is :class:`Lost`, with the
reason: the receptive field is then unknown, never a silent number.

The same geometry finds what the allowlisted aten ops compute rather than what they are called
(:func:`hand_written`): a maximum (or a minimum, or a ``where`` on a comparison) of copies of one map
shifted against each other, or a max over dimensions split from H or W, is max pooling; a mean or sum
over part of H or W is average pooling; any other op that makes H x W smaller without a convolution
(a strided slice, a crop, ``pixel_unshuffle``) is downsampling by something that is not a convolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from grader.graph import (
    ACTIVATIONS,
    ARITHMETIC,
    COMPARISONS,
    COPIES,
    DROPOUTS,
    FACTORIES,
    NORMS,
    LoadedGraph,
    Node,
)
from grader.graph import SELECTIONS as ALLOWED_SELECTIONS

_LO = torch.tensor([0, 2])  # the columns of a row that are lower ends (H, W)
_HI = torch.tensor([1, 3])
_MAX_GROUP = 1 << 21  # the largest group of dimensions a reshape may flatten while it is followed


class Unfollowable(Exception):
    """The geometry cannot follow this op exactly (the message says why)."""


def arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument of an aten call as recorded in the graph JSON."""
    if index < len(node.args):
        return node.args[index]
    return node.kwargs.get(name, default)


def _zeros(n: int) -> torch.Tensor:
    return torch.zeros(n, 4, dtype=torch.long)


def _hull(rows: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The union of windows along ``dim``: the least lower end and the greatest upper end."""
    out = rows.amax(dim)
    out[..., _LO] = rows.amin(dim)[..., _LO]
    return out


def _centres(rows: torch.Tensor) -> torch.Tensor:
    """Twice the centre of each window, per axis."""
    return rows[..., _LO] + rows[..., _HI]


@dataclass
class Dim:
    """One dimension of a tensor: what each index adds to a unit's window, and how it continues."""

    rows: torch.Tensor  # (size, 4): (lo_h, hi_h, lo_w, hi_w) added by each index
    period: int = 1
    step: torch.Tensor | None = None  # rows[i + period] = rows[i] + step, also past the ends; None: unknown

    @property
    def size(self) -> int:
        return int(self.rows.shape[0])

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        """The rows at ``index``, past the ends as the dimension continues (padding, the textbook way)."""
        n = self.size
        if bool(((index >= 0) & (index < n)).all()):
            return self.rows[index]
        if self.step is None or n < self.period:
            raise Unfollowable("reads past the edge of a map whose spacing is not regular")
        q = torch.div(index, self.period, rounding_mode="floor")
        return self.rows[index - q * self.period] + q[:, None] * self.step

    def union(self) -> torch.Tensor:
        return _hull(self.rows)

    def varies(self) -> bool:
        """Whether its indices see different places (a spatial dimension, not batch or channels)."""
        c = _centres(self.rows)
        return bool((c != c[0]).any())

    def spacing(self) -> tuple[int, int] | None:
        """The jump between neighbouring indices along H and W (None where it is not regular)."""
        if self.step is None:
            return None
        per = self.period
        return (abs(int(self.step[0])) // per, abs(int(self.step[2])) // per)


def _constant_dim(n: int) -> Dim:
    return Dim(_zeros(n), 1, torch.zeros(4, dtype=torch.long))


def _regular(rows: torch.Tensor, period: int, step: torch.Tensor) -> bool:
    if rows.shape[0] <= period:
        return True
    return bool((rows[period:] - rows[:-period] == step).all())


def make_dim(
    rows: torch.Tensor, hint: tuple[int, torch.Tensor | None] | None = None, candidates: Iterable[int] | None = None
) -> Dim:
    """A dimension for ``rows``: the continuation ``hint`` where it holds, else the shortest period found."""
    n = int(rows.shape[0])
    if hint is not None and hint[1] is not None and hint[0] >= 1 and _regular(rows, hint[0], hint[1]):
        return Dim(rows, hint[0], hint[1])
    if n >= 1 and bool((rows == rows[0]).all()):
        return Dim(rows, 1, torch.zeros(4, dtype=torch.long))
    for period in candidates if candidates is not None else range(1, min(n, 65)):
        if 1 <= period < n:
            diff = rows[period:] - rows[:-period]
            if bool((diff == diff[0]).all()):
                return Dim(rows, period, diff[0].clone())
    return Dim(rows, 1, None)


def _sampled_hint(dim: Dim, stride: int) -> tuple[int, torch.Tensor | None]:
    """The continuation of ``i -> dim[a + i * stride]``."""
    if dim.step is None or stride == 0:
        return (1, None if dim.step is None else torch.zeros(4, dtype=torch.long))
    period = dim.period // math.gcd(dim.period, abs(stride))
    return (period, dim.step * (period * stride // dim.period))


@dataclass
class Geo:
    """The windows of every unit of a tensor that depends on the image."""

    base: torch.Tensor  # (4,)
    dims: list[Dim]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.dims)

    def window(self, pick: dict[int, int]) -> torch.Tensor:
        """The window of the units at index ``pick[d]`` of the picked dims, all of the other dims together."""
        out = self.base.clone()
        for d, dim in enumerate(self.dims):
            out = out + (dim.rows[pick[d]] if d in pick else dim.union())
        return out


@dataclass
class Many:
    """An op that returns several tensors (max with indices, split, native batch norm)."""

    items: list[Geo | None]


@dataclass
class Lost:
    """The geometry could not be followed here: ``reason`` says where and why."""

    reason: str


State = Geo | Many | Lost | None


# ---- op families --------------------------------------------------------------------------------------------
# (NORMS, COPIES, ARITHMETIC, COMPARISONS, FACTORIES: the allowlist's own families, grader.graph)

# Also the NaN-ignoring spellings, which the allowlist refuses today: were it to allow them, max pooling
# written with them would still be seen.
SELECTIONS = {*ALLOWED_SELECTIONS, "fmax", "fmin"}
ELEMENTWISE = {
    *ACTIVATIONS,
    *DROPOUTS,
    *NORMS,
    *SELECTIONS,
    *COMPARISONS,
    *COPIES,
    *ARITHMETIC,
}
TUPLE_ELEMENTWISE = {
    "_native_batch_norm_legit_no_training",
    "native_batch_norm",
    "_native_batch_norm_legit",
    "native_group_norm",
    "native_layer_norm",
    "native_dropout",
}
MAX_REDUCTIONS = {"amax", "amin", "max", "min"}
OTHER_REDUCTIONS = {"mean", "sum", "logsumexp", "var", "std"}
RESHAPES = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "view_as"}
SHIFTS = {
    *RESHAPES,
    "squeeze",
    "squeeze_",
    "unsqueeze",
    "permute",
    "transpose",
    "t",
    "expand",
    "expand_as",
    "repeat",
    "slice",
    "select",
    "narrow",
    "split",
    "split_with_sizes",
    "chunk",
    "cat",
    "concat",
    "stack",
    "roll",
    "flip",
    "pad",
    "constant_pad_nd",
    "reflection_pad2d",
    "replication_pad2d",
    "pixel_shuffle",
    "pixel_unshuffle",
    "index_select",
    "clone",
    "contiguous",
    "alias",
    "detach",
    "_to_copy",
    "to",
    "lift_fresh_copy",
}
MATMULS = {"linear", "mm", "bmm", "matmul", "addmm"}
CONVS = {"conv2d", "conv1d", "convolution", "_convolution"}
POOLS = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "max_pool1d", "avg_pool1d"}
ADAPTIVE = {"adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d"}
NO_GEOMETRY = FACTORIES
PADS = {"pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d"}
UPSAMPLES = {"upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_bilinear2d", "pixel_shuffle"}


def _overload(node: Node) -> str:
    return node.target.partition("::")[2].partition(".")[2] or "default"


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Unfollowable(f"a size that is not a number ({str(v)[:40]})")
    return v


def _ints(v: Any, count: int, default: int) -> list[int]:
    """A per-dimension argument (int or list) as ``count`` ints."""
    if v is None or v == []:
        return [default] * count
    if isinstance(v, int) and not isinstance(v, bool):
        return [v] * count
    if isinstance(v, list) and len(v) == 1:
        return [_int(v[0])] * count
    if isinstance(v, list) and len(v) == count:
        return [_int(x) for x in v]
    raise Unfollowable(f"unexpected argument {str(v)[:40]}")


def _dim_index(d: Any, ndim: int) -> int:
    d = _int(d)
    if not -ndim <= d < max(ndim, 1):
        raise Unfollowable(f"dimension {d} of a {ndim}-d tensor")
    return d % max(ndim, 1)


def _refs(v: Any) -> list[str]:
    """Node names referenced anywhere in an argument."""
    if isinstance(v, dict):
        if "node" in v and len(v) == 1 and isinstance(v["node"], str):
            return [v["node"]]
        return [r for x in v.values() for r in _refs(x)]
    if isinstance(v, list):
        return [r for x in v for r in _refs(x)]
    return []


# ---- propagation ----------------------------------------------------------------------------------------


def propagate(graph: LoadedGraph) -> dict[str, State]:
    """The geometry of every node (None: does not depend on the image)."""
    states: dict[str, State] = {}
    users = {i.name for i in graph.inputs if i.kind == "user_input"}
    for node in graph.nodes:
        if node.op == "placeholder":
            states[node.name] = _image(node.shape or (1, *graph.input_shape)) if node.name in users else None
            continue
        if node.op != "call_function":
            continue
        if node.aten in NO_GEOMETRY:
            states[node.name] = None
            continue
        ins = [states.get(i) for i in node.inputs]
        if all(s is None for s in ins):
            states[node.name] = None
            continue
        lost = next((s for s in ins if isinstance(s, Lost)), None)
        if lost is not None:
            states[node.name] = lost
            continue
        try:
            states[node.name] = _step(graph, node, states)
        except Unfollowable as exc:
            states[node.name] = Lost(f"{node.where()}: {node.aten or node.target} {exc}")
        except (IndexError, ValueError, TypeError, KeyError, RuntimeError, ZeroDivisionError) as exc:
            states[node.name] = Lost(f"{node.where()}: {node.aten or node.target} could not be followed ({exc})")
    return states


def _image(shape: tuple[int, ...]) -> Geo:
    dims = [_constant_dim(n) for n in shape]
    if len(shape) >= 2:
        for d, col in ((-2, 0), (-1, 2)):
            rows = _zeros(shape[d])
            rows[:, col] = rows[:, col + 1] = torch.arange(shape[d])
            step = torch.zeros(4, dtype=torch.long)
            step[col] = step[col + 1] = 1
            dims[d] = Dim(rows, 1, step)
    return Geo(torch.zeros(4, dtype=torch.long), dims)


def _geo(states: dict[str, State], ref: Any) -> Geo | None:
    if isinstance(ref, dict) and isinstance(ref.get("node"), str):
        s = states.get(ref["node"])
        if isinstance(s, (Many, Lost)):
            raise Unfollowable("reads a value the geometry does not hold")
        return s
    return None


def _out_shape(node: Node) -> tuple[int, ...]:
    if node.shape is None:
        raise Unfollowable("has no measured shape")
    return node.shape


def _step(graph: LoadedGraph, node: Node, states: dict[str, State]) -> State:
    op = node.aten
    if node.target == "operator.getitem":
        src = states.get(node.inputs[0]) if node.inputs else None
        if isinstance(src, Many) and isinstance(node.args[1], int) and 0 <= node.args[1] < len(src.items):
            return src.items[node.args[1]]
        raise Unfollowable("indexes a value the geometry does not hold")
    if not op:
        raise Unfollowable("is not an aten op the geometry knows")
    overload = _overload(node)
    if op in ("max", "min") and overload == "other":
        return combine(_operands(node, states), _out_shape(node))
    if op in ELEMENTWISE:
        geo = combine(_operands(node, states), _out_shape(node))
        return Many([geo, None, None]) if op in TUPLE_ELEMENTWISE else geo
    if op in ("cat", "concat", "stack"):
        return _cat(graph, node, states)
    if op in MATMULS:
        return _matmul(node, states)
    x = _geo(states, arg(node, 0, "input"))
    if op in CONVS:
        return _conv(graph, node, x, states)
    if x is None:
        raise Unfollowable("reads the image through an argument the geometry does not follow")
    if op in POOLS:
        geo = _pool(node, x)
        return Many([geo, geo]) if op == "max_pool2d_with_indices" else geo
    if op in ADAPTIVE:
        geo = _adaptive(node, x)
        return Many([geo, geo]) if op == "adaptive_max_pool2d" else geo
    if op in MAX_REDUCTIONS or op in OTHER_REDUCTIONS:
        reduced = reduced_dims(node, len(x.dims))
        geo = _reduce(x, reduced, keep=len(_out_shape(node)) == len(x.dims) and len(x.dims) > 0)
        return Many([geo, geo]) if op in ("max", "min") and overload == "dim" else geo
    if op in ("softmax", "_softmax", "log_softmax", "_log_softmax"):
        d = _dim_index(arg(node, 1, "dim"), len(x.dims))
        dims = list(x.dims)
        dims[d] = Dim(dims[d].union().expand(dims[d].size, 4).clone(), 1, torch.zeros(4, dtype=torch.long))
        return Geo(x.base.clone(), dims)
    if op == "glu":
        return _glu(node, x)
    return _shape_op(graph, node, x, states)


def _operands(node: Node, states: dict[str, State]) -> list[Geo]:
    out = []
    for name in _refs(node.args) + _refs(node.kwargs):
        s = states.get(name)
        if isinstance(s, (Many, Lost)):
            raise Unfollowable("reads a value the geometry does not hold")
        if s is not None:
            out.append(s)
    return out


@dataclass
class _Aligned:
    const: torch.Tensor  # (4,): the window of unit 0
    rel: list[torch.Tensor]  # per output dim: rows relative to index 0
    hints: list[tuple[int, torch.Tensor | None]]


def _align(geo: Geo, shape: tuple[int, ...]) -> _Aligned:
    if len(geo.dims) > len(shape):
        raise Unfollowable("its operands do not broadcast")
    dims = [_constant_dim(1)] * (len(shape) - len(geo.dims)) + list(geo.dims)
    const = geo.base + sum((d.rows[0] for d in dims), torch.zeros(4, dtype=torch.long))
    rel, hints = [], []
    for d, n in zip(dims, shape, strict=True):
        if d.size == n:
            rel.append(d.rows - d.rows[0])
            hints.append((d.period, d.step))
        elif d.size == 1:
            rel.append(_zeros(n))
            hints.append((1, torch.zeros(4, dtype=torch.long)))
        else:
            raise Unfollowable("its operands do not broadcast")
    return _Aligned(const, rel, hints)


def _same_hint(hints: list[tuple[int, torch.Tensor | None]]) -> tuple[int, torch.Tensor | None] | None:
    first = hints[0]
    for h in hints[1:]:
        if h[0] != first[0] or h[1] is None or first[1] is None or not torch.equal(h[1], first[1]):
            return None
    return first


def combine(geos: list[Geo], shape: tuple[int, ...]) -> Geo:
    """An elementwise op on maps that depend on the image: each unit sees the union of what its operands see.

    Exact when the operands differ (beyond a constant shift) along one dimension at most; operands that
    differ along two (a map pooled over H x W and broadcast back over it) cannot be followed."""
    if not geos:
        raise Unfollowable("has no operand that depends on the image")
    al = [_align(g, shape) for g in geos]
    differ = [d for d in range(len(shape)) if any(not torch.equal(a.rel[d], al[0].rel[d]) for a in al[1:])]
    if len(differ) > 1:
        raise Unfollowable(
            "combines maps that differ along more than one dimension (a map pooled over H x W and broadcast "
            "back over it, or a map mixed with a transposed copy): each unit sees the whole image"
        )
    dims = []
    for d in range(len(shape)):
        if d in differ:
            rows = _hull(torch.stack([a.const + a.rel[d] for a in al]))
            dims.append(make_dim(rows, _same_hint([a.hints[d] for a in al])))
        else:
            hint = next((a.hints[d] for a in al if a.hints[d][1] is not None), al[0].hints[d])
            dims.append(make_dim(al[0].rel[d], hint))
    base = torch.zeros(4, dtype=torch.long) if differ else _hull(torch.stack([a.const for a in al]))
    return Geo(base, dims)


def shifted(geos: list[Geo], shape: tuple[int, ...]) -> bool:
    """Whether operands of an elementwise op are centred on different places (copies of a map shifted
    against each other), not merely windows of different sizes around the same place."""
    if len(geos) < 2:
        return False
    try:
        al = [_align(g, shape) for g in geos]
    except Unfollowable:
        return True
    first = al[0]
    for a in al[1:]:
        if not torch.equal(_centres(a.const), _centres(first.const)):
            return True
        if any(not torch.equal(_centres(r), _centres(f)) for r, f in zip(a.rel, first.rel, strict=True)):
            return True
    return False


def _matmul(node: Node, states: dict[str, State]) -> Geo:
    """``a @ b`` (linear, mm, bmm, matmul, addmm) where one side is weights: each output element sees all of
    the contracted dimension of the side that depends on the image."""
    out = _out_shape(node)
    if node.aten == "addmm":
        if _geo(states, arg(node, 0, "input")) is not None:
            raise Unfollowable("adds a bias computed from the image")
        a, b = _geo(states, arg(node, 1, "mat1")), _geo(states, arg(node, 2, "mat2"))
    elif node.aten == "linear":
        a, b = _geo(states, arg(node, 0, "input")), _geo(states, arg(node, 1, "weight"))
        if _geo(states, arg(node, 2, "bias")) is not None:
            raise Unfollowable("adds a bias computed from the image")
        if b is not None:
            raise Unfollowable("computes its weights from the image")
        b = None
    else:
        a, b = _geo(states, arg(node, 0, "input")), _geo(states, arg(node, 1, "other"))
    if (a is None) == (b is None):
        raise Unfollowable("multiplies two tensors that both depend on the image (attention): each unit sees all")
    if a is not None:
        if len(a.dims) < 2 or len(out) < 1:
            raise Unfollowable("has an operand of an unexpected rank")
        kept = a.dims[:-1]
        base = a.base + a.dims[-1].union()
        lead = [_constant_dim(n) for n in out[: len(out) - 1 - len(kept)]]
        return Geo(base, [*lead, *kept, _constant_dim(out[-1])])
    assert b is not None
    if len(b.dims) < 2 or len(out) < 2:
        raise Unfollowable("has an operand of an unexpected rank")
    kept = b.dims[:-2]
    base = b.base + b.dims[-2].union()
    lead = [_constant_dim(n) for n in out[: len(out) - 2 - len(kept)]]
    return Geo(base, [*lead, *kept, _constant_dim(out[-2]), b.dims[-1]])


def _window_dim(dim: Dim, kernel: int, stride: int, padding: int, dilation: int, out: int) -> Dim:
    """Unit ``o`` of a sliding window sees indices ``o*stride - padding + k*dilation`` of ``dim``."""
    index = torch.arange(out)[:, None] * stride - padding + torch.arange(kernel)[None, :] * dilation
    rows = _hull(dim.fetch(index.reshape(-1)).reshape(out, kernel, 4), 1)
    return make_dim(rows, _sampled_hint(dim, stride))


def _conv(graph: LoadedGraph, node: Node, x: Geo | None, states: dict[str, State]) -> Geo:
    if x is None or _geo(states, arg(node, 1, "weight")) is not None:
        raise Unfollowable("computes its weights from the image")
    by_name = graph.by_name()
    w_ref = arg(node, 1, "weight")
    w_node = by_name.get(w_ref["node"]) if isinstance(w_ref, dict) else None
    if w_node is None or w_node.shape is None or len(w_node.shape) < 3:
        raise Unfollowable("has a weight of unknown shape")
    kernel = list(w_node.shape[2:])
    k = len(kernel)
    if node.aten in ("conv2d", "conv1d"):
        stride, padding, dilation, groups = (
            arg(node, 3, "stride"),
            arg(node, 4, "padding"),
            arg(node, 5, "dilation"),
            arg(node, 6, "groups", 1),
        )
    else:
        if arg(node, 6, "transposed", False):
            raise Unfollowable("is a transposed convolution")
        stride, padding, dilation, groups = (
            arg(node, 3, "stride"),
            arg(node, 4, "padding"),
            arg(node, 5, "dilation"),
            arg(node, 8, "groups", 1),
        )
    strides, dilations = _ints(stride, k, 1), _ints(dilation, k, 1)
    if isinstance(padding, str):
        pads = [d * (kk - 1) // 2 for kk, d in zip(kernel, dilations, strict=True)] if padding == "same" else [0] * k
    else:
        pads = _ints(padding, k, 0)
    out = _out_shape(node)
    if len(x.dims) not in (k + 1, k + 2) or len(out) != len(x.dims):
        raise Unfollowable("has an input of an unexpected rank")
    ch = len(x.dims) - k - 1
    dims = list(x.dims)
    for t in range(k):
        d = ch + 1 + t
        dims[d] = _window_dim(dims[d], kernel[t], strides[t], pads[t], dilations[t], out[d])
    g = _int(groups or 1)
    cin, cout = dims[ch].size, out[ch]
    if cin % g or cout % g:
        raise Unfollowable("has groups that do not divide its channels")
    per_in, per_out = cin // g, cout // g
    parts = [_hull(dims[ch].rows[i * per_in : (i + 1) * per_in]).expand(per_out, 4) for i in range(g)]
    rows = torch.cat(parts)
    dims[ch] = make_dim(rows)
    return Geo(x.base.clone(), dims)


def _pool(node: Node, x: Geo) -> Geo:
    k = 1 if node.aten.endswith("1d") else 2
    kernel = _ints(arg(node, 1, "kernel_size"), k, 1)
    stride_raw = arg(node, 2, "stride")
    strides = kernel if stride_raw in (None, []) else _ints(stride_raw, k, 1)
    pads = _ints(arg(node, 3, "padding", 0), k, 0)
    dilations = _ints(arg(node, 4, "dilation", 1), k, 1) if node.aten.startswith("max") else [1] * k
    out = _out_shape(node)
    if len(x.dims) < k + 1 or len(out) != len(x.dims):
        raise Unfollowable("has an input of an unexpected rank")
    dims = list(x.dims)
    for t in range(k):
        d = len(dims) - k + t
        dims[d] = _window_dim(dims[d], kernel[t], strides[t], pads[t], dilations[t], out[d])
    return Geo(x.base.clone(), dims)


def _adaptive(node: Node, x: Geo) -> Geo:
    out = _out_shape(node)
    if len(x.dims) < 3 or len(out) != len(x.dims):
        raise Unfollowable("has an input of an unexpected rank")
    dims = list(x.dims)
    for d in (len(dims) - 2, len(dims) - 1):
        n, m = dims[d].size, out[d]
        starts = [(o * n) // m for o in range(m)]
        ends = [-((-(o + 1) * n) // m) for o in range(m)]
        rows = torch.stack([_hull(dims[d].rows[s:e]) for s, e in zip(starts, ends, strict=True)])
        hint = _sampled_hint(dims[d], n // m) if n % m == 0 else None
        dims[d] = make_dim(rows, hint)
    return Geo(x.base.clone(), dims)


def reduced_dims(node: Node, ndim: int) -> list[int]:
    """The dimensions a reduction (mean, sum, amax, max.dim, var, ...) reduces."""
    if _overload(node) == "default" and node.aten in ("max", "min", "mean", "sum"):
        return list(range(ndim))
    dims = arg(node, 1, "dim")
    if dims is None or dims == []:
        return list(range(ndim))
    if not isinstance(dims, list):
        dims = [dims]
    return sorted({_dim_index(d, ndim) for d in dims})


def _reduce(x: Geo, dims: list[int], keep: bool) -> Geo:
    base = x.base.clone()
    out = []
    for d, dim in enumerate(x.dims):
        if d in dims:
            base = base + dim.union()
            if keep:
                out.append(_constant_dim(1))
        else:
            out.append(dim)
    return Geo(base, out)


def _glu(node: Node, x: Geo) -> Geo:
    d = _dim_index(arg(node, 1, "dim", -1), len(x.dims))
    dims = list(x.dims)
    half = dims[d].size // 2
    rows = _hull(torch.stack([dims[d].rows[:half], dims[d].rows[half : 2 * half]]))
    dims[d] = make_dim(rows, (dims[d].period, dims[d].step))
    return Geo(x.base.clone(), dims)


# ---- shape ops ----------------------------------------------------------------------------------------------


def _shape_op(graph: LoadedGraph, node: Node, x: Geo, states: dict[str, State]) -> State:
    op = node.aten
    nd = len(x.dims)
    if op in ("split", "split_with_sizes", "chunk"):
        return _split(node, x)
    out = _out_shape(node)
    if op in RESHAPES:
        return reshape(x, _out_shape(node))
    if op in ("squeeze", "squeeze_", "unsqueeze", "expand", "expand_as", "permute", "transpose", "t"):
        return _rearrange(node, x)
    if op == "repeat":
        reps = [_int(r) for r in arg(node, 1, "repeats")]
        dims = [_constant_dim(1)] * (len(reps) - nd) + list(x.dims)
        new = []
        for dim, r in zip(dims, reps, strict=True):
            rows = dim.rows.repeat(r, 1)
            new.append(dim if r == 1 else make_dim(rows, (dim.size, torch.zeros(4, dtype=torch.long))))
        return Geo(x.base.clone(), new)
    if op in ("slice", "narrow"):
        d = _dim_index(arg(node, 1, "dim", 0), nd)
        dim = x.dims[d]
        n, m = dim.size, _out_shape(node)[d]
        if op == "slice":
            start, step = arg(node, 2, "start"), arg(node, 4, "step", 1)
        else:
            start, step = arg(node, 2, "start"), 1
        if not dim.varies() and dim.step is not None and not bool(dim.step.any()):
            return _replace(x, d, Dim(dim.rows[:1].expand(m, 4).clone(), 1, dim.step))
        start = 0 if start is None else _int(start)
        start = min(max(start + n if start < 0 else start, 0), n)
        step = _int(step)
        rows = dim.rows[start + torch.arange(m) * step] if m else _zeros(0)
        return _replace(x, d, make_dim(rows, _sampled_hint(dim, step)))
    if op == "select":
        d = _dim_index(arg(node, 1, "dim"), nd)
        at = _int(arg(node, 2, "index"))
        dim = x.dims[d]
        at = at + dim.size if at < 0 else at
        return Geo(x.base + dim.rows[at], [dm for i, dm in enumerate(x.dims) if i != d])
    if op == "index_select":
        d = _dim_index(arg(node, 1, "dim"), nd)
        if x.dims[d].varies():
            raise Unfollowable("picks indices of a spatial dimension from a tensor")
        return _replace(x, d, Dim(x.dims[d].rows[:1].expand(_out_shape(node)[d], 4).clone(), 1, x.dims[d].step))
    if op == "roll":
        shifts, rdims = arg(node, 1, "shifts"), arg(node, 2, "dims", [])
        shifts = [shifts] if isinstance(shifts, int) else shifts
        rdims = [rdims] if isinstance(rdims, int) else rdims
        if not rdims:
            raise Unfollowable("rolls the flattened tensor")
        geo = x
        for s, d in zip(shifts, rdims, strict=True):
            d = _dim_index(d, nd)
            dim = geo.dims[d]
            index = torch.arange(dim.size) - _int(s)
            try:
                rows = dim.fetch(index)  # the shifted copy, the map continued past its edge
            except Unfollowable:
                rows = dim.rows.roll(_int(s), 0)
            geo = _replace(geo, d, make_dim(rows, (dim.period, dim.step)))
        return geo
    if op == "flip":
        geo = x
        for d in arg(node, 1, "dims"):
            d = _dim_index(d, nd)
            dim = geo.dims[d]
            geo = _replace(geo, d, make_dim(dim.rows.flip(0), (dim.period, None if dim.step is None else -dim.step)))
        return geo
    if op in ("pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d"):
        pads = [_int(p) for p in arg(node, 1, "pad")]
        geo = x
        for i in range(len(pads) // 2):
            d = nd - 1 - i
            dim = geo.dims[d]
            index = torch.arange(out[d]) - pads[2 * i]
            geo = _replace(geo, d, make_dim(dim.fetch(index), (dim.period, dim.step)))
        return geo
    if op in ("pixel_shuffle", "pixel_unshuffle"):
        return _pixel_shuffle(node, x)
    if op in ("upsample_nearest2d", "_upsample_nearest_exact2d"):
        dims = list(x.dims)
        for d in (nd - 2, nd - 1):
            n, m = dims[d].size, out[d]
            if m % n:
                raise Unfollowable("upsamples by a factor that is not a whole number")
            f = m // n
            rows = dims[d].rows.repeat_interleave(f, 0)
            dims[d] = make_dim(rows, (dims[d].period * f, dims[d].step))
        return Geo(x.base.clone(), dims)
    raise Unfollowable("is not an op the geometry knows")


def _replace(x: Geo, d: int, dim: Dim) -> Geo:
    dims = list(x.dims)
    dims[d] = dim
    return Geo(x.base.clone(), dims)


def _rearrange(node: Node, x: Geo) -> Geo:
    op, nd = node.aten, len(x.dims)
    dims = list(x.dims)
    if op in ("squeeze", "squeeze_"):
        which = arg(node, 1, "dim")
        if which is None:
            which = list(range(nd))
        which = [which] if isinstance(which, int) else which
        drop = {_dim_index(d, nd) for d in which if dims[_dim_index(d, nd)].size == 1}
        base = x.base + sum((dims[d].rows[0] for d in drop), torch.zeros(4, dtype=torch.long))
        return Geo(base, [dm for i, dm in enumerate(dims) if i not in drop])
    if op == "unsqueeze":
        d = _int(arg(node, 1, "dim"))
        d = d + nd + 1 if d < 0 else d
        return Geo(x.base.clone(), [*dims[:d], _constant_dim(1), *dims[d:]])
    if op in ("expand", "expand_as"):
        out = _out_shape(node)
        dims = [_constant_dim(1)] * (len(out) - nd) + dims
        new = []
        for dim, n in zip(dims, out, strict=True):
            if dim.size == n:
                new.append(dim)
            elif dim.size == 1:
                new.append(Dim(dim.rows.expand(n, 4).clone(), 1, torch.zeros(4, dtype=torch.long)))
            else:
                raise Unfollowable("expands a dimension that is not of size 1")
        return Geo(x.base.clone(), new)
    if op == "permute":
        order = [_dim_index(d, nd) for d in arg(node, 1, "dims")]
        return Geo(x.base.clone(), [dims[d] for d in order])
    if op == "t":
        return Geo(x.base.clone(), dims[::-1])
    a, b = _dim_index(arg(node, 1, "dim0"), nd), _dim_index(arg(node, 2, "dim1"), nd)
    dims[a], dims[b] = dims[b], dims[a]
    return Geo(x.base.clone(), dims)


def reshape(x: Geo, shape: tuple[int, ...]) -> Geo:
    """A reshape (row-major): each group of old dimensions whose sizes multiply to those of a group of new
    ones is flattened and split again; exact where the new dimensions add up to the old windows."""
    old = [d.size for d in x.dims]
    new = list(shape)
    if 0 in old or 0 in new or math.prod(old) != math.prod(new):
        raise Unfollowable(f"reshapes {old} to {new}")
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(old) and j < len(new):
        oi, nj, po, pn = [i], [j], old[i], new[j]
        i, j = i + 1, j + 1
        while po != pn:
            if po < pn:
                oi.append(i)
                po *= old[i]
                i += 1
            else:
                nj.append(j)
                pn *= new[j]
                j += 1
        groups.append((oi, nj))
    groups += [([k], []) for k in range(i, len(old))] + [([], [k]) for k in range(j, len(new))]
    base = x.base.clone()
    dims: list[Dim] = []
    for oi, nj in groups:
        if len(oi) == 1 and len(nj) == 1:
            dims.append(x.dims[oi[0]])
            continue
        flat = _zeros(1)
        for q in oi:
            flat = (flat[:, None, :] + x.dims[q].rows[None, :, :]).reshape(-1, 4)
            if flat.shape[0] > _MAX_GROUP:
                raise Unfollowable("flattens too large a group of dimensions")
        if not nj:
            base = base + flat[0]
            continue
        sizes = [old[q] for q in oi]
        periods = [math.prod(sizes[k:]) for k in range(1, len(sizes) + 1)]
        hint = (x.dims[oi[0]].period, x.dims[oi[0]].step) if len(oi) == 1 else None
        virtual = make_dim(flat, hint, sorted(set(periods)) if len(oi) > 1 else None)
        base = base + flat[0]
        parts = []
        for r, q in enumerate(nj):
            stride = math.prod(new[k] for k in nj[r + 1 :])
            rows = virtual.rows[torch.arange(new[q]) * stride] - flat[0]
            parts.append(make_dim(rows, _sampled_hint(virtual, stride)))
        total = _zeros(1)
        for dim in parts:
            total = (total[:, None, :] + dim.rows[None, :, :]).reshape(-1, 4)
        if not torch.equal(total, flat - flat[0]):
            raise Unfollowable("reshapes so that a dimension mixes places of the map irregularly")
        dims += parts
    return Geo(base, dims)


def _split(node: Node, x: Geo) -> Many:
    op, nd = node.aten, len(x.dims)
    d = _dim_index(arg(node, 2, "dim", 0), nd)
    n = x.dims[d].size
    if op == "split_with_sizes":
        sizes = [_int(s) for s in arg(node, 1, "split_sizes")]
    elif op == "split":
        size = _int(arg(node, 1, "split_size"))
        sizes = [min(size, n - s) for s in range(0, n, size)]
    else:
        chunks = _int(arg(node, 1, "chunks"))
        size = -(-n // chunks)
        sizes = [min(size, n - s) for s in range(0, n, size)]
    items: list[Geo | None] = []
    start = 0
    dim = x.dims[d]
    for s in sizes:
        items.append(_replace(x, d, make_dim(dim.rows[start : start + s], (dim.period, dim.step))))
        start += s
    return Many(items)


def _cat(graph: LoadedGraph, node: Node, states: dict[str, State]) -> Geo:
    out = _out_shape(node)
    refs = arg(node, 0, "tensors")
    d = _dim_index(arg(node, 1, "dim", 0), len(out))
    parts: list[tuple[Geo | None, int]] = []
    for ref in refs:
        g = _geo(states, ref)
        size = 1
        if g is not None and node.aten == "stack":
            g = Geo(g.base.clone(), [*g.dims[:d], _constant_dim(1), *g.dims[d:]])
        if g is not None:
            size = g.dims[d].size
        elif node.aten != "stack":
            other = (
                graph.by_name()[ref["node"]].shape
                if isinstance(ref, dict) and ref.get("node") in graph.by_name()
                else None
            )
            size = other[d] if other is not None and len(other) == len(out) else -1
        parts.append((g, size))
    geos = [g for g, _ in parts if g is not None]
    if not geos or any(size < 0 for _, size in parts):
        raise Unfollowable("concatenates tensors of unknown size")
    shape_wo = list(out)
    al = []
    for g in geos:
        shape_wo[d] = g.dims[d].size
        al.append(_align(g, tuple(shape_wo)))
    others = [k for k in range(len(out)) if k != d]
    if any(not torch.equal(a.rel[k], al[0].rel[k]) for a in al[1:] for k in others):
        raise Unfollowable("concatenates maps whose other dimensions see different places")
    rows = []
    it = iter(al)
    for g, size in parts:
        if g is None:
            rows.append(al[0].const.expand(size, 4))
        else:
            a = next(it)
            rows.append(a.const + a.rel[d])
    dims = [make_dim(al[0].rel[k], al[0].hints[k]) for k in range(len(out))]
    dims[d] = make_dim(torch.cat(rows))
    return Geo(torch.zeros(4, dtype=torch.long), dims)


def _pixel_shuffle(node: Node, x: Geo) -> Geo:
    r = _int(arg(node, 1, "upscale_factor" if node.aten == "pixel_shuffle" else "downscale_factor"))
    *lead, c, h, w = x.shape
    if node.aten == "pixel_shuffle":
        g = reshape(x, (*lead, c // (r * r), r, r, h, w))
        k = len(lead)
        g = Geo(g.base, [*g.dims[: k + 1], g.dims[k + 3], g.dims[k + 1], g.dims[k + 4], g.dims[k + 2]])
        return reshape(g, (*lead, c // (r * r), h * r, w * r))
    g = reshape(x, (*lead, c, h // r, r, w // r, r))
    k = len(lead)
    g = Geo(g.base, [*g.dims[: k + 1], g.dims[k + 2], g.dims[k + 4], g.dims[k + 1], g.dims[k + 3]])
    return reshape(g, (*lead, c * r * r, h // r, w // r))


# ---- reading a map ----------------------------------------------------------------------------------------


def _axes_varied(dim: Dim) -> set[int]:
    c = _centres(dim.rows)
    return {a for a in (0, 1) if bool((c[:, a] != c[0, a]).any())}


def rf_of(geo: Geo) -> tuple[int, int]:
    """(RF, jump) of a map (N, C, *spatial): the window of its centre unit, all its channels together,
    along the wider axis; the jump is the larger spacing of neighbouring units, in input pixels."""
    pick = {d: geo.dims[d].size // 2 for d in range(2, len(geo.dims))}
    w = geo.window(pick)
    return max(int(w[1] - w[0]) + 1, int(w[3] - w[2]) + 1), _jump(geo)


def _jump(geo: Geo) -> int:
    best = 0
    for d in range(2, len(geo.dims)):
        spacing = geo.dims[d].spacing()
        if spacing is not None:
            best = max(best, *spacing)
    return best or 1


def _axis_geometry(geo: Geo) -> list[tuple[int, int, int]]:
    """Per axis (H, W): the lower and upper end of unit 0's window and the spacing of the units (0: unknown)."""
    w = geo.window({d: 0 for d in range(2, len(geo.dims))})
    out = []
    for a in (0, 1):
        jump = 0
        for d in range(2, len(geo.dims)):
            spacing = geo.dims[d].spacing()
            if spacing is not None and spacing[a] > 0:
                jump = spacing[a]
                break
        out.append((int(w[2 * a]), int(w[2 * a + 1]), jump))
    return out


# ---- pooling and downsampling however they are written ------------------------------------------------------


@dataclass
class HandWritten:
    """A window or a downsampling computed by ops that are not a pooling layer or a convolution."""

    node: Node  # the op that completes it
    kind: str  # maxpool | avgpool | global_max | resample
    via: list[Node]  # the selections/reductions that compute it (for resample: the ops that shrink the map)
    origin: Node | None  # the map it reads
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    ops: list[str] = field(default_factory=list)  # the aten ops that compute it, in graph order


def window_kind(node: Node, states: dict[str, State]) -> str | None:
    """'max' for a max (or min) over places of the map, 'avg' for another reduction over part of H or W."""
    op = node.aten
    if node.op != "call_function" or not op:
        return None
    overload = _overload(node)
    if op in SELECTIONS or (op in ("max", "min") and overload == "other"):
        try:
            if op == "where":
                if not _operands_of(states, [arg(node, 0, "condition")]):
                    return None  # a fixed mask: not a comparison of the values
                values = _operands_of(states, [arg(node, 1, "self"), arg(node, 2, "other")])
            else:
                values = _operands_of(states, list(node.args) + list(node.kwargs.values()))
            return "max" if node.shape is not None and shifted(values, node.shape) else None
        except Unfollowable:
            return None
    if op in MAX_REDUCTIONS or op in OTHER_REDUCTIONS:
        x = states.get(node.inputs[0]) if node.inputs else None
        if not isinstance(x, Geo):
            return None
        try:
            dims = reduced_dims(node, len(x.dims))
        except Unfollowable:
            return None
        reduced = {a for d in dims for a in _axes_varied(x.dims[d])}
        if not reduced:
            return None
        if op in MAX_REDUCTIONS:
            return "max"
        kept = {a for d in range(len(x.dims)) if d not in dims for a in _axes_varied(x.dims[d])}
        return "avg" if reduced & kept else None  # over all of H or W it is global pooling, not a window
    return None


def _operands_of(states: dict[str, State], values: list[Any]) -> list[Geo]:
    out = []
    for name in _refs(values):
        s = states.get(name)
        if isinstance(s, Geo):
            out.append(s)
        elif s is not None:
            raise Unfollowable("reads a value the geometry does not hold")
    return out


def _map_like(node: Node, state: State) -> bool:
    """A 4-D tensor laid out N, C, H, W (not channels last, not a split of H or W)."""
    if node.shape is None or len(node.shape) != 4 or state is None or isinstance(state, Many):
        return False
    if isinstance(state, Lost):
        return True
    return all(state.dims[d].size == 1 or bool(_axes_varied(state.dims[d])) for d in (2, 3))


def _passes_through(node: Node) -> bool:
    """Shape ops (slices, pads, reshapes, rolls, tuple items) and upsampling: the map they make is compared
    with the one before them, not used as the size to compare with (a pad then a crop is no downsampling)."""
    return node.aten in SHIFTS or node.aten in UPSAMPLES or node.aten in PADS or node.target == "operator.getitem"


def shrinking(graph: LoadedGraph, states: dict[str, State], known: set[str]) -> set[str]:
    """Nodes outside ``known`` (the conv/pool layers) whose N, C, H, W map is smaller in H or W than the
    nearest map they are computed from: downsampling by something that is not a convolution."""
    by_name = graph.by_name()
    nearest: dict[str, set[str]] = {}
    out = set()
    for node in graph.nodes:
        state = states.get(node.name)
        if state is None:
            continue
        ancestors = set().union(*(nearest.get(i, set()) for i in node.inputs if states.get(i) is not None))
        nearest[node.name] = ancestors
        if not _map_like(node, state) or node.shape is None:
            continue
        if node.op == "call_function" and node.name not in known:
            h, w = node.shape[2], node.shape[3]
            for a in ancestors:
                shape = by_name[a].shape
                if shape is not None and (shape[2] > h or shape[3] > w):
                    out.add(node.name)
                    break
        if not _passes_through(node):
            nearest[node.name] = {node.name}
    return out


def hand_written(graph: LoadedGraph, states: dict[str, State], known: set[str]) -> list[HandWritten]:
    """Max/average pooling written with other ops, and other downsampling without a convolution, one entry
    per group of ops that together compute one window (the slices and the maxima of a hand-written 2x2 pool)."""
    by_name = graph.by_name()
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    windows = {n.name: k for n in graph.nodes if n.name not in known and (k := window_kind(n, states))}
    shrinks = shrinking(graph, states, known) - set(windows)
    seeds = [n.name for n in graph.nodes if n.name in windows or n.name in shrinks]
    parent = {s: s for s in seeds}

    def root(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    def shape_op(n: Node) -> bool:
        return n.aten in SHIFTS or n.target == "operator.getitem"

    def single(n: Node) -> bool:
        return n.aten in ELEMENTWISE and sum(1 for i in n.inputs if isinstance(states.get(i), Geo)) == 1

    members: dict[str, set[str]] = {}
    origins: dict[str, list[str]] = {}
    owner: dict[str, str] = {}  # a slice/reshape between the map and the window -> a seed that reached it
    for seed in seeds:
        seen, stack, boundary = {seed}, [seed], []
        while stack:
            for i in by_name[stack.pop()].inputs:
                m = by_name.get(i)
                if m is None or i in seen or not isinstance(states.get(i), (Geo, Many)):
                    continue
                seen.add(i)
                walk = m.op == "call_function" and i not in known
                if walk and (i in parent or shape_op(m) or m.aten in COMPARISONS or single(m)):
                    stack.append(i)
                else:
                    boundary.append(i)
        shared = {i for i in seen if i in parent or shape_op(by_name[i])}
        members[seed] = shared
        origins[seed] = boundary
        for i in shared:
            if i in parent:
                parent[root(i)] = root(seed)
            elif i in owner:
                parent[root(owner[i])] = root(seed)
            else:
                owner[i] = seed
    groups: dict[str, list[str]] = {}
    for s in seeds:
        groups.setdefault(root(s), []).append(s)
    out = []
    for group in groups.values():
        names = sorted(set().union(*(members[s] for s in group)), key=order.__getitem__)
        wins = [s for s in group if s in windows]
        via = sorted(wins or group, key=order.__getitem__)
        node = by_name[max(group, key=order.__getitem__)]  # its last op: a max then a strided slice is one pool
        sources = sorted({o for s in group for o in origins[s]} - set(names), key=order.__getitem__)
        maps = [o for o in sources if _map_like(by_name[o], states.get(o))]
        origin = by_name[(maps or sources)[0]] if (maps or sources) else None
        if any(windows[s] == "max" for s in wins):
            out_state = states.get(node.name)
            flat = isinstance(out_state, Geo) and not any(_axes_varied(d) for d in out_state.dims)
            kind = "global_max" if flat else "maxpool"
        else:
            kind = "avgpool" if wins else "resample"
        found = HandWritten(
            node, kind, [by_name[v] for v in via], origin, ops=list(dict.fromkeys(by_name[n].aten for n in names))
        )
        _fill_geometry(found, states)
        out.append(found)
    return sorted(out, key=lambda f: order[f.node.name])


def hw_of(node: Node | None) -> tuple[int, int]:
    shape = node.shape if node is not None else None
    if shape is None:
        return (0, 0)
    return (shape[2] if len(shape) > 2 else 1, shape[3] if len(shape) > 3 else 1)


def _fill_geometry(found: HandWritten, states: dict[str, State]) -> None:
    in_hw, out_hw = hw_of(found.origin), hw_of(found.node)
    if found.kind == "global_max":
        found.kernel = found.stride = in_hw
        return
    stride = [max(1, i // max(1, o)) for i, o in zip(in_hw, out_hw, strict=True)]
    kernel, padding = list(stride if found.kind != "resample" else (1, 1)), [0, 0]
    src = states.get(found.origin.name) if found.origin is not None else None
    dst = states.get(found.node.name)
    if isinstance(src, Geo) and isinstance(dst, Geo) and len(src.dims) > 2 and len(dst.dims) > 2:
        for a, ((lo_s, hi_s, j_s), (lo_d, hi_d, j_d)) in enumerate(
            zip(_axis_geometry(src), _axis_geometry(dst), strict=True)
        ):
            if j_s > 0:
                kernel[a] = max(1, ((hi_d - lo_d) - (hi_s - lo_s)) // j_s + 1)
                padding[a] = max(0, (lo_s - lo_d) // j_s)
                if j_d > 0:
                    stride[a] = max(1, j_d // j_s)
    found.kernel, found.stride, found.padding = (kernel[0], kernel[1]), (stride[0], stride[1]), (padding[0], padding[1])
