"""Receptive field: the textbook recurrence, its propagation through the rebuilt graph, and the gradient check."""

from __future__ import annotations

import glob
import importlib.util
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.analysis.layers import spatial_layers
from grader.analysis.receptive_field import analytic_rf, is_transition, measure_rf, rf_recurrence

# The seed README's RF table: (input size, input RF, kernel incl. dilation, stride, jump in, jump out, output RF,
# output size, block). Kernel 5 is a 5x5 conv in the first row and a 3x3 conv with dilation 2 everywhere else.
SEED_TABLE = [
    (32, 1, 5, 1, 1, 1, 5, 32, 1),
    (32, 5, 3, 1, 1, 1, 7, 32, 1),
    (32, 7, 3, 1, 1, 1, 9, 32, 1),
    (32, 9, 5, 2, 1, 2, 13, 16, 2),
    (16, 13, 3, 1, 2, 2, 17, 16, 2),
    (16, 17, 3, 1, 2, 2, 21, 16, 2),
    (16, 21, 5, 2, 2, 4, 29, 8, 3),
    (8, 29, 5, 1, 4, 4, 45, 8, 3),
    (8, 45, 3, 1, 4, 4, 53, 8, 3),
    (8, 53, 5, 2, 4, 8, 69, 4, 4),
    (4, 69, 3, 1, 8, 8, 85, 4, 4),
    (4, 85, 3, 1, 8, 8, 101, 4, 4),
]


def _seed_rows() -> list[tuple[int, int, int]]:
    """(kernel, dilation, stride) per row of the seed table."""
    return [
        (5, 1, row[3]) if i == 0 else (3, 2, row[3]) if row[2] == 5 else (3, 1, row[3])
        for i, row in enumerate(SEED_TABLE)
    ]


def test_seed_table_matches_the_file_when_present():
    files = glob.glob("/work/shared/seed/000_*.txt")
    if not files:
        pytest.skip("the seed README is not on this machine")
    text = Path(files[0]).read_text(encoding="utf-8")
    parsed = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and all(re.fullmatch(r"\d+", c) for c in cells[:10]):
            i_size, rf_in, kernel, _pad, stride, j_in, j_out, rf_out, o_size, block = map(int, cells[:10])
            parsed.append((i_size, rf_in, kernel, stride, j_in, j_out, rf_out, o_size, block))
    assert parsed == SEED_TABLE


def test_rf_recurrence_reproduces_the_seed_readme_table_row_by_row():
    out = rf_recurrence(_seed_rows())
    assert out == [(row[6], row[5]) for row in SEED_TABLE]
    assert out[-1] == (101, 8)


def test_rf_recurrence_textbook_cases():
    assert rf_recurrence([(3, 1, 1)] * 3) == [(3, 1), (5, 1), (7, 1)]
    assert rf_recurrence([(3, 1, 2), (3, 1, 2), (3, 1, 1)]) == [(3, 2), (7, 4), (15, 4)]
    assert rf_recurrence([(3, 4, 1)]) == [(9, 1)]  # k_eff = 4*(3-1)+1
    assert rf_recurrence([(1, 8, 1)]) == [(1, 1)]  # dilation on 1x1 adds nothing
    assert rf_recurrence([(3, 1, 1)], rf=5, jump=2) == [(9, 2)]


# ---- models -----------------------------------------------------------------------------------------------


