"""Spatial layers read from the rebuilt graph: max pooling however it is spelled, depthwise, dilation, GAP, params."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import MaxPool2d as Down

from grader.analysis.layers import MAXPOOL_OPS, downstream_ops, followed_by_pointwise, param_facts, spatial_layers


def _stem(c=8):
    """3 -> c channels, 32x32 -> 4x4 in one conv (keeps the pooling models cheap)."""
    return nn.Conv2d(3, c, 8, stride=8)


def _layers(exported, factory):
    e = exported(factory)
    return e, spatial_layers(e.loaded)


# ---- max pooling, however it is called ------------------------------------------------------------------


class MaxPoolZoo(nn.Module):
    """Max pooling in every spelling a student used, one after the other, then a global max pool."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.down = Down(kernel_size=2, stride=1)
        self.block = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, 1))
        self.gmp = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        x = self.pool(self.c(x))  # 32 -> 16
        x = F.max_pool2d(x, 2)  # 16 -> 8
        x = self.down(x)  # 8 -> 7
        x = torch.ops.aten.max_pool2d(x, [2, 2], [1, 1])  # 7 -> 6
        x, _ = F.max_pool2d(x, 2, stride=1, return_indices=True)  # 6 -> 5
        x = self.block(x)  # 5 -> 4
        return self.gmp(x).flatten(1) + torch.amax(x, dim=(2, 3))


def test_max_pool_is_found_however_it_is_called(exported):
    e, layers = _layers(exported, MaxPoolZoo)
    pools = [n for n in e.loaded.nodes if n.aten in MAXPOOL_OPS]
    assert [n.aten for n in pools] == ["max_pool2d"] * 4 + [
        "max_pool2d_with_indices",
        "max_pool2d",
        "adaptive_max_pool2d",
    ]
    # F.max_pool2d and a direct torch.ops.aten call belong to the model's own forward; modules keep their path
    assert [n.module for n in pools] == ["pool", "", "down", "", "", "block.1", "gmp"]
    assert [n.module_type for n in pools] == [
        "MaxPool2d",
        "MaxPoolZoo",
        "MaxPool2d",
        "MaxPoolZoo",
        "MaxPoolZoo",
        "MaxPool2d",
        "AdaptiveMaxPool2d",
    ]
    lines = [int(n.source.rsplit(":", 1)[1]) for n in pools]
    assert lines == sorted(lines) and len(set(lines)) == 7  # one source line per spelling
    assert pools[2].where().startswith("down (MaxPool2d, test_unit_layers.py:")
    assert all(n.source.startswith("test_unit_layers.py:") for n in pools)
    by_node = {layer.node.name: layer for layer in layers}
    maxpools = [by_node[n.name] for n in pools[:-1]]
    assert all(layer.kind == "maxpool" and layer.kernel == (2, 2) and layer.shrinks for layer in maxpools)
    assert [layer.out_hw[0] for layer in maxpools] == [16, 8, 7, 6, 5, 4]
    assert [layer.stride for layer in maxpools] == [(2, 2), (2, 2), (1, 1), (1, 1), (1, 1), (1, 1)]
    globals_ = [layer for layer in layers if layer.kind == "global_max"]
    assert [g.node.aten for g in globals_] == ["adaptive_max_pool2d", "amax"]
    assert all(g.in_hw == (4, 4) for g in globals_)


def test_the_module_sequence_pool_is_named_by_its_path(exported):
    e, _ = _layers(exported, MaxPoolZoo)
    pool = next(n for n in e.loaded.nodes if n.module == "block.1")
    assert pool.where().startswith("block.1 (MaxPool2d, test_unit_layers.py:")


