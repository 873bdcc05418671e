"""Augmentations: real albumentations pipelines described, probed and judged under the 1.x and 2.x spellings."""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest

A = pytest.importorskip("albumentations")

from grader.analysis.augmentations import analyze as analyze_facts  # noqa: E402
from grader.analysis.augmentations import expected_fill, to_pixels  # noqa: E402
from grader.augment_inspect import describe, probe_coarse_dropout  # noqa: E402
from grader.checks.augmentations import fill_matches  # noqa: E402
from grader.checks.augmentations import judge as judge_facts  # noqa: E402
from grader.rubric import load_rubric  # noqa: E402

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
MEAN255 = tuple(round(m * 255) for m in MEAN)  # (125, 123, 114)
V1_CORRECT = {
    "max_holes": 1,
    "max_height": 16,
    "max_width": 16,
    "min_holes": 1,
    "min_height": 16,
    "min_width": 16,
    "fill_value": MEAN255,
    "mask_fill_value": None,
}
V2_CORRECT = {
    "num_holes_range": (1, 1),
    "hole_height_range": (16, 16),
    "hole_width_range": (16, 16),
    "fill": tuple(m * 255 for m in MEAN),
    "fill_mask": None,
}

IS_V2 = int(A.__version__.split(".")[0]) >= 2
needs_v2 = pytest.mark.skipif(not IS_V2, reason="these cases are about albumentations 2.x ignoring the 1.x names")


@pytest.fixture(scope="module")
def rule():
    return load_rubric()["rules"]["augmentations"]


