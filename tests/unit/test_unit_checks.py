"""The rule checks in checks/ run end to end (pytest in-process) over facts built from in-process models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.analysis.augmentations import analyze as analyze_augmentations
from grader.analysis.layers import param_facts, spatial_layers
from grader.analysis.receptive_field import analytic_rf, measure_rf
from grader.analysis.source import SourceFacts
from grader.checks_runner import run_checks
from grader.facts import Facts
from grader.rubric import load_rubric

MODEL_RULES = ("no_maxpool", "architecture", "receptive_field", "depthwise_separable", "dilated", "gap", "params")

GPU_SOURCES = SourceFacts(
    device_lines=["train.py:3: device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')"],
    move_lines=["train.py:9: model = Net().to(device)"],
)


def _cbr(cin, cout, k=3, s=1, p=1, d=1, g=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, p, dilation=d, groups=g, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def _dws(c, cout):
    return nn.Sequential(_cbr(c, c, g=c), _cbr(c, cout, k=1, p=0))


class Good(nn.Module):
    """C1 | t1 | C2 (depthwise separable) | t2 | C3 (dilated) | t3 (+ 1x1 stride-2 shortcut) | C4 | GAP | FC. RF 53."""

    def __init__(self, c=8):
        super().__init__()
        self.c1 = _cbr(3, c)
        self.t1 = _cbr(c, c, s=2)
        self.c2 = _dws(c, c)
        self.t2 = _cbr(c, c, s=2)
        self.c3 = _cbr(c, c, p=2, d=2)
        self.t3 = _cbr(c, c, s=2)
        self.short = nn.Conv2d(c, c, 1, stride=2)
        self.c4 = _cbr(c, c)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 10)

    def features(self, x):
        x = self.c3(self.t2(self.c2(self.t1(self.c1(x)))))
        return self.c4(self.t3(x) + self.short(x))

    def forward(self, x):
        return self.fc(self.gap(self.features(x)).flatten(1))


class WithMaxPool(Good):
    def __init__(self):
        super().__init__()
        self.t2 = nn.Sequential(_cbr(8, 8), nn.MaxPool2d(2, 2))


class TwoTransitionsConvAfterGap(Good):
    """t3 does not stride (two transitions), and a 3x3 conv runs after GAP."""

    def __init__(self):
        super().__init__()
        self.t3 = _cbr(8, 8)
        self.short = nn.Conv2d(8, 8, 1)
        self.after = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.fc(self.after(self.gap(self.features(x))).flatten(1))


class AvgPoolTransitionAndHead(Good):
    """t1 shrinks by AvgPool2d(2); the head is the seed README's AvgPool2d(3) on a 4x4 map (not global)."""

    def __init__(self):
        super().__init__()
        self.t1 = nn.Sequential(_cbr(8, 8), nn.AvgPool2d(2))
        self.gap = nn.AvgPool2d(3)


class OneByOneTransitionTooManyParams(Good):
    """t1 is a 1x1 stride-2 conv; a 200k-weight linear layer in the head."""

    def __init__(self):
        super().__init__()
        self.t1 = _cbr(8, 8, k=1, s=2, p=0)
        self.fc = nn.Sequential(nn.Linear(8, 20_000), nn.Linear(20_000, 10))


