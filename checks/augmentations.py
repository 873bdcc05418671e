"""The augmentations rule's verdict (test_training.py::test_augmentations), from the analysis' facts.

grader/analysis/augmentations.py says what the pipeline is; this module says what is wrong with it,
against the rubric's ``[rules.augmentations]``: the required transforms, whether A.Affine may stand in
for ShiftScaleRotate, and CoarseDropout's holes, sizes, fill tolerance and mask fill.

What the student wrote is judged in the semantics of the spelling used (1.x names as 1.x meant them).
When the installed albumentations ignores the 1.x names (2.x drops them with only a UserWarning) the
verdict still follows the student's spelling, and the warnings say that the pipeline really behaves
otherwise, show the spelling that works, and point at the warning in the student's own log when it is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grader.analysis.augmentations import AugFindings, fill_offset


@dataclass
class AugVerdict:
    problems: list[str] = field(default_factory=list)  # each fails the rule
    warnings: list[str] = field(default_factory=list)  # shown, do not fail
    notes: list[str] = field(default_factory=list)
    suggestion: str = ""  # the CoarseDropout call that means the same under albumentations 2.x
    found: dict[str, bool] = field(default_factory=dict)  # each required transform: albumentations' own, there
    unit_mistake: bool = False  # the mean written in 0-1 units on a uint8 image: intent right, effect black


def judge(f: AugFindings, rule: dict) -> AugVerdict:
    """What fails the rule, what is only shown, and the spelling to suggest."""
    v = AugVerdict()
    if not f.built:
        v.problems.append("no albumentations train pipeline could be built")
        return v
    names = [t["class"] for t in f.transforms]
    for name in rule["required"]:
        present = name in names
        if not present and name == "ShiftScaleRotate" and "Affine" in names:
            if rule["accept_affine_for_shift_scale_rotate"]:
                v.notes.append("A.Affine stands in for ShiftScaleRotate (the rubric accepts it)")
                present = True
            else:
                v.problems.append(
                    "ShiftScaleRotate is missing: A.Affine is used instead (the assignment asks for ShiftScaleRotate)"
                )
                v.found[name] = False
                continue
        v.found[name] = present
        if not present:
            v.problems.append(f"{name} is missing from the train pipeline ({'?' if f.site is None else f.site})")
            continue
        t = next(
            (t for t in f.transforms if t["class"] in (name, "Affine" if name == "ShiftScaleRotate" else name)), None
        )
        module = str((t or {}).get("module") or "albumentations")
        if not module.startswith("albumentations"):
            v.problems.append(
                f"{name} in the train pipeline is the submission's own class (from {module}), not albumentations' A.{name}"
            )
            v.found[name] = False
            continue
        if t is not None and isinstance(t.get("p"), (int, float)) and t["p"] <= 0:
            v.problems.append(f"{name} has p={t['p']}: it is never applied")
    if "CoarseDropout" in names:
        _coarse_dropout(v, f, rule["coarse_dropout"])
    return v


def _coarse_dropout(v: AugVerdict, f: AugFindings, want: dict) -> None:
    want_holes, want_h, want_w = want["holes"], want["height"], want["width"]
    tolerance = float(want["fill_tolerance"])
    if f.v1_names and f.v2_names:
        v.warnings.append(
            f"CoarseDropout mixes 1.x names ({', '.join(f.v1_names)}) and 2.x names ({', '.join(f.v2_names)}); judged by the 1.x names"
        )
    meant, space, expected = f.meant, f.value_space, f.expected_fill
    where = f"CoarseDropout ({'' if f.site is None else f.site})"
    if list(meant["holes"]) != list(want_holes):
        v.problems.append(f"{where}: holes {_fmt(meant['holes'])}, the assignment asks for exactly {want_holes[0]}")
    if list(meant["height"]) != list(want_h) or list(meant["width"]) != list(want_w):
        v.problems.append(
            f"{where}: hole height {_fmt(meant['height'])} and width {_fmt(meant['width'])} px, "
            f"the assignment asks for {want_h[0]}x{want_w[0]}"
        )
    if meant["mask_fill"] is not None and want["mask_fill"] == "none":
        v.problems.append(f"{where}: mask fill is {meant['mask_fill']!r}, the assignment asks for None")
    space_text = {
        "uint8": "a uint8 image (0-255)",
        "float": "a float image (0-1)",
        "normalized": "the normalized image (after Normalize)",
    }[space]
    if not _within(f.fill_offset, space, tolerance, f.dataset_std):
        fill = meant["fill"]
        hint = ""
        if space == "uint8" and _all_unit(fill):
            hint = " - 0-1 values on a uint8 image are black, not the mean"
            v.unit_mistake = True
        elif space == "normalized" and _all_large(fill):
            hint = " - after Normalize the mean is about 0"
        v.problems.append(
            f"{where}: fill {_fmt(fill)} is not the dataset mean: the hole is cut on {space_text}, "
            f"where the mean is {_fmt(expected)}{hint}"
        )
    # Behaviour: what the pipeline really does here.
    probe = f.behaviour
    if probe is None:
        v.warnings.append("the CoarseDropout behaviour could not be measured: judged by its configuration only")
    else:
        really = _behaviour_problems(f, want_holes, want_h, want_w, tolerance)
        if really and f.ignored:
            v.warnings.append(
                f"albumentations {'?' if f.version is None else f.version} (installed here) ignores {', '.join(f.ignored)} "
                f"with only a UserWarning: this pipeline really cuts {_fmt(probe['holes'])} holes of "
                f"{_fmt(probe.get('heights'))}x{_fmt(probe.get('widths'))} px filled with "
                f"{_fmt(probe.get('fill_min'))}. Judged as the 1.x spelling means it."
            )
            if f.ignored_warning:
                v.warnings.append(f"the student's own run was affected: {f.ignored_warning}")
        elif really:
            v.problems.extend(f"{where} behaves differently from its arguments: {p}" for p in really)
    if f.spelling == "1.x" or f.ignored:
        v.suggestion = suggested_spelling(
            expected if space != "normalized" else [0.0, 0.0, 0.0], want_holes, want_h, want_w
        )


def _behaviour_problems(f: AugFindings, holes: list, height: list, width: list, tolerance: float) -> list[str]:
    probe, out = f.behaviour or {}, []
    if probe["holes"] != list(holes):
        out.append(f"it cut {_fmt(probe['holes'])} holes per image on the probe, not {holes[0]}")
    if probe.get("heights") and (probe["heights"] != list(height) or probe["widths"] != list(width)):
        out.append(
            f"holes of {_fmt(probe['heights'])} x {_fmt(probe['widths'])} px on the probe, not {height[0]}x{width[0]}"
        )
    fills = probe.get("fill_min")
    if fills and not _within(f.behaviour_fill_offset, f.value_space, tolerance, f.dataset_std):
        out.append(f"the hole was filled with {_fmt(fills)}, the mean there is {_fmt(f.expected_fill)}")
    return out


def _within(offset: list[float] | None, space: str, tolerance: float, std: list[float]) -> bool:
    """Every channel of the fill within ``tolerance`` (0-1 units of the image) of the mean, in ``space``."""
    if offset is None:
        return False
    if space == "uint8":
        tol = [tolerance * 255] * 3
    elif space == "float":
        tol = [tolerance] * 3
    else:
        tol = [tolerance / s for s in std]
    return all(abs(d) <= t for d, t in zip(offset, tol, strict=True))


def fill_matches(fill: Any, expected: list[float], space: str, tolerance: float, std: tuple[float, ...]) -> bool:
    """``fill`` is the mean ``expected`` within ``tolerance``, as the image in ``space`` holds it."""
    return _within(fill_offset(fill, expected, space), space, tolerance, list(std))


def _all_unit(fill: Any) -> bool:
    vals = [fill] if isinstance(fill, (int, float)) else list(fill) if isinstance(fill, (list, tuple)) else []
    return bool(vals) and all(isinstance(v, (int, float)) and 0 < v <= 1 for v in vals)


def _all_large(fill: Any) -> bool:
    vals = [fill] if isinstance(fill, (int, float)) else list(fill) if isinstance(fill, (list, tuple)) else []
    return bool(vals) and all(isinstance(v, (int, float)) and v > 2 for v in vals)


def _fmt(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in values) + ")"
    if isinstance(values, float):
        return f"{values:.3g}" if abs(values) < 10 else f"{values:.0f}"
    return str(values)


def suggested_spelling(fill: list[float], holes: list, height: list, width: list) -> str:
    """The CoarseDropout call that means the same under albumentations 2.x (and 1.4.x with fill_value=)."""
    fill_text = "(" + ", ".join(f"{v:.0f}" if abs(v) >= 2 else f"{v:.3g}" for v in fill) + ")"
    return (
        f"A.CoarseDropout(num_holes_range=({holes[0]}, {holes[1]}), hole_height_range=({height[0]}, {height[1]}), "
        f"hole_width_range=({width[0]}, {width[1]}), fill={fill_text}, fill_mask=None, p=0.5)"
        "  # albumentations 1.4.x: write fill_value= instead of fill="
    )
