"""Rules on the model, decided from the graph the trusted side rebuilt (Q&A 1 and 2)."""

from grader.analysis.layers import HEAD_OPS, MAXPOOL_OPS, downstream_ops, followed_by_pointwise
from grader.analysis.receptive_field import is_transition
from grader.checks_api import rule, undecidable


@rule("no_maxpool", points=15)
def test_no_maxpool(facts, check):
    """No max pooling anywhere in the model"""
    graph = facts.need("graph")
    found = [n for n in graph.nodes if n.aten in MAXPOOL_OPS]
    found += [layer.node for layer in facts.layers if layer.kind == "global_max"]
    # Max pooling by what it computes: a maximum of shifted slices, a max over dims split from H or W.
    by_hand = [layer for layer in facts.layers if layer.via and layer.kind in ("maxpool", "global_max")]
    found += [n for layer in by_hand for n in layer.via]
    mentions = facts.sources.maxpool_lines if facts.sources else []
    if found:
        where = "; ".join(dict.fromkeys(n.where() for n in found))
        written = "; ".join(f"{layer.describe()} at {layer.node.where()}" for layer in by_hand)
        check.fail(
            f"max pooling runs in the model: {where}"
            + (f" (a max over a window of the map: {written})" if written else ""),
            hint="replace each max pool with a 3x3 convolution with stride 2 (or a dilated convolution)",
            layers=[n.where() for n in found],
            source_mentions=mentions[:10],
        )
    note = f" ({len(mentions)} source line(s) mention it but it never runs)" if mentions else ""
    check.passed(f"no max-pool operation in the executed graph{note}", source_mentions=mentions[:10])


@rule("architecture", points=30)
def test_architecture(facts, check):
    """C1|C2|C3|C4|O: convolutions do every downsampling, three transitions"""
    facts.need("graph")
    rf = facts.need("rf")
    spec = check.rule
    wanted = int(spec["transitions"])
    min_kernel = int(spec["min_transition_kernel"])
    before_gap = [layer for layer in facts.layers if layer.node.name in _ancestors_or_self(facts, rf.at)]
    reducers = [layer for layer in before_gap if is_transition(layer) or (layer.shrinks and layer.kind != "conv")]
    pools = [layer for layer in reducers if layer.kind != "conv"]
    if pools:
        pooling = [p for p in pools if p.kind != "resample"]
        other = [p for p in pools if p.kind == "resample"]
        parts = ["by pooling: " + "; ".join(f"{p.describe()} at {p.node.where()}" for p in pooling)] if pooling else []
        if other:  # a strided slice, a crop, pixel_unshuffle: smaller without a convolution
            parts.append(
                "by an op that is not a convolution: " + "; ".join(f"{p.node.where()}: {p.describe()}" for p in other)
            )
        check.fail(
            "the feature map is made smaller " + "; and ".join(parts),
            hint="do the downsampling with 3x3 convolutions with stride 2 (or dilated convolutions)",
            transitions=[_row(layer) for layer in reducers],
        )
    by_size: dict[int, list] = {}
    for layer in reducers:
        by_size.setdefault(layer.out_hw[0], []).append(layer)
    weak = [size for size, group in by_size.items() if not any(max(layer.k_eff) >= min_kernel for layer in group)]
    if weak:
        culprits = [layer for size in weak for layer in by_size[size]]
        check.fail(
            "downsampling by a convolution smaller than "
            f"{min_kernel}x{min_kernel}: " + "; ".join(f"{c.describe()} at {c.node.where()}" for c in culprits),
            hint=f"use a {min_kernel}x{min_kernel} convolution with stride 2 (or a dilated one) for each transition",
        )
    sizes = [facts.graph.input_shape[1], *sorted(by_size, reverse=True)]
    path = " -> ".join(str(s) for s in sizes)
    blocks = _blocks(before_gap, by_size)
    evidence = {"transitions": [_row(layer) for layer in reducers], "blocks": blocks, "sizes": sizes}
    if len(by_size) != wanted:
        check.fail(
            f"{len(by_size)} transition(s) ({path}), C1|C2|C3|C4 needs {wanted}",
            hint=f"reduce the size exactly {wanted} times before global average pooling (e.g. 32 -> 16 -> 8 -> 4)",
            **evidence,
        )
    named = " | ".join(f"{b['name']} ({', '.join(b['modules'])})" if b["modules"] else b["name"] for b in blocks)
    check.passed(f"{wanted} transitions by convolution ({path}); blocks: {named}", **evidence)


def _ancestors_or_self(facts, name):
    by_name = facts.graph.by_name()
    seen, stack = {name}, [name]
    while stack:
        node = by_name.get(stack.pop())
        for i in node.inputs if node else []:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return seen


def _row(layer):
    return {
        "layer": layer.node.where(),
        "what": layer.describe(),
        "from": f"{layer.in_hw[0]}x{layer.in_hw[1]}",
        "to": f"{layer.out_hw[0]}x{layer.out_hw[1]}",
    }