class HandWrittenPools(nn.Module):
    """Max pooling by what it computes, each spelling on its own branch of one 32x32 map."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.c(x))
        n, c, h, w = x.shape
        a = torch.maximum(
            torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2]),
            torch.maximum(x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]),
        )
        b = x.reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))
        left, right = x[:, :, :, 0::2], x[:, :, :, 1::2]
        cols = torch.where(left > right, left, right)
        d = torch.where(cols[:, :, 0::2] >= cols[:, :, 1::2], cols[:, :, 0::2], cols[:, :, 1::2])
        e = torch.stack([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]]).amax(0)
        f = -torch.minimum(-x[:, :, :-1], -x[:, :, 1:])  # max(a, b) = -min(-a, -b): a 2x1 window, stride 1
        g = torch.maximum(x, F.pad(x, (1, 0))[..., :-1])[:, :, :, ::2]  # a shifted copy by padding, then strided
        v, _ = x.unflatten(3, (w // 2, 2)).max(dim=4)  # max.dim over a dim split from W
        return sum(t.mean((2, 3)) for t in (a, b, d, e, f, g, v))


def test_max_pool_written_by_hand_is_a_max_pool_layer(exported):
    _, layers = _layers(exported, HandWrittenPools)
    pools = [layer for layer in layers if layer.kind == "maxpool"]
    assert [(p.kernel, p.stride, p.out_hw) for p in pools] == [
        ((2, 2), (2, 2), (16, 16)),  # maximum of four strided slices
        ((2, 2), (2, 2), (16, 16)),  # reshape + amax
        ((2, 2), (2, 2), (16, 16)),  # where(a > b, a, b), columns then rows
        ((2, 2), (2, 2), (16, 16)),  # stack + amax
        ((2, 1), (1, 1), (31, 32)),  # -minimum(-a, -b)
        ((1, 2), (1, 2), (32, 16)),  # maximum with a padded copy, then a strided slice
        ((1, 2), (1, 2), (32, 16)),  # unflatten + max.dim
    ]
    assert all(p.in_hw == (32, 32) and p.origin == "conv2d" and p.via for p in pools)  # through the ReLU
    assert [sorted({n.aten for n in p.via}) for p in pools] == [
        ["maximum"],
        ["amax"],
        ["where"],
        ["amax"],
        ["minimum"],
        ["maximum"],
        ["max"],
    ]
    assert pools[0].describe() == "max pool 2x2 stride 2 (written as slice, maximum)"
    assert pools[0].node.where().startswith("maximum_2 (HandWrittenPools, test_unit_layers.py:")
    assert all(n.source.startswith("test_unit_layers.py:") for p in pools for n in p.via)
    assert [layer.kind for layer in layers if not layer.via] == ["conv"] + ["global_avg"] * 7


class Resampling(nn.Module):
    """Made smaller without a convolution or a pooling op: a strided slice, a crop, pixel_unshuffle."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        x = self.c(x)
        a = x[:, :, ::2, ::2]
        b = x[:, :, 2:-2, 2:-2]
        c = F.pixel_unshuffle(x, 2)[:, :8]
        return a.mean((2, 3)) + b.mean((2, 3)) + c.mean((2, 3))


def test_a_strided_slice_a_crop_and_pixel_unshuffle_downsample_without_a_convolution(exported):
    _, layers = _layers(exported, Resampling)
    resampled = [layer for layer in layers if layer.kind == "resample"]
    assert [(r.in_hw, r.out_hw, r.stride, r.spelled) for r in resampled] == [
        ((32, 32), (16, 16), (2, 2), "slice"),
        ((32, 32), (28, 28), (1, 1), "slice"),
        ((32, 32), (16, 16), (2, 2), "pixel_unshuffle, slice"),  # the channel slice after it is part of it
    ]
    assert all(r.shrinks and r.node.source.startswith("test_unit_layers.py:") for r in resampled)
    assert resampled[0].describe() == "32x32 -> 16x16 without a convolution stride 2 (written as slice)"


class LooksLikePooling(nn.Module):
    """Maxima and reductions that pool nothing spatial, and shape ops that make nothing smaller."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.same = nn.Conv2d(8, 8, 3, padding=1)
        self.ln = nn.LayerNorm(8)

    def forward(self, x):
        x = self.c(x)
        n, c, h, w = x.shape
        a = torch.maximum(x, self.same(x))  # windows of other sizes around the same place: not shifted
        b = torch.where(x > 0, x, 0.1 * x)  # leaky ReLU
        d = x.amax(1, keepdim=True) + x  # a max over channels
        e = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # channels last and back
        f = F.pad(x, (1, 1, 1, 1))[:, :, 1:-1, 1:-1]  # padded, then cropped back to its size
        g = x.reshape(n, c, h * w).amax(-1)  # a global max pool: found by no_maxpool as global_max
        return sum(t.mean((2, 3)) for t in (a, b, d, e, f)) + g


def test_maxima_that_pool_nothing_are_not_windows(exported):
    _, layers = _layers(exported, LooksLikePooling)
    assert [layer.kind for layer in layers if layer.via] == ["global_max"]
    assert [layer.kind for layer in layers if not layer.via] == ["conv", "conv"] + ["global_avg"] * 5


# ---- depthwise / grouped / pointwise ------------------------------------------------------------------------


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 64, 3, padding=1)
        self.g = nn.Conv2d(64, 64, 3, padding=1, groups=32)
        self.p = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.p(self.g(self.c(x))).mean((2, 3))


class DepthwiseZoo(nn.Module):
    """dw1 -> pw1 directly; dw2 -> BN -> ReLU -> Dropout2d -> pw2; dw3 (multiplier 2) -> ReLU -> pw3; dw4 -> 3x3."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, padding=1)
        self.dw1 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw1 = nn.Conv2d(16, 16, 1)
        self.dw2 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.drop = nn.Dropout2d(0.1)
        self.pw2 = nn.Conv2d(16, 16, 1)
        self.dw3 = nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.pw3 = nn.Conv2d(32, 16, 1)
        self.dw4 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c3 = nn.Conv2d(16, 10, 3, padding=1)

    def forward(self, x):
        x = self.pw1(self.dw1(self.c(x)))
        x = self.pw2(self.drop(F.relu(self.bn(self.dw2(x)))))
        x = self.pw3(F.relu(self.dw3(x)))
        return self.c3(self.dw4(x)).mean((2, 3))


