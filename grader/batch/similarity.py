"""Same-architecture leads: groups of submissions whose model graphs (nearly) match.

Trusted side.

A fingerprint is the sequence of the graph's convolutions, poolings and linear layers with their shapes
and hyperparameters (kernel, stride, padding, dilation, groups, channels, output size), plus the
transform pipeline's own config. The graph alone decides a group: identical layer sequences form one,
sequences within a small edit distance join it as near-identical. Matching transforms are a further
signal shown beside the group (``transforms_match``), never a condition, since a pipeline that could
not be analysed must not hide a pair. A lead for the TA (many students start from the same class
notes), never a verdict: the index page says so.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from typing import Any

CONV = {"aten::conv2d.default", "aten::conv2d.padding", "aten::convolution.default", "aten::_convolution.default"}
POOLS = {
    "aten::max_pool2d.default": "maxpool",
    "aten::max_pool2d_with_indices.default": "maxpool",
    "aten::avg_pool2d.default": "avgpool",
    "aten::adaptive_avg_pool2d.default": "gap",
    "aten::_adaptive_avg_pool2d.default": "gap",
    "aten::adaptive_max_pool2d.default": "gmp",
    "aten::mean.dim": "mean",
}
LINEAR = {"aten::linear.default", "aten::addmm.default"}
MIN_LAYERS_FOR_NEAR = 4  # two tiny nets one layer apart say nothing


@dataclass(frozen=True)
class Fingerprint:
    layers: tuple[str, ...]
    transforms: str  # a short hash of the canonical transform config ("none" when there was none)

    @property
    def key(self) -> str:
        """The graph's key: the transforms are not part of it."""
        return hashlib.sha256(json.dumps(list(self.layers)).encode()).hexdigest()[:12]


def fingerprint(graph: dict | None, transforms: dict | None) -> Fingerprint | None:
    """The submission's fingerprint, or None without a graph (the model did not build)."""
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        return None
    layers = layer_tokens(graph)
    if not layers:
        return None
    return Fingerprint(tuple(layers), transforms_key(transforms))


def layer_tokens(graph: dict) -> list[str]:
    """One token per conv / pool / linear node, in execution order."""
    shapes = {n.get("name"): n.get("shape") for n in graph["nodes"] if isinstance(n, dict)}
    tokens = []
    for node in graph["nodes"]:
        if not isinstance(node, dict) or node.get("op") != "call_function":
            continue
        target = str(node.get("target"))
        args = node.get("args") or []
        out = node.get("shape") or []
        size = "x".join(str(s) for s in out[2:]) if len(out) > 2 else ""
        if target in CONV:
            tokens.append(_conv_token(target, args, shapes, size))
        elif target in POOLS:
            kind = POOLS[target]
            padded = [*args, None, None, None]
            params = f" k{_ints(padded[1])} s{_ints(padded[2])}" if kind in ("maxpool", "avgpool") else ""
            tokens.append(f"{kind}{params} ->{size}")
        elif target in LINEAR:
            weight = (
                shapes.get(_ref(args[1] if target.endswith("linear.default") else args[2])) if len(args) > 1 else None
            )
            tokens.append(f"fc {'x'.join(map(str, weight or []))}")
    return tokens


def _conv_token(target: str, args: list, shapes: dict, size: str) -> str:
    weight = shapes.get(_ref(args[1])) if len(args) > 1 else None
    padded = [*args, *([None] * 9)]
    if target.startswith("aten::conv2d"):  # conv2d(input, weight, bias, stride, padding, dilation, groups)
        stride, padding, dilation, groups = padded[3:7]
    else:  # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
        stride, padding, dilation, groups = padded[3], padded[4], padded[5], padded[8]
    cout, cin_g, *kernel = weight if isinstance(weight, list) and len(weight) >= 3 else (0, 0, 0)
    groups = groups or 1
    return (
        f"conv {'x'.join(map(str, kernel))} s{_ints(stride, 1)} p{_ints(padding, 0)} d{_ints(dilation, 1)} "
        f"g{groups} {cin_g * groups}->{cout} ->{size}"
    )


def _ref(arg: Any) -> str | None:
    return arg.get("node") if isinstance(arg, dict) else None


def _ints(value: Any, default: int | None = None) -> str:
    if value is None or value == []:
        return str(default) if default is not None else "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if len(set(map(str, value))) > 1 else str(value[0])
    return str(value)


def transforms_key(transforms: dict | None) -> str:
    """A hash of the transform pipeline's config, without the albumentations version, floats rounded."""
    if not transforms:
        return "none"
    config = transforms.get("transform", transforms) if isinstance(transforms, dict) else transforms
    canonical = json.dumps(_canonical(config), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if k != "__version__"}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


def edit_distance(a: tuple[str, ...], b: tuple[str, ...], limit: int) -> int:
    """Levenshtein distance over tokens, stopping early once every path exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def group_similar(prints: dict[str, Fingerprint | None], max_edits: int = 2) -> list[dict]:
    """Groups (two students or more) of identical or near-identical fingerprints, largest first.

    Each group: ``id`` (A, B, ...), ``kind`` (identical when every member's fingerprint is the same),
    ``students``, ``layers`` (how many), ``max_edits`` (largest distance to the group's first member).
    """
    known = {s: fp for s, fp in prints.items() if fp is not None}
    by_key: dict[str, list[str]] = {}
    for student, fp in sorted(known.items()):
        by_key.setdefault(fp.key, []).append(student)
    parent = {key: key for key in by_key}

    def find(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    reps = {key: known[members[0]] for key, members in by_key.items()}
    keys = sorted(reps)
    for i, ka in enumerate(keys):
        a = reps[ka]
        if len(a.layers) < MIN_LAYERS_FOR_NEAR:
            continue
        for kb in keys[i + 1 :]:
            b = reps[kb]
            if len(b.layers) < MIN_LAYERS_FOR_NEAR:
                continue
            if edit_distance(a.layers, b.layers, max_edits) <= max_edits:
                parent[find(kb)] = find(ka)
    clusters: dict[str, list[str]] = {}
    for key in keys:
        clusters.setdefault(find(key), []).append(key)
    groups: list[dict[str, Any]] = []
    for members_keys in clusters.values():
        students = sorted(s for k in members_keys for s in by_key[k])
        if len(students) < 2:
            continue
        first = reps[members_keys[0]]
        distance = max(edit_distance(first.layers, reps[k].layers, 99) for k in members_keys)
        groups.append(
            {
                "kind": "identical" if len(members_keys) == 1 else "near-identical",
                "students": students,
                "layers": len(first.layers),
                "max_edits": distance,
                "transforms": first.transforms,
                "transforms_match": _transforms_match([known[s].transforms for s in students]),
            }
        )
    groups.sort(key=lambda g: (-len(g["students"]), g["students"]))
    for n, group in enumerate(groups):
        group["id"] = _label(n)
    return groups


def _transforms_match(pipelines: list[str]) -> str:
    """all | some | differ among the analysed pipelines; unknown when some could not be analysed and
    the others agree (a missing pipeline hides nothing: the graph made the group)."""
    analysed = [t for t in pipelines if t != "none"]
    distinct = len(set(analysed))
    if len(analysed) < len(pipelines) and distinct <= 1:
        return "unknown"
    if distinct == 1:
        return "all"
    return "differ" if distinct == len(analysed) else "some"


def _label(n: int) -> str:
    letters = string.ascii_uppercase
    return letters[n] if n < 26 else letters[n // 26 - 1] + letters[n % 26]