def _blocks(layers, by_size):
    """C1..Cn: the layers at each resolution, named by the top-level modules they belong to."""
    bounds = sorted(by_size, reverse=True)
    blocks = []
    for i in range(len(bounds) + 1):
        members = [layer for layer in layers if _stage(layer.out_hw[0], bounds) == i]
        modules = list(dict.fromkeys((layer.node.module or layer.node.name).split(".")[0] for layer in members))
        blocks.append(
            {
                "name": f"C{i + 1}",
                "size": members[0].out_hw[0] if members else None,
                "layers": len(members),
                "modules": modules,
            }
        )
    return blocks


def _stage(size, bounds):
    return sum(1 for b in bounds if b >= size)


@rule("receptive_field", points=20)
def test_receptive_field(facts, check):
    """Receptive field of the last feature map before GAP is more than {greater_than}"""
    rf = facts.need("rf")
    limit = int(check.rule["greater_than"])
    measured = facts.measured_rf
    got = measured.measured if measured else None
    evidence = {"rf": rf.rf, "at": rf.at_layer, "measured": got}
    gradient = f"the gradient measurement gives {got} ({measured.note})" if measured and got is not None else ""
    if rf.rf is None:
        check.evidence.update(evidence, unknown=rf.unknown)
        undecidable(
            f"the receptive field at {rf.at_layer} could not be computed: {rf.unknown}"
            + (f"; {gradient}" if gradient else ""),
            "rf_mismatch",
        )
    # A clipped measurement is a lower bound (the window reached the input's border).
    if measured and got is not None and (got != rf.rf if not measured.clipped else got > rf.rf):
        check.evidence.update(evidence)
        undecidable(
            f"the recurrence gives RF {rf.rf} at {rf.at_layer} ({rf.size[0]}x{rf.size[1]} map) but {gradient}: "
            "the two must agree before the rule is decided",
            "rf_mismatch",
        )
    if rf.rf <= limit:
        check.fail(
            f"RF {rf.rf} at {rf.at_layer} ({rf.size[0]}x{rf.size[1]} map), it must be more than {limit}",
            hint="add layers, use a dilated convolution, or downsample earlier: each layer after a stride-2 conv adds more",
            **evidence,
        )
    check.passed(
        f"RF {rf.rf} at {rf.at_layer} (> {limit})"
        + (f"; measured {measured.measured}" if measured and measured.measured else ""),
        **evidence,
    )


@rule("depthwise_separable", points=15)
def test_depthwise_separable(facts, check):
    """One layer is a depthwise separable convolution"""
    graph = facts.need("graph")
    by_node = {layer.node.name: layer for layer in facts.layers}
    depthwise = [layer for layer in facts.layers if layer.is_depthwise]
    pairs = [(d, followed_by_pointwise(graph, d, by_node)) for d in depthwise]
    good = [(d, p) for d, p in pairs if p is not None]
    if good:
        d, p = good[0]
        check.passed(
            f"{len(good)} depthwise separable layer(s), e.g. {d.node.where()} ({d.describe()}) -> {p.node.where()} (1x1)",
            layers=[f"{d.node.where()} -> {p.node.where()}" for d, p in good],
        )
        return
    grouped = [layer for layer in facts.layers if layer.kind == "conv" and layer.groups > 1 and not layer.is_depthwise]
    if depthwise:
        check.fail(
            f"depthwise conv {depthwise[0].node.where()} is not followed by a 1x1 convolution",
            hint="follow the depthwise conv (groups = in_channels) with a 1x1 conv (directly or after BN/ReLU)",
        )
    if grouped:
        g = grouped[0]
        check.fail(
            f"{g.node.where()} uses groups={g.groups} on {g.in_channels} channels: grouped, not depthwise",
            hint="depthwise means groups == in_channels, followed by a 1x1 convolution",
        )
    check.fail(
        "no depthwise separable convolution (a conv with groups = in_channels followed by a 1x1 conv)",
        hint="nn.Conv2d(c, c, 3, padding=1, groups=c) then nn.Conv2d(c, c_out, 1)",
    )


@rule("dilated", points=15)
def test_dilated(facts, check):
    """One layer uses a dilated convolution"""
    facts.need("graph")
    dilated = [layer for layer in facts.layers if layer.is_dilated]
    if dilated:
        check.passed(
            f"{len(dilated)} dilated conv(s), e.g. {dilated[0].node.where()} ({dilated[0].describe()})",
            layers=[layer.node.where() for layer in dilated],
        )
        return
    useless = [layer for layer in facts.layers if layer.kind == "conv" and max(layer.dilation) > 1]
    if useless:
        check.fail(
            f"{useless[0].node.where()} has dilation {max(useless[0].dilation)} on a 1x1 kernel, which does nothing",
            hint="put the dilation on a 3x3 convolution",
        )
    check.fail("no convolution uses dilation > 1", hint="e.g. nn.Conv2d(c, c, 3, padding=2, dilation=2)")