class SmallRFHiddenWeights(nn.Module):
    """Three stride-2 transitions right away: RF 3, 7, 15, 23 (<= 44); a 200k-element buffer used as a weight."""

    def __init__(self, c=8):
        super().__init__()
        self.t1 = _cbr(3, c, s=2)
        self.t2 = _dws(c, c)
        self.t3 = _cbr(c, c, s=2, p=2, d=2)
        self.t4 = _cbr(c, c, s=2)
        self.register_buffer("w", torch.randn(200_000 // c, c, 1, 1) * 0.01)

    def forward(self, x):
        x = self.t4(self.t3(self.t2(self.t1(x))))
        return F.conv2d(x, self.w).mean((2, 3))[:, :10]


class DilatedShrink(nn.Module):
    """The bonus: 32 -> 16 -> 8 -> 4 by un-padded dilated 3x3 convs (d 8, 4, 2), no stride, no pooling."""

    def __init__(self, c=8):
        super().__init__()
        self.c1 = _cbr(3, c)
        self.t1 = _cbr(c, c, p=0, d=8)
        self.c2 = _dws(c, c)
        self.t2 = _cbr(c, c, p=0, d=4)
        self.t3 = _cbr(c, c, p=0, d=2)
        self.c4 = _cbr(c, c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.c4(self.t3(self.t2(self.c2(self.t1(self.c1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _slice_max(x):
    return torch.maximum(
        torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2]), torch.maximum(x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2])
    )


def _reshape_amax(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))


def _where_max(x):
    a, b = x[:, :, :, 0::2], x[:, :, :, 1::2]
    x = torch.where(a > b, a, b)
    a, b = x[:, :, 0::2], x[:, :, 1::2]
    return torch.where(a > b, a, b)


def _strided_slice(x):
    return x[:, :, ::2, ::2]


class SliceMaxPool(Good):
    """The hostile student's model: t2 is a 3x3 conv and a 2x2 stride-2 max pool written as the maximum of
    four strided slices (no MaxPool2d, no max_pool2d). RF 3, 5, 9, 13, pool 15, 31, 39, 55."""

    down = staticmethod(_slice_max)

    def __init__(self):
        super().__init__()
        self.t2 = _cbr(8, 8)

    def features(self, x):
        x = self.c3(self.down(self.t2(self.c2(self.t1(self.c1(x))))))
        return self.c4(self.t3(x) + self.short(x))


class ReshapeAmaxPool(SliceMaxPool):
    """The same pool as a reshape that splits H and W, and amax over the split-off dims."""

    down = staticmethod(_reshape_amax)


class WhereMaxPool(SliceMaxPool):
    """The same pool as where(a > b, a, b) on even and odd columns, then rows."""

    down = staticmethod(_where_max)


class StridedSliceDown(SliceMaxPool):
    """t2 downsamples by x[:, :, ::2, ::2]: no pooling, but no convolution either. RF 53."""

    down = staticmethod(_strided_slice)


class ZeroGate(Good):
    """A copy of the last map shifted by one unit (8 pixels) along H and W, added through a gate that is 0:
    the recurrence counts what the copy sees (61), the gradient measurement does not (53)."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(1))

    def features(self, x):
        x = super().features(x)
        return x + self.gate * torch.roll(x, (1, 1), (2, 3))


class SqueezeExcite(Good):
    """The last map times a gate computed from its global average: the recurrence cannot follow it."""

    def features(self, x):
        x = super().features(x)
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))


class DilatedSlicePool(DilatedShrink):
    """The bonus model with its first reduction (32 -> 16) a max pool written by hand: no bonus."""

    down = staticmethod(_slice_max)

    def __init__(self):
        super().__init__()
        self.t1 = _cbr(8, 8)

    def forward(self, x):
        x = self.c4(self.t3(self.t2(self.c2(self.down(self.t1(self.c1(x)))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DilatedStridedSlice(DilatedSlicePool):
    """The same with a strided slice: no bonus either."""

    down = staticmethod(_strided_slice)


MEASURED = (Good, DilatedShrink, SliceMaxPool, ReshapeAmaxPool, WhereMaxPool, StridedSliceDown, ZeroGate, SqueezeExcite)


_RESULTS: dict[str, dict] = {}

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _pipeline(**coarse_dropout) -> dict:
    """The child's description of a train pipeline whose CoarseDropout was passed ``coarse_dropout`` (not probed)."""
    kwargs = {
        "num_holes_range": (1, 1),
        "hole_height_range": (16, 16),
        "hole_width_range": (16, 16),
        "fill": tuple(m * 255 for m in MEAN),
        "fill_mask": None,
        **coarse_dropout,
    }
    leaves = [
        {"class": "HorizontalFlip", "module": "albumentations.augmentations.geometric.flip", "p": 0.5},
        {"class": "ShiftScaleRotate", "module": "albumentations.augmentations.geometric.transforms", "p": 0.5},
        {"class": "CoarseDropout", "module": "albumentations.augmentations.dropout", "p": 0.5, "passed_kwargs": kwargs},
    ]
    return {"description": {"class": "Compose", "transforms": leaves}, "site": "t.py:4"}


NOT_MEASURED = "the CoarseDropout behaviour could not be measured: judged by its configuration only"


def _facts(e, rubric, sources=GPU_SOURCES, aug=None, measure=False) -> Facts:
    facts = Facts(submission=Path("."), rubric=rubric)
    facts.graph = e.loaded
    facts.layers = spatial_layers(e.loaded)
    facts.params = param_facts(e.loaded)
    facts.rf = analytic_rf(e.loaded, facts.layers)
    if measure:  # the gradient measurement is covered in test_unit_rf; here only where a check reads it
        facts.measured_rf = measure_rf(e.loaded, facts.rf.at, facts.rf.rf, facts.rf.jump)
    facts.sources = sources
    facts.aug = aug
    return facts


@pytest.fixture(scope="module")
def rubric():
    return load_rubric()


@pytest.fixture(scope="module")
def results(exported, rubric):
    def get(factory):
        name = factory.__name__
        if name not in _RESULTS:
            aug = analyze_augmentations(_pipeline(), None, MEAN, STD) if factory is Good else None
            facts = _facts(exported(factory), rubric, aug=aug, measure=factory in MEASURED)
            _RESULTS[name] = {r.id: r for r in run_checks(facts, rubric)}
        return _RESULTS[name]

    return get


def _status(res):
    return {rule: res[rule].status for rule in MODEL_RULES}


def test_good_model_passes_every_model_rule(results):
    res = results(Good)
    assert _status(res) == dict.fromkeys(MODEL_RULES, "passed"), {k: res[k].message for k in MODEL_RULES}
    assert res["receptive_field"].message.startswith("RF 53 at c4")
    assert "measured 53" in res["receptive_field"].message
    assert not res["receptive_field"].warnings  # the measurement agrees
    # the 1x1 stride-2 shortcut beside the 3x3 transition does not count as a transition of its own
    assert "3 transitions by convolution (32 -> 16 -> 8 -> 4)" in res["architecture"].message
    blocks = res["architecture"].evidence["blocks"]
    assert [b["name"] for b in blocks] == ["C1", "C2", "C3", "C4"]
    assert [b["size"] for b in blocks] == [32, 16, 8, 4]
    assert "depthwise" in res["depthwise_separable"].message
    assert res["gpu"].status == "passed"
    assert res["augmentations"].status == "passed"
    assert res["augmentations"].warnings == [NOT_MEASURED]  # a warning is shown to the student
    assert res["bonus"].status == "failed" and "stride" in res["bonus"].message
    assert res["bonus"].extra and not res["bonus"].required and res["bonus"].points == 0
    assert res["params"].points == res["params"].max_points == 125
    # Rules that need what this run does not have are skipped, not failed.
    assert res["accuracy"].status == "skipped"
    assert res["readme"].status == "skipped"


def test_max_pool_fails_no_maxpool_naming_the_layer(results):
    res = results(WithMaxPool)
    assert res["no_maxpool"].status == "failed"
    assert "t2.1 (MaxPool2d, test_unit_checks.py:" in res["no_maxpool"].message
    assert res["no_maxpool"].points == 0
    assert res["architecture"].status == "failed"
    assert "made smaller by pooling: max pool 2x2 stride 2 at t2.1" in res["architecture"].message
    assert res["bonus"].status == "failed"


@pytest.mark.parametrize(
    ("factory", "spelled", "last"),
    [
        (SliceMaxPool, "slice, maximum", "maximum_2"),
        (ReshapeAmaxPool, "reshape, amax", "amax"),
        (WhereMaxPool, "slice, gt, where", "where_1"),
    ],
)
def test_max_pool_written_by_hand_fails_no_maxpool_architecture_and_bonus(results, factory, spelled, last):
    res = results(factory)
    pool = f"max pool 2x2 stride 2 (written as {spelled}) at {last} ({factory.__name__}, test_unit_checks.py:"
    assert res["no_maxpool"].status == "failed"
    assert res["no_maxpool"].message.startswith("max pooling runs in the model: "), res["no_maxpool"].message
    assert pool in res["no_maxpool"].message
    assert res["no_maxpool"].evidence["layers"][-1].startswith(f"{last} ({factory.__name__}, test_unit_checks.py:")
    assert res["architecture"].status == "failed"
    assert f"the feature map is made smaller by pooling: {pool}" in res["architecture"].message
    # The recurrence goes through the hand-written pool exactly; where the reshape bakes the size in, the
    # measurement only runs at 32x32 and is a lower bound (clipped), which does not contradict it.
    assert res["receptive_field"].status == "passed", res["receptive_field"].message
    assert res["receptive_field"].evidence["rf"] == 55
    if factory is not ReshapeAmaxPool:
        assert res["receptive_field"].evidence["measured"] == 55
    assert {k: res[k].status for k in ("depthwise_separable", "dilated", "gap")} == dict.fromkeys(
        ("depthwise_separable", "dilated", "gap"), "passed"
    )


def test_strided_slice_is_downsampling_without_a_convolution(results):
    res = results(StridedSliceDown)
    assert res["architecture"].status == "failed"
    assert res["architecture"].message.startswith(
        "the feature map is made smaller by an op that is not a convolution: slice_2 (StridedSliceDown, "
        "test_unit_checks.py:"
    ), res["architecture"].message
    assert "16x16 -> 8x8 without a convolution stride 2 (written as slice)" in res["architecture"].message
    assert res["no_maxpool"].status == "passed"
    assert res["receptive_field"].evidence == {"rf": 53, "at": "c4.0", "measured": 53}


@pytest.mark.parametrize(
    ("factory", "how"),
    [
        (DilatedSlicePool, "pooling: max pool 2x2 stride 2 (written as slice, maximum) at maximum_2"),
        (
            DilatedStridedSlice,
            "an op that is not a convolution: 32x32 -> 16x16 without a convolution stride 2 "
            "(written as slice) at slice_2",
        ),
    ],
)
def test_bonus_fails_when_a_reduction_is_not_a_dilated_convolution(results, factory, how):
    res = results(factory)
    assert res["bonus"].status == "failed"
    assert res["bonus"].message.startswith(f"downsampling by {how} ({factory.__name__}, test_unit_checks.py:")


def test_recurrence_and_measurement_that_disagree_are_an_error_not_a_pass(results):
    res = results(ZeroGate)
    rf = res["receptive_field"]
    assert rf.status == "error", rf.message
    assert rf.message.startswith("the recurrence gives RF 61 at c4.0 (4x4 map) but the gradient measurement gives 53")
    assert rf.evidence["error_type"] == "rf_mismatch"
    assert rf.points == 0
    assert rf.hint.startswith("the receptive field is checked by hand")


def test_a_receptive_field_the_recurrence_cannot_follow_is_an_error(results):
    res = results(SqueezeExcite)
    rf = res["receptive_field"]
    assert rf.status == "error", rf.message
    assert rf.message.startswith("the receptive field at c4.0 could not be computed: mul (SqueezeExcite, ")
    assert "the gradient measurement gives" in rf.message
    assert rf.evidence["rf"] is None and rf.evidence["error_type"] == "rf_mismatch"


def test_two_transitions_fail_architecture_and_conv_after_gap_fails_gap(results):
    res = results(TwoTransitionsConvAfterGap)
    assert res["architecture"].status == "failed"
    assert res["architecture"].message.startswith("2 transition(s) (32 -> 16 -> 8)")
    assert res["gap"].status == "failed"
    assert "conv2d at after (Conv2d" in res["gap"].message
    assert res["no_maxpool"].status == "passed"


def test_avgpool_transition_fails_architecture_and_avgpool3_head_fails_gap(results):
    res = results(AvgPoolTransitionAndHead)
    assert res["architecture"].status == "failed"
    assert "made smaller by pooling: avg pool 2x2 stride 2 at t1.1" in res["architecture"].message
    assert res["gap"].status == "failed"
    assert "3x3 kernel on a 4x4 map: not global" in res["gap"].message
    assert res["no_maxpool"].status == "passed"


def test_1x1_strided_transition_fails_architecture_and_params_over_the_limit(results):
    res = results(OneByOneTransitionTooManyParams)
    assert res["architecture"].status == "failed"
    assert "smaller than 3x3" in res["architecture"].message and "t1.0" in res["architecture"].message
    assert res["params"].status == "failed"
    assert res["params"].evidence["params"] >= 200_000
    assert res["params"].points == 0


def test_small_rf_fails_receptive_field_and_buffer_weights_count(results):
    res = results(SmallRFHiddenWeights)
    assert res["receptive_field"].status == "failed"
    assert res["receptive_field"].message.startswith("RF 23 at conv2d_5 (4x4 map)")  # the F.conv2d with the buffer
    assert res["receptive_field"].evidence["rf"] == 23
    assert res["architecture"].status == "passed", res["architecture"].message
    assert res["params"].status == "failed"
    assert res["params"].message.startswith("hidden data: besides 1,584 parameters the forward reads 200,000 numbers")
    assert "w (buffer, float32 [25000, 8, 1, 1]" in res["params"].message
    assert res["params"].evidence["hidden_total"] == 200_000


def test_bonus_passes_for_dilated_unpadded_shrinking(results):
    res = results(DilatedShrink)
    assert res["bonus"].status == "passed", res["bonus"].message
    assert res["bonus"].points == 200
    assert res["architecture"].status == "passed", res["architecture"].message
    assert res["dilated"].status == "passed"
    assert res["depthwise_separable"].status == "passed"
    # RF: 3, then 3+16 = 19, dws 21, 21+8 = 29, 29+4 = 33, 35: the bonus does not make the RF rule pass
    assert res["receptive_field"].evidence == {"rf": 35, "at": "c4.0", "measured": 35}
    assert res["receptive_field"].status == "failed"


def test_model_that_was_not_analysed_gives_a_typed_error_on_every_model_rule(rubric):
    facts = Facts(submission=Path("."), rubric=rubric)
    facts.failure = {"type": "timeout", "message": "killed after 180 s", "where": "model.py:3"}
    facts.sources = SourceFacts()
    res = {r.id: r for r in run_checks(facts, rubric)}
    for rule in MODEL_RULES:
        assert res[rule].status == "error", rule
        assert "timeout (model.py:3)" in res[rule].message
        assert res[rule].evidence.get("error_type") == "timeout"
    assert res["gpu"].status == "failed"
    assert res["augmentations"].status == "error"


def test_gpu_and_augmentations_failures_from_facts(rubric):
    facts = Facts(submission=Path("."), rubric=rubric)
    facts.sources = SourceFacts(device_lines=["t.py:1: device = torch.device('cuda')"])
    facts.aug = analyze_augmentations(_pipeline(num_holes_range=(1, 2)), None, MEAN, STD)
    res = {r.id: r for r in run_checks(facts, rubric)}
    assert res["gpu"].status == "failed" and "nothing is moved" in res["gpu"].message
    assert res["augmentations"].status == "failed"
    assert res["augmentations"].message.startswith("CoarseDropout (t.py:4): holes (1, 2)")
    assert res["augmentations"].evidence["problems"] == [
        "CoarseDropout (t.py:4): holes (1, 2), the assignment asks for exactly 1"
    ]


def test_titles_carry_the_rubrics_thresholds(exported, rubric):
    """A title states the rubric's figure: the default one, and a course's own when it sets another."""
    import copy

    titles = {r.id: r.title for r in results_for(exported, rubric)}
    assert titles["receptive_field"].endswith("is more than 44")
    assert titles["params"] == "Fewer than 200,000 parameters"
    assert titles["accuracy"].startswith("At least 85% test accuracy")
    course = copy.deepcopy(rubric)
    course["rules"]["receptive_field"]["greater_than"] = 60
    course["rules"]["params"]["less_than"] = 150000
    course["rules"]["accuracy"]["target"] = 80.5
    titles = {r.id: r.title for r in results_for(exported, course)}
    assert titles["receptive_field"].endswith("is more than 60")
    assert titles["params"] == "Fewer than 150,000 parameters"
    assert titles["accuracy"].startswith("At least 80.5% test accuracy")


def results_for(exported, rubric):
    return run_checks(_facts(exported(Good), rubric), rubric)