def _by_node(layers):
    return {layer.node.name: layer for layer in layers}


def test_groups_32_on_64_channels_is_grouped_not_depthwise(exported):
    _, layers = _layers(exported, Grouped)
    g = layers[1]
    assert g.groups == 32 and g.in_channels == 64
    assert not g.is_depthwise
    assert g.notes == ["grouped (32 groups on 64 channels), not depthwise"]
    assert g.describe() == "conv 3x3 groups 32"
    assert not any(layer.is_depthwise for layer in layers)


def test_depthwise_followed_by_pointwise(exported):
    e, layers = _layers(exported, DepthwiseZoo)
    dws = [layer for layer in layers if layer.is_depthwise]
    assert [d.node.module for d in dws] == ["dw1", "dw2", "dw3", "dw4"]
    assert all(d.notes == [] and d.describe() == "conv 3x3 depthwise" for d in dws)
    found = [followed_by_pointwise(e.loaded, d, _by_node(layers)) for d in dws]
    # dw4 follows pw3 but feeds a 3x3: a 1x1 before the depthwise conv does not make a separable pair
    assert [p.node.module if p else None for p in found] == ["pw1", "pw2", "pw3", None]
    assert all(p.is_pointwise for p in found[:3])


# ---- dilation -----------------------------------------------------------------------------------------------


class DilatedMix(nn.Module):
    def __init__(self):
        super().__init__()
        self.one = nn.Conv2d(3, 8, 1, dilation=2)
        self.three = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.asym = nn.Conv2d(8, 8, (3, 1), padding=(3, 0), dilation=(3, 1))

    def forward(self, x):
        return self.asym(self.three(self.one(x))).mean((2, 3))


def test_dilation_on_a_1x1_kernel_is_not_dilated(exported):
    _, layers = _layers(exported, DilatedMix)
    one, three, asym = layers[:3]
    assert one.dilation == (2, 2)
    assert not one.is_dilated
    assert one.notes == ["dilation on a 1x1 kernel does nothing"]
    assert one.k_eff == (1, 1)
    assert three.is_dilated and three.notes == [] and three.k_eff == (5, 5)
    assert three.describe() == "conv 3x3 dilation 2"
    assert three.out_hw == three.in_hw == (32, 32)
    assert asym.is_dilated and asym.k_eff == (7, 1)


# ---- average pooling and GAP ----------------------------------------------------------------------------------


class GapZoo(nn.Module):
    """Branches on one 4x4 map: five spellings of GAP, two pools that are not global, a mean over channels."""

    def __init__(self):
        super().__init__()
        self.c = _stem(10)
        self.adaptive = nn.AdaptiveAvgPool2d(1)
        self.avg4 = nn.AvgPool2d(4)
        self.avg3 = nn.AvgPool2d(3)
        self.adaptive2 = nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        x = self.c(x)
        a = self.adaptive(x).flatten(1)
        b = x.mean((2, 3))
        c = self.avg4(x).flatten(1)
        d = x.mean(dim=[-1, -2], keepdim=True).flatten(1)
        e = F.avg_pool2d(x, x.shape[2:]).flatten(1)
        f = self.avg3(x).flatten(1)
        g = self.adaptive2(x).flatten(1)[:, :10]
        h = x.mean(1).flatten(1)[:, :10]
        return a + b + c + d + e + f + g + h


def test_average_pooling_spellings(exported):
    _, layers = _layers(exported, GapZoo)
    assert [layer.kind for layer in layers] == ["conv"] + ["global_avg"] * 5 + ["avgpool"] * 2
    for layer in layers[1:6]:
        assert layer.in_hw == (4, 4) and layer.notes == [] and layer.describe() == "global average pool"
    assert [layer.node.module for layer in layers[1:6]] == ["adaptive", "", "avg4", "", ""]
    avg3, adaptive2 = layers[6:]
    assert avg3.node.module == "avg3"
    assert avg3.out_hw == (1, 1)
    assert avg3.notes == ["3x3 kernel on a 4x4 map: not global"]
    assert adaptive2.kernel == (2, 2) and adaptive2.stride == (2, 2)
    assert adaptive2.notes == ["adaptive pool to 2x2: not global"]


class MeanTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = _stem(10)

    def forward(self, x):
        return self.c(x).mean(-1).mean(-1)


def test_gap_written_as_two_means(exported):
    _, layers = _layers(exported, MeanTwice)
    assert [layer.kind for layer in layers] == ["conv", "global_avg"]


def test_downstream_ops_after_gap(exported):
    e, layers = _layers(exported, GapZoo)
    adaptive = layers[1]
    after = [n.aten for n in downstream_ops(e.loaded, adaptive.node)]
    assert after[0] == "flatten"
    assert set(after) <= {"flatten", "add", "slice"}
    assert "adaptive_avg_pool2d" not in after


# ---- parameters -------------------------------------------------------------------------------------------


class Normal(nn.Module):
    """BN, a depthwise conv without bias, and a conv applied twice (shared weights count once)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.shared = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.c2(F.relu(self.bn(self.c1(x))))
        x = self.shared(F.relu(self.shared(x)))
        return self.fc(x.mean((2, 3)))


class HidesParameters(Normal):
    def parameters(self, recurse=True):
        return iter(())


class BufferWeight(nn.Module):
    """A conv weight kept as a buffer and applied with F.conv2d, and one kept as a plain tensor attribute
    (export lifts it as a constant): not parameters, but weights all the same."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.register_buffer("secret", torch.randn(16, 8, 3, 3))
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("index", torch.arange(10))
        self.register_buffer("unused", torch.randn(50))
        self.plain = torch.randn(16, 16, 1, 1)

    def forward(self, x):
        x = F.relu(self.bn(self.c1(x)))
        x = F.conv2d(x, self.secret, padding=1) * self.scale
        x = F.conv2d(x, self.plain)
        return torch.index_select(x.mean((2, 3)), 1, self.index)


def _numel(model):
    return sum(p.numel() for p in nn.Module.parameters(model))


def test_params_count_like_torchsummary(exported):
    e = exported(Normal)
    p = param_facts(e.loaded)
    assert p.params == _numel(e.model) == 3 * 16 * 9 + 16 + 32 + 16 * 9 + 16 * 16 + 16 + 16 * 10 + 10
    assert p.trainable == p.params
    assert p.hidden == [] and p.hidden_total == 0


def test_params_are_counted_when_parameters_is_overridden(exported):
    e = exported(HidesParameters)
    assert sum(p.numel() for p in e.model.parameters()) == 0
    assert param_facts(e.loaded).params == _numel(e.model) == param_facts(exported(Normal).loaded).params


def test_bn_statistics_are_counted_apart(exported):
    p = param_facts(exported(Normal).loaded)
    assert p.bn_buffers == 33  # running mean and var of 16 channels, and the counter num_batches_tracked
    assert p.hidden == [] and p.params == p.trainable


def test_every_tensor_the_forward_reads_counts_and_beyond_the_budget_is_hidden_data(exported):
    """Buffers and constants of any dtype count as the model's numbers; BN statistics and tensors the
    forward never reads do not. Beyond the budget they are hidden data, each listed with its line."""
    e = exported(BufferWeight)
    p = param_facts(e.loaded)
    assert p.trainable == _numel(e.model) == 3 * 8 * 9 + 8 + 16
    by_name = {h["name"]: h for h in p.hidden}
    assert {k: by_name["secret"][k] for k in ("kind", "shape", "dtype", "numel")} == {
        "kind": "buffer",
        "shape": [16, 8, 3, 3],
        "dtype": "float32",
        "numel": 16 * 8 * 9,
    }
    assert by_name["secret"]["line"].startswith("test_unit_layers.py:")  # the student's line that reads it
    assert by_name["index"]["dtype"] == "int64" and by_name["scale"]["numel"] == 1  # any dtype, any size
    constants = [h for h in p.hidden if h["kind"] == "constant"]
    assert [(h["shape"], h["numel"]) for h in constants] == [([16, 16, 1, 1], 256)]
    assert "unused" not in by_name and not any("running" in name for name in by_name)
    assert p.hidden_total == 16 * 8 * 9 + 256 + 1 + 10
    assert p.params == p.trainable + p.hidden_total
    assert p.bn_buffers == 17  # running mean and var of 8 channels, and the counter
    assert p.hidden_data  # 1,419 numbers beyond the default budget of 1,024
    assert not param_facts(e.loaded, budget=2000).hidden_data