def coarse(kwargs: dict, record: bool = True, **extra):
    """A CoarseDropout built the way the student wrote it; the child records the kwargs it saw."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = A.CoarseDropout(**kwargs, **extra)
    if record:
        t._s6_kwargs = dict(kwargs, **extra)
    return t


def pipeline(*middle, flip=True, ssr=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = ([A.HorizontalFlip()] if flip else []) + ([A.ShiftScaleRotate()] if ssr else []) + list(middle)
        return A.Compose(items)


def analyze(transforms, trusted_probe, rule, mean, std, texts=(), source_calls=()):
    """The analysis' facts and the augmentations check's verdict on them, read as one (``f.meant`` beside ``f.problems``)."""
    facts = analyze_facts(transforms, trusted_probe, mean, std, list(texts), list(source_calls))
    return SimpleNamespace(**facts.to_dict(), **judge_facts(facts, rule).__dict__)


def judge(pipe, rule, texts=(), source_calls=(), probe=True):
    result = probe_coarse_dropout(pipe) if probe else None
    transforms = {
        "description": describe(pipe),
        "site": "t.py:1",
        "version": A.__version__,
        "coarse_dropout_probe": result,
    }
    return analyze(transforms, result, rule, MEAN, STD, list(texts), list(source_calls))


# ---- the probe ------------------------------------------------------------------------------------------------


def test_probe_of_the_correct_2x_pipeline():
    probe = probe_coarse_dropout(pipeline(coarse(V2_CORRECT, p=0.5)))
    assert probe["holes"] == [1, 1]
    assert probe["heights"] == [16, 16] and probe["widths"] == [16, 16]
    assert probe["dtype"] == "uint8"
    assert probe["before"] == ["HorizontalFlip", "ShiftScaleRotate"]
    for got, m in zip(probe["fill_min"], MEAN, strict=True):
        assert abs(got - m * 255) <= 1.0
    assert probe["fill_max"] == probe["fill_min"]


def test_probe_forces_dropout_on_and_ignores_p():
    probe = probe_coarse_dropout(pipeline(coarse(V2_CORRECT, p=0.0)))
    assert probe["holes"] == [1, 1]


def test_probe_without_coarse_dropout_is_none():
    assert probe_coarse_dropout(pipeline()) is None


def test_probe_after_normalize_measures_in_normalized_space():
    pipe = pipeline(A.Normalize(mean=MEAN, std=STD), coarse(dict(V2_CORRECT, fill=0)))
    probe = probe_coarse_dropout(pipe)
    assert probe["normalized_before"] is True
    assert probe["dtype"] == "float32"
    assert probe["holes"] == [1, 1] and probe["heights"] == [16, 16]
    assert all(abs(v) < 1e-6 for v in probe["fill_min"])


@needs_v2
def test_probe_sees_what_2x_really_does_with_1x_names():
    probe = probe_coarse_dropout(pipeline(coarse(V1_CORRECT)))
    # 2.x ignores every 1.x name: its defaults are 1-2 holes of 10-20% of the side, filled with 0.
    assert probe["holes"] != [1, 1] or probe["heights"] != [16, 16]
    assert probe["fill_min"] == [0.0, 0.0, 0.0]


# ---- describe -------------------------------------------------------------------------------------------------


def test_describe_reads_attrs_kwargs_and_nested_containers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = A.Compose(
            [A.OneOf([A.HorizontalFlip(), A.VerticalFlip()], p=1), A.ShiftScaleRotate(p=0.3), coarse(V2_CORRECT)]
        )
    d = describe(pipe)
    assert d["class"] == "Compose"
    assert [t["class"] for t in d["transforms"]] == ["OneOf", "ShiftScaleRotate", "CoarseDropout"]
    assert [t["class"] for t in d["transforms"][0]["transforms"]] == ["HorizontalFlip", "VerticalFlip"]
    assert d["transforms"][0]["transforms"][1]["path"] == "0.1"
    cd = d["transforms"][2]
    assert cd["passed_kwargs"]["num_holes_range"] == (1, 1)
    if IS_V2:
        assert cd["attrs"]["num_holes_range"] == [1, 1]
        assert cd["attrs"]["hole_height_range"] == [16, 16]
    assert d["transforms"][1]["p"] == 0.3


@needs_v2
def test_describe_records_the_ignored_1x_names():
    d = describe(coarse(V1_CORRECT))
    assert set(d["invalid_args"]) == set(V1_CORRECT)


# ---- the verdict ----------------------------------------------------------------------------------------------


def test_2x_spelling_correct_passes(rule):
    f = judge(pipeline(coarse(V2_CORRECT)), rule)
    assert f.problems == []
    assert f.spelling == "2.x"
    assert f.meant["holes"] == [1, 1] and f.meant["height"] == [16, 16] and f.meant["width"] == [16, 16]
    assert f.found == {"HorizontalFlip": True, "ShiftScaleRotate": True, "CoarseDropout": True}
    assert f.suggestion == ""
    assert f.warnings == []


def test_2x_spelling_correct_passes_from_attrs_alone(rule):
    """Without the child's kwargs (nor source calls) the built object's 2.x attributes decide."""
    f = judge(pipeline(coarse(V2_CORRECT, record=False)), rule)
    assert f.problems == [] and f.spelling == "2.x"


@needs_v2
def test_1x_spelling_under_2x_passes_with_a_warning_and_a_suggestion(rule):
    f = judge(pipeline(coarse(V1_CORRECT)), rule)
    assert f.problems == []
    assert f.spelling == "1.x"
    assert f.meant == {"holes": [1, 1], "height": [16, 16], "width": [16, 16], "fill": MEAN255, "mask_fill": None}
    assert any("ignores max_holes" in w and A.__version__ in w for w in f.warnings), f.warnings
    assert f.suggestion.startswith(
        "A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(16, 16), hole_width_range=(16, 16), "
        "fill=(125, 123, 114), fill_mask=None"
    )
    assert not any("own run was affected" in w for w in f.warnings)


@needs_v2
def test_1x_spelling_from_source_calls(rule):
    """When the child could not record the kwargs, the literal arguments read from the source are used."""
    calls = [{"name": "HorizontalFlip", "kwargs": {}}, {"name": "CoarseDropout", "kwargs": dict(V1_CORRECT)}]
    f = judge(pipeline(coarse(V1_CORRECT, record=False)), rule, source_calls=calls)
    assert f.spelling == "1.x"
    assert f.problems == []
    assert f.suggestion.startswith("A.CoarseDropout(num_holes_range=(1, 1)")


@needs_v2
def test_ignored_names_warning_in_the_students_log_is_cited(rule):
    log = (
        "Epoch 1\n"
        "/usr/lib/python3/site-packages/albumentations/core/validation.py:58: UserWarning: Argument(s) "
        "'max_holes, max_height, max_width, min_holes, min_height, min_width, fill_value, mask_fill_value' "
        "are not valid for transform CoarseDropout\n"
    )
    f = judge(pipeline(coarse(V1_CORRECT)), rule, texts=[("train.log", "nothing here\n"), ("S6.ipynb", log)])
    assert f.problems == []
    evidence = [w for w in f.warnings if "own run was affected" in w]
    assert len(evidence) == 1
    assert "S6.ipynb:2:" in evidence[0]


@needs_v2
def test_1x_fill_in_0_1_on_a_uint8_image_is_black(rule):
    f = judge(pipeline(coarse(dict(V1_CORRECT, fill_value=(0.49, 0.48, 0.45)))), rule)
    assert len(f.problems) == 1
    assert "black" in f.problems[0]
    assert "fill (0.49, 0.48, 0.45)" in f.problems[0]
    assert f.value_space == "uint8"


def test_normalize_and_to_tensor_after_coarse_dropout_keep_the_uint8_space(rule):
    from albumentations.pytorch import ToTensorV2

    f = judge(pipeline(coarse(V2_CORRECT), A.Normalize(mean=MEAN, std=STD), ToTensorV2()), rule)
    assert f.value_space == "uint8"
    assert f.problems == []
    assert f.behaviour["before"] == ["HorizontalFlip", "ShiftScaleRotate"]


def test_fill_mean255_after_normalize_fails(rule):
    pipe = pipeline(A.Normalize(mean=MEAN, std=STD), coarse(V2_CORRECT))
    f = judge(pipe, rule)
    assert f.value_space == "normalized"
    assert all(abs(v) < 1e-6 for v in f.expected_fill)
    assert any("after Normalize the mean is about 0" in p for p in f.problems), f.problems


def test_fill_zero_after_normalize_passes(rule):
    f = judge(pipeline(A.Normalize(mean=MEAN, std=STD), coarse(dict(V2_CORRECT, fill=0))), rule)
    assert f.problems == []
    assert f.value_space == "normalized"


def test_fill_in_0_1_after_to_float_passes_and_255_fails(rule):
    ok = judge(pipeline(A.ToFloat(max_value=255), coarse(dict(V2_CORRECT, fill=MEAN))), rule)
    assert ok.value_space == "float"
    assert ok.problems == []
    bad = judge(pipeline(A.ToFloat(max_value=255), coarse(V2_CORRECT)), rule)
    assert any("not the dataset mean" in p for p in bad.problems)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(V2_CORRECT, hole_height_range=(8, 8), hole_width_range=(8, 8)),
        dict(V2_CORRECT, num_holes_range=(1, 2)),
        dict(V2_CORRECT, hole_height_range=(8, 16)),
    ],
    ids=["8x8", "1-2 holes", "8-16 high"],
)
def test_wrong_holes_fail(rule, kwargs):
    f = judge(pipeline(coarse(kwargs)), rule)
    assert f.problems
    assert any("the assignment asks for" in p for p in f.problems)


@needs_v2
def test_1x_wrong_hole_size_fails(rule):
    f = judge(pipeline(coarse(dict(V1_CORRECT, max_height=8, min_height=8))), rule)
    assert any("hole height (8, 8)" in p for p in f.problems), f.problems


def test_mask_fill_must_be_none(rule):
    f = judge(pipeline(coarse(dict(V2_CORRECT, fill_mask=0))), rule)
    assert any("mask fill" in p for p in f.problems)


def test_fractional_2x_ranges_are_pixels_of_the_image(rule):
    kwargs = dict(V2_CORRECT, hole_height_range=(0.5, 0.5), hole_width_range=(0.5, 0.5))
    f = judge(pipeline(coarse(kwargs)), rule)
    assert f.meant["height"] == [16, 16] and f.meant["width"] == [16, 16]
    assert f.problems == []
    assert f.behaviour["heights"] == [16, 16]


def test_missing_shift_scale_rotate_fails(rule):
    f = judge(pipeline(coarse(V2_CORRECT), ssr=False), rule)
    assert f.found["ShiftScaleRotate"] is False
    assert f.problems == ["ShiftScaleRotate is missing from the train pipeline (t.py:1)"]


def test_missing_horizontal_flip_and_coarse_dropout_fail(rule):
    f = judge(pipeline(flip=False), rule, probe=False)
    assert f.found == {"HorizontalFlip": False, "ShiftScaleRotate": True, "CoarseDropout": False}
    assert len(f.problems) == 2


def _affine_pipeline():
    affine = A.Affine(translate_percent=0.1, scale=(0.9, 1.1), rotate=(-15, 15))
    return pipeline(affine, coarse(V2_CORRECT), ssr=False)


def test_affine_instead_of_shift_scale_rotate_fails(rule):
    f = judge(_affine_pipeline(), rule)
    assert len(f.problems) == 1 and "A.Affine is used instead" in f.problems[0]
    assert f.found["ShiftScaleRotate"] is False


def test_affine_passes_when_the_rubric_accepts_it(rule):
    f = judge(_affine_pipeline(), dict(rule, accept_affine_for_shift_scale_rotate=True))
    assert f.problems == []
    assert f.notes == ["A.Affine stands in for ShiftScaleRotate (the rubric accepts it)"]
    assert f.found["ShiftScaleRotate"] is True


def test_p_zero_fails(rule):
    f = judge(pipeline(coarse(V2_CORRECT, p=0.0)), rule)
    assert f.problems == ["CoarseDropout has p=0.0: it is never applied"]


def test_no_pipeline_at_all(rule):
    f = analyze(None, None, rule, MEAN, STD)
    assert f.problems == ["no albumentations train pipeline could be built"]


def test_mixed_spelling_is_judged_by_the_1x_names(rule):
    kwargs = dict(V1_CORRECT, num_holes_range=(1, 1))
    f = analyze(
        {
            "description": {
                "class": "Compose",
                "transforms": [
                    {"class": "HorizontalFlip", "p": 0.5},
                    {"class": "ShiftScaleRotate", "p": 0.5},
                    {"class": "CoarseDropout", "p": 0.5, "attrs": {}, "passed_kwargs": kwargs},
                ],
            },
            "site": "t.py:3",
        },
        None,
        rule,
        MEAN,
        STD,
    )
    assert f.spelling == "1.x"
    assert any("mixes 1.x names" in w for w in f.warnings)
    assert any("could not be measured" in w for w in f.warnings)
    assert f.problems == []


def test_behaviour_contradicting_the_2x_arguments_fails(rule):
    """A probe that saw something else than the arguments say (e.g. a patched transform) fails the rule."""
    pipe = pipeline(coarse(V2_CORRECT))
    probe = probe_coarse_dropout(pipe)
    probe = dict(probe, holes=[2, 2])
    transforms = {
        "description": describe(pipe),
        "site": "t.py:1",
        "version": A.__version__,
        "coarse_dropout_probe": probe,
    }
    f = analyze(transforms, probe, rule, MEAN, STD)
    assert any("behaves differently from its arguments" in p for p in f.problems)


# ---- helpers ----------------------------------------------------------------------------------------------------


def test_expected_fill_per_value_space():
    assert expected_fill(MEAN, "uint8", None) == pytest.approx([m * 255 for m in MEAN])
    assert expected_fill(MEAN, "float", None) == pytest.approx(list(MEAN))
    norm = {"attrs": {"mean": list(MEAN), "std": list(STD), "max_pixel_value": 255.0}}
    assert expected_fill(MEAN, "normalized", norm) == pytest.approx([0, 0, 0], abs=1e-9)
    half = {"attrs": {"mean": 0.5, "std": 0.5, "max_pixel_value": 255.0}}
    assert expected_fill(MEAN, "normalized", half) == pytest.approx([(m - 0.5) / 0.5 for m in MEAN])


def test_fill_matches_casts_like_uint8():
    assert fill_matches((125.9, 123.0, 114.0), [125.3, 122.96, 113.86], "uint8", 0.03, STD)
    assert not fill_matches((0.49, 0.48, 0.45), [125.3, 122.96, 113.86], "uint8", 0.03, STD)
    assert not fill_matches("random", [125.3, 122.96, 113.86], "uint8", 0.03, STD)
    assert fill_matches(0, [0.0, 0.0, 0.0], "normalized", 0.03, STD)


def test_to_pixels():
    assert to_pixels([0.5, 0.5], 32, "2.x") == [16, 16]
    assert to_pixels([16, 16], 32, "2.x") == [16, 16]
    assert to_pixels([0.5, 16], 32, "1.x") == [16, 16]