@rule("gap", points=15)
def test_gap(facts, check):
    """Global average pooling reduces the last feature map to 1x1"""
    graph = facts.need("graph")
    globals_ = [layer for layer in facts.layers if layer.kind == "global_avg"]
    not_global = [layer for layer in facts.layers if layer.kind == "avgpool" and layer.out_hw == (1, 1)]
    if not globals_:
        if not_global:
            layer = not_global[0]
            check.fail(
                f"{layer.node.where()}: {layer.describe()} on a {layer.in_hw[0]}x{layer.in_hw[1]} map is not global "
                f"({'; '.join(layer.notes)})",
                hint="use nn.AdaptiveAvgPool2d(1) (or an AvgPool2d whose kernel equals the map size)",
            )
        check.fail(
            "no global average pooling before the output", hint="add nn.AdaptiveAvgPool2d(1) after the last conv block"
        )
    gap = globals_[-1]
    after = downstream_ops(graph, gap.node)
    bad = [
        n for n in after if n.aten not in HEAD_OPS and n.target != "operator.getitem" and not _pointwise_conv(facts, n)
    ]
    if bad:
        check.fail(
            f"after global average pooling at {gap.node.where()} the model still runs {bad[0].aten or bad[0].target} at {bad[0].where()}",
            hint="after GAP only a fully connected layer (or 1x1 conv), flatten and softmax may follow",
        )
    head = [n.aten for n in after if n.aten in ("linear", "addmm", "conv2d", "convolution")]
    check.passed(
        f"{gap.describe()} at {gap.node.where()} on the {gap.in_hw[0]}x{gap.in_hw[1]} map"
        + ("; then a fully connected layer" if head else ""),
    )


def _pointwise_conv(facts, node):
    layer = next((layer for layer in facts.layers if layer.node is node), None)
    return layer is not None and layer.kind == "conv" and layer.kernel == (1, 1)


@rule("params", points=125)
def test_params(facts, check):
    """Fewer than {less_than:,} parameters"""
    p = facts.need("params")
    limit = int(check.rule["less_than"])
    evidence = {
        "params": p.params,
        "trainable": p.trainable,
        "hidden": p.hidden,
        "hidden_total": p.hidden_total,
        "budget": p.budget,
    }
    listed = "; ".join(
        f"{h['name']} ({h['kind']}, {h['dtype']} {h['shape']}{', ' + h['line'] if h['line'] else ''})"
        for h in p.hidden[:4]
    )
    if p.hidden_data:
        check.fail(
            f"hidden data: besides {p.trainable:,} parameters the forward reads {p.hidden_total:,} numbers that are "
            f"neither parameters nor BatchNorm statistics (more than {p.budget:,}): {listed}",
            hint="keep every weight in nn.Parameter (float); buffers are for BatchNorm statistics and a few constants",
            **evidence,
        )
    if p.params >= limit:
        extra = f" ({p.trainable:,} parameters + {p.hidden_total:,} numbers in buffers/constants)" if p.hidden else ""
        check.fail(
            f"{p.params:,} parameters{extra}, the limit is fewer than {limit:,}",
            hint="narrow the widest layers or replace 3x3 convs by depthwise separable ones",
            **evidence,
        )
    if p.hidden:
        check.warn(f"{p.hidden_total:,} numbers read besides parameters and BatchNorm statistics (counted): {listed}")
    check.passed(
        f"{p.params:,} parameters (< {limit:,})"
        + (f", of which {p.hidden_total:,} in buffers/constants" if p.hidden else ""),
        **evidence,
    )


@rule("bonus", points=200)
def test_bonus(facts, check):
    """Bonus: dilated convolutions instead of max pooling or strided convolutions"""
    facts.need("graph")
    rf = facts.need("rf")
    before = _ancestors_or_self(facts, rf.at)
    strided = [
        layer for layer in facts.layers if layer.node.name in before and layer.kind == "conv" and max(layer.stride) > 1
    ]
    pools = [
        layer
        for layer in facts.layers
        if layer.node.name in before and layer.kind in ("maxpool", "avgpool", "resample")
    ]
    if strided or pools:
        first = (strided + pools)[0]
        how = "stride" if strided else "pooling" if first.kind != "resample" else "an op that is not a convolution"
        check.fail(
            f"downsampling by {how}: {first.describe()} at {first.node.where()}",
            hint="for the bonus every size reduction before GAP is a dilated convolution without stride",
        )
    shrink = [layer for layer in facts.layers if layer.node.name in before and layer.shrinks]
    if (
        not shrink
        or not all(layer.is_dilated for layer in shrink if is_transition(layer))
        or not any(layer.is_dilated for layer in shrink)
    ):
        check.fail(
            "the size reductions are not done by dilated convolutions",
            hint="reduce the size with dilated 3x3 convolutions (no padding, no stride)",
        )
    check.passed(
        "every size reduction is a dilated convolution: "
        + "; ".join(layer.node.where() for layer in shrink if layer.is_dilated)
    )