def _cbr(cin, cout, k=3, s=1, p=1, d=1, g=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, p, dilation=d, groups=g, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class SeedNet(nn.Module):
    """The seed README's network (narrow channels): dilated+strided transitions, depthwise separable blocks."""

    def __init__(self, c=8):
        super().__init__()
        self.conv_block1 = nn.Sequential(_cbr(3, c, 5, p=2), _cbr(c, c), _cbr(c, c))
        self.conv_block2 = nn.Sequential(
            _cbr(c, c, 3, s=2, p=2, d=2),
            nn.Conv2d(c, c, 3, padding=1, groups=c),
            nn.Conv2d(c, c, 1),
            nn.Conv2d(c, c, 3, padding=1, groups=c),
            nn.Conv2d(c, c, 1),
        )
        self.conv_block3 = nn.Sequential(_cbr(c, c, 3, s=2, p=2, d=2), _cbr(c, c, 3, p=2, d=2), _cbr(c, c))
        self.conv_block4 = nn.Sequential(
            _cbr(c, c, 3, s=2, p=2, d=2),
            nn.Conv2d(c, c, 3, padding=1, groups=c),
            nn.Conv2d(c, c, 1),
            nn.Conv2d(c, 10, 3, padding=1),
        )
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.conv_block4(self.conv_block3(self.conv_block2(self.conv_block1(x))))
        return self.gap(x).flatten(1)


class Strided(nn.Module):
    """3x3 convs, three of them with stride 2: RF by hand 3, 5, 9, 13, 21, 29, 45."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            _cbr(3, 8), _cbr(8, 8, s=2), _cbr(8, 8), _cbr(8, 8, s=2), _cbr(8, 8), _cbr(8, 8, s=2), _cbr(8, 8)
        )
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(_cbr(3, 8), _cbr(8, 8), _cbr(8, 10, k=5, p=2))

    def forward(self, x):
        return self.body(x).mean((2, 3))


class Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(_cbr(3, 8, p=2, d=2), _cbr(8, 8, p=4, d=4), _cbr(8, 8, s=2), _cbr(8, 10, p=2, d=2))

    def forward(self, x):
        return self.body(x).mean((2, 3))


class Residual(nn.Module):
    """x -> stem(3) -> [identity | conv conv] add -> [conv s2, conv | 1x1 s2] add -> GAP.

    RF: stem 3; long branch 3+2+2 = 7, max(3, 7) = 7; main 7+2 = 9 (jump 2) then 9+4 = 13; shortcut 7; max 13.
    """

    def __init__(self, swap=False):
        super().__init__()
        self.swap = swap
        self.stem = _cbr(3, 8)
        self.b1 = nn.Sequential(_cbr(8, 8), _cbr(8, 8))
        self.main = nn.Sequential(_cbr(8, 8, s=2), _cbr(8, 8))
        self.short = nn.Conv2d(8, 8, 1, stride=2)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.b1(x) + x if self.swap else x + self.b1(x)
        x = self.short(x) + self.main(x) if self.swap else self.main(x) + self.short(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SwappedResidual(Residual):
    def __init__(self):
        super().__init__(swap=True)


class Concat(nn.Module):
    """Branches joined by torch.cat: RF max(3 + 2, 3 + 8) = 11 (a dilated 3x3 with d=4 has k_eff 9)."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 8)
        self.a = _cbr(8, 4)
        self.b = _cbr(8, 4, p=4, d=4)

    def forward(self, x):
        x = self.stem(x)
        return torch.cat([self.a(x), self.b(x)], 1).mean((2, 3))


class MaxPoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = _cbr(3, 8)
        self.pool = nn.MaxPool2d(2)
        self.c2 = _cbr(8, 10)

    def forward(self, x):
        return self.c2(self.pool(self.c1(x))).mean((2, 3))


class ChannelsLastLinear(nn.Module):
    """A 1x1 convolution written as nn.Linear on the channels-last map: RF 3, 3, 5."""

    def __init__(self):
        super().__init__()
        self.a = _cbr(3, 8)
        self.fc = nn.Linear(8, 8)
        self.b = _cbr(8, 10)

    def forward(self, x):
        x = self.fc(self.a(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.b(x).mean((2, 3))


def _rf(exported, factory):
    e = exported(factory)
    layers = spatial_layers(e.loaded)
    return e, layers, analytic_rf(e.loaded, layers)


def test_seed_network_rf_through_the_graph_is_101_and_rows_match_the_table(exported):
    _e, _, rf = _rf(exported, SeedNet)
    assert rf.rf == 101
    assert rf.jump == 8
    assert rf.size == (4, 4)
    assert rf.at_layer.startswith("conv_block4")
    spatial = [r for r in rf.rows if r.kernel > 1]
    got = [
        (r.in_size, r.rf_in, r.kernel, r.stride, r.jump_in, r.jump_out, r.rf_out, r.out_size, r.block) for r in spatial
    ]
    assert got == SEED_TABLE
    pointwise = [r for r in rf.rows if r.kernel == 1]
    assert len(pointwise) == 3 and all(r.rf_in == r.rf_out for r in pointwise)
    assert all(r.source.startswith("test_unit_rf.py:") for r in rf.rows)


def test_seed_network_measured_rf_agrees(exported):
    e, _, rf = _rf(exported, SeedNet)
    m = measure_rf(e.loaded, rf.at, rf.rf, rf.jump)
    assert m.measured == 101
    assert not m.clipped
    assert m.input_size >= 101


def test_strided_3x3_rf_by_hand(exported):
    _, layers, rf = _rf(exported, Strided)
    assert rf.rf == 45
    assert rf.jump == 8
    assert rf.size == (4, 4)
    assert [r.rf_out for r in rf.rows] == [3, 5, 9, 13, 21, 29, 45]
    assert [r.block for r in rf.rows] == [1, 2, 2, 3, 3, 4, 4]
    assert sum(1 for layer in layers if layer.kind == "conv" and is_transition(layer)) == 3


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (Plain, 9),
        (Strided, 45),
        (Dilated, 23),
        (Residual, 13),
        (SwappedResidual, 13),
        (Concat, 11),
        (ChannelsLastLinear, 5),
    ],
)
def test_analytic_rf_equals_the_gradient_measurement(exported, factory, expected):
    e, _, rf = _rf(exported, factory)
    assert rf.rf == expected
    m = measure_rf(e.loaded, rf.at, rf.rf, rf.jump)
    assert m.measured == rf.rf, m.note
    assert not m.clipped


def test_residual_rf_is_the_max_over_branches_not_the_last_operand(exported):
    _, _, a = _rf(exported, Residual)
    _, _, b = _rf(exported, SwappedResidual)
    assert a.rf == b.rf == 13
    assert a.jump == b.jump == 2
    # The shortcut row (1x1 stride 2) is part of the table: it is an ancestor of the map before GAP.
    assert any(r.kernel == 1 and r.stride == 2 for r in a.rows)


def test_rf_stops_before_global_pooling(exported):
    _e, layers, rf = _rf(exported, Strided)
    gap = [layer for layer in layers if layer.kind == "global_avg"]
    assert len(gap) == 1
    assert rf.at == gap[0].node.inputs[0]


def test_measured_rf_through_max_pooling(exported):
    e, _, rf = _rf(exported, MaxPoolNet)
    assert rf.rf == 8
    assert measure_rf(e.loaded, rf.at, rf.rf, rf.jump).measured == 8


# ---- max pooling written by hand, and what the recurrence cannot follow -------------------------------------


def _slice_max(x):
    """A 2x2 stride-2 max pool as the elementwise maximum of four strided slices."""
    return torch.maximum(
        torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2]), torch.maximum(x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2])
    )


