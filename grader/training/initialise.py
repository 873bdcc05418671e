"""Trusted side: the grader's own initial values for every parameter of the graph it trains.

The student's initial values are never used: a submission could start from weights trained elsewhere,
or carry the public test set in a parameter. Each parameter gets PyTorch's default for the role the
graph gives it (read from the op that consumes it), drawn from a generator seeded by the course:

    conv / linear weight   kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))   (nn.Conv2d, nn.Linear)
    conv / linear bias     U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in of the weight it goes with
    norm weight / bias     1 / 0                                 (BatchNorm, LayerNorm, GroupNorm)
    PReLU weight           0.25                                  (nn.PReLU)
    anything else          a weight-like tensor (2-D or more) as a linear weight; a vector or scalar
                           that multiplies or divides: 1; one that is added or subtracted: 0

BatchNorm's running statistics start at mean 0, variance 1, counter 0 (nn.BatchNorm2d's reset). Other
buffers and constants keep their values: the hidden-data rule bounds them to a few numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from grader.analysis.tensors import bn_counters, bn_statistics
from grader.graph import LoadedGraph, Node, RebuiltModel, attribute_name

CONV_OPS = {"conv2d", "convolution", "_convolution", "conv1d"}
NORM_OPS = {
    "batch_norm": (1, 2),
    "native_batch_norm": (1, 2),
    "_native_batch_norm_legit": (1, 2),
    "_native_batch_norm_legit_no_training": (1, 2),
    "layer_norm": (2, 3),
    "native_layer_norm": (2, 3),
    "group_norm": (2, 3),
    "native_group_norm": (1, 2),
    "instance_norm": (1, 2),
}
# Ops through which a parameter reaches its consumer unchanged in role (addmm takes t(weight)).
PASS_THROUGH = {"t", "transpose", "permute", "view", "reshape", "_to_copy", "to", "type_as", "contiguous", "alias"}
MULTIPLIES = {"mul", "mul_", "div", "div_"}
ADDS = {"add", "add_", "sub", "sub_", "rsub"}


@dataclass
class Role:
    """How one parameter is initialised, and why (shown in the training facts)."""

    target: str
    role: str  # 'conv weight', 'linear bias', 'norm weight', ...
    fan_in: int = 0


def _ref(node: Node, index: int) -> str | None:
    value = node.args[index] if index < len(node.args) else None
    return value["node"] if isinstance(value, dict) and isinstance(value.get("node"), str) else None


def parameter_roles(graph: LoadedGraph) -> dict[str, Role]:
    """The role of every floating-point parameter, from the first op that consumes it (by placeholder name)."""
    params = {i.name: i for i in graph.inputs if i.kind == "parameter"}
    by_name = graph.by_name()
    users = graph.users()
    shapes = {i.name: i.shape for i in graph.inputs}

    def source(name: str | None) -> str | None:
        """The placeholder a value comes from through pass-through ops (None: not a parameter)."""
        seen = 0
        while name is not None and name not in params and seen < 100:
            node = by_name.get(name)
            if node is None or node.aten not in PASS_THROUGH or not node.inputs:
                return None
            name, seen = node.inputs[0], seen + 1
        return name

    roles: dict[str, Role] = {}
    for node in graph.nodes:
        op = node.aten
        if op in CONV_OPS or op == "linear":
            kind = "conv" if op in CONV_OPS else "linear"
            weight, bias = source(_ref(node, 1)), source(_ref(node, 2))
            fan_in = math.prod(shapes[weight][1:]) if weight and len(shapes[weight]) > 1 else 1
            if weight and weight not in roles:
                roles[weight] = Role(params[weight].target, f"{kind} weight", fan_in)
            if bias and bias not in roles:
                roles[bias] = Role(params[bias].target, f"{kind} bias", fan_in)
        elif op == "addmm":  # addmm(bias, x, t(weight)): the weight is (out, in) before the transpose
            weight, bias = source(_ref(node, 2)), source(_ref(node, 0))
            fan_in = shapes[weight][1] if weight and len(shapes[weight]) == 2 else 1
            if weight and weight not in roles:
                roles[weight] = Role(params[weight].target, "linear weight", fan_in)
            if bias and bias not in roles:
                roles[bias] = Role(params[bias].target, "linear bias", fan_in)
        elif op in NORM_OPS:
            w_index, b_index = NORM_OPS[op]
            for index, role in ((w_index, "norm weight"), (b_index, "norm bias")):
                name = source(_ref(node, index))
                if name and name not in roles:
                    roles[name] = Role(params[name].target, role)
        elif op in ("prelu", "_prelu_kernel"):
            name = source(_ref(node, 1))
            if name and name not in roles:
                roles[name] = Role(params[name].target, "prelu weight")
    for name, inp in params.items():
        if name in roles:
            continue
        if len(inp.shape) >= 2:
            roles[name] = Role(inp.target, "other weight", math.prod(inp.shape[1:]))
            continue
        consumers = {u.aten for u in users.get(name, [])}
        role = "other offset" if consumers and consumers <= ADDS else "other scale"
        roles[name] = Role(inp.target, role)
    return roles


@torch.no_grad()
def initialise(graph: LoadedGraph, seed: int, model: RebuiltModel | None = None) -> dict[str, Role]:
    """Give every parameter of ``model`` (a copy of ``graph.model``; the graph's own by default) the
    grader's initial value, and reset BatchNorm's statistics; returns the roles by target. The same seed
    gives the same values."""
    generator = torch.Generator().manual_seed(int(seed))
    model = graph.model if model is None else model
    roles = parameter_roles(graph)
    by_placeholder = {i.name: i for i in graph.inputs}
    for name, role in roles.items():  # in graph order of the inputs: the draw order is fixed
        tensor = getattr(model, attribute_name(by_placeholder[name].target))
        if not tensor.is_floating_point():
            continue  # not trainable: the hidden-data rule counts it
        kind = role.role
        if kind.endswith("weight") and kind not in ("norm weight", "prelu weight") and tensor.ndim >= 2:
            torch.nn.init.kaiming_uniform_(tensor, a=math.sqrt(5), generator=generator)
        elif kind.endswith("bias") and kind != "norm bias":
            bound = 1 / math.sqrt(role.fan_in) if role.fan_in > 0 else 0.0
            torch.nn.init.uniform_(tensor, -bound, bound, generator=generator)
        elif kind == "norm weight" or kind == "other scale":
            tensor.fill_(1.0)
        elif kind == "prelu weight":
            tensor.fill_(0.25)
        else:  # norm bias, other offset, a 1-d 'weight'
            tensor.zero_()
    stats = bn_statistics(graph)
    for name, kind in stats.items():
        inp = by_placeholder.get(name)
        if inp is None or inp.kind == "user_input":
            continue
        getattr(model, attribute_name(inp.target)).fill_(0.0 if kind == "running_mean" else 1.0)
    for name in bn_counters(graph):
        getattr(model, attribute_name(by_placeholder[name].target)).zero_()
    return {role.target: role for role in roles.values()}