def _reshape_amax(x):
    """The same pool as a reshape that splits H and W in two, and a max over the split-off dims."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))


def _where_max(x):
    """The same pool as where(a > b, a, b) on the even and odd columns, then rows."""
    a, b = x[:, :, :, 0::2], x[:, :, :, 1::2]
    x = torch.where(a > b, a, b)
    a, b = x[:, :, 0::2], x[:, :, 1::2]
    return torch.where(a > b, a, b)


class SliceMaxPool(nn.Module):
    """conv 3x3 (RF 3), conv 3x3 stride 2 (5, jump 2), a 2x2 stride-2 max pool written by hand (7, jump 4),
    conv 3x3 (15): small enough that the measurement on the 32x32 input is not clipped (the reshape
    spelling bakes the size in, so it can only be measured at 32x32)."""

    pool = staticmethod(_slice_max)

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(_cbr(3, 8), _cbr(8, 8, s=2))
        self.head = _cbr(8, 10)

    def forward(self, x):
        return self.head(self.pool(self.body(x))).mean((2, 3))


class ReshapeAmaxPool(SliceMaxPool):
    pool = staticmethod(_reshape_amax)


class WhereMaxPool(SliceMaxPool):
    pool = staticmethod(_where_max)


@pytest.mark.parametrize("factory", [SliceMaxPool, ReshapeAmaxPool, WhereMaxPool])
def test_max_pool_written_by_hand_goes_through_the_recurrence_exactly(exported, factory):
    e, layers, rf = _rf(exported, factory)
    assert (rf.rf, rf.jump, rf.size) == (15, 4, (8, 8)), rf.unknown
    m = measure_rf(e.loaded, rf.at, rf.rf, rf.jump)
    assert m.measured == rf.rf == 15, m.note
    assert not m.clipped
    (pool,) = [layer for layer in layers if layer.kind == "maxpool"]
    assert (pool.kernel, pool.stride, pool.in_hw, pool.out_hw) == ((2, 2), (2, 2), (16, 16), (8, 8))
    assert is_transition(pool)
    row = next(r for r in rf.rows if r.layer == pool.node.name)
    assert (row.rf_in, row.jump_in, row.rf_out, row.jump_out, row.block) == (5, 2, 7, 4, 3)


class ShiftedMax(nn.Module):
    """A max of the map and a copy rolled by 3 columns: a 1x4 window along W only (RF 3 x 6 after a 3x3
    conv); the measurement goes square by itself, since H and W differ."""

    def __init__(self):
        super().__init__()
        self.c = _cbr(3, 10)

    def forward(self, x):
        x = self.c(x)
        return torch.maximum(x, torch.roll(x, 3, 3)).mean((2, 3))


def test_a_max_of_rolled_copies_is_a_window_along_one_axis(exported):
    e, layers, rf = _rf(exported, ShiftedMax)
    assert rf.rf == 6
    assert [(layer.kind, layer.kernel, layer.stride) for layer in layers if layer.via] == [("maxpool", (1, 4), (1, 1))]
    m = measure_rf(e.loaded, rf.at, rf.rf, rf.jump)  # square=False: measure_rf sees that H and W differ
    assert m.measured == 6 and not m.clipped, m.note


class SqueezeExcite(nn.Module):
    """The map times a gate computed from its global average: every unit sees the whole image."""

    def __init__(self):
        super().__init__()
        self.c = _cbr(3, 10)

    def forward(self, x):
        x = self.c(x)
        return (x * torch.sigmoid(x.mean((2, 3), keepdim=True))).mean((2, 3))


def test_what_the_recurrence_cannot_follow_is_unknown_not_a_number(exported):
    _, _, rf = _rf(exported, SqueezeExcite)
    assert rf.rf is None
    assert rf.unknown.startswith("mul (SqueezeExcite, test_unit_rf.py:")
    assert "pooled over H x W and broadcast back" in rf.unknown


def _reference_net():
    spec = importlib.util.spec_from_file_location(
        "reference_model", Path(__file__).parents[2] / "reference_solution" / "model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net()


def test_reference_solution_keeps_its_rf_83_measured_83(exported):
    e = exported(_reference_net, key="reference_solution")
    layers = spatial_layers(e.loaded)
    rf = analytic_rf(e.loaded, layers)
    assert (rf.rf, rf.jump, rf.size) == (83, 8, (4, 4))
    assert not any(layer.via for layer in layers)  # nothing written by hand
    m = measure_rf(e.loaded, rf.at, rf.rf, rf.jump)
    assert m.measured == 83 and not m.clipped
