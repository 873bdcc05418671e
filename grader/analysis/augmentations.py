"""Trusted verdict on the train augmentations: HorizontalFlip, ShiftScaleRotate and the exact CoarseDropout.

Three sources are combined:
- the spelling the student wrote (the keyword arguments the child saw passed to each transform, and the
  source lines discovery read);
- the pipeline as built (its description, and ``A.to_dict``);
- its behaviour: holes cut on a probe image by the pipeline rebuilt on the trusted side (or, when it
  cannot be rebuilt, by the child's own object).

What the student wrote is judged in the semantics of the spelling used: 1.x names as 1.x meant them
(``max_holes=1, max_height=16, ..., fill_value=...``), 2.x names as 2.x means them. When the installed
albumentations ignores the 1.x names (2.x drops them with only a UserWarning) the verdict still follows
the student's spelling, and the findings say that the pipeline really behaves otherwise, show the
spelling that works, and point at the warning in the student's own log when it is there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

V1_NAMES = (
    "max_holes",
    "max_height",
    "max_width",
    "min_holes",
    "min_height",
    "min_width",
    "fill_value",
    "mask_fill_value",
)
V2_NAMES = ("num_holes_range", "hole_height_range", "hole_width_range", "fill", "fill_mask")
IGNORED_WARNING = re.compile(r"not valid for transform CoarseDropout|Argument\(s\) '[^']*max_holes", re.I)


@dataclass
class AugFindings:
    problems: list[str] = field(default_factory=list)  # each fails the rule
    warnings: list[str] = field(default_factory=list)  # shown, do not fail
    notes: list[str] = field(default_factory=list)
    spelling: str = ""  # "1.x" | "2.x" | "mixed" | ""
    meant: dict = field(default_factory=dict)  # CoarseDropout as the student's spelling means it
    behaviour: dict | None = None  # what the probe saw
    value_space: str = "uint8"
    expected_fill: list[float] | None = None
    suggestion: str = ""
    found: dict[str, bool] = field(default_factory=dict)
    unit_mistake: bool = False  # the mean written in 0-1 units on a uint8 image: intent right, effect black

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def value_space(before: list[dict]) -> tuple[str, dict | None]:
    """'uint8', 'float' or 'normalized' at the CoarseDropout position, and the Normalize before it."""
    space, normalize = "uint8", None
    for t in before:
        if t["class"] == "ToFloat":
            space = "float"
        elif t["class"] == "Normalize":
            space, normalize = "normalized", t
    return space, normalize


def expected_fill(mean: tuple[float, ...], space: str, normalize: dict | None) -> list[float]:
    """The dataset mean in the value space where the hole is cut."""
    if space == "uint8":
        return [m * 255 for m in mean]
    if space == "float":
        return list(mean)
    attrs = (normalize or {}).get("attrs", {})
    n_mean = _triple(attrs.get("mean", (0.485, 0.456, 0.406)))
    n_std = _triple(attrs.get("std", (0.229, 0.224, 0.225)))
    max_px = float(attrs.get("max_pixel_value") or 255.0)
    # Normalize computes (x - mean*max_px) / (std*max_px) on a uint8 image.
    return [(m * 255 - nm * max_px) / (ns * max_px) for m, nm, ns in zip(mean, n_mean, n_std, strict=True)]


def _triple(v: Any) -> tuple[float, float, float]:
    if isinstance(v, (int, float)):
        return (float(v),) * 3
    vals = [float(x) for x in v]
    # Not checked to be 3 long: a 2-value list stays 2 values, as it always has.
    return tuple((vals * 3)[:3]) if len(vals) == 1 else tuple(vals[:3])  # type: ignore[return-value]


def _range(lo: Any, hi: Any) -> list:
    return [lo if lo is not None else hi, hi]


def meant_config(kwargs: dict, attrs: dict, spelling: str) -> dict:
    """CoarseDropout's holes/sizes/fill as the student's spelling means them (library defaults filled in)."""

    def get(name: str, default: Any) -> Any:
        if name in kwargs:
            return kwargs[name]
        return attrs.get(name, default)

    if spelling == "1.x":
        max_holes, max_h, max_w = get("max_holes", 8), get("max_height", 8), get("max_width", 8)
        return {
            "holes": _range(get("min_holes", None), max_holes),
            "height": _range(get("min_height", None), max_h),
            "width": _range(get("min_width", None), max_w),
            "fill": get("fill_value", 0),
            "mask_fill": get("mask_fill_value", None),
        }
    return {
        "holes": list(get("num_holes_range", (1, 2))),
        "height": list(get("hole_height_range", (0.1, 0.2))),
        "width": list(get("hole_width_range", (0.1, 0.2))),
        "fill": get("fill", 0),
        "mask_fill": get("fill_mask", None),
    }


def to_pixels(rng: list, size: int, spelling: str) -> list:
    """Hole sizes in pixels: fractions of the image (1.x: float < 1; 2.x: both floats) become pixels."""
    if not all(isinstance(v, (int, float)) for v in rng):
        return rng
    if spelling == "1.x":
        return [int(v * size) if isinstance(v, float) and 0 < v < 1 else int(v) for v in rng]
    if all(isinstance(v, float) for v in rng) and all(0 < v <= 1 for v in rng):
        return [int(v * size) for v in rng]
    return [int(v) for v in rng]


def fill_matches(fill: Any, expected: list[float], space: str, tolerance: float, std: tuple[float, ...]) -> bool:
    if isinstance(fill, str) or fill is None:
        return False
    values = [float(fill)] * 3 if isinstance(fill, (int, float)) else [float(v) for v in fill]
    if len(values) == 1:
        values = values * 3
    if len(values) != len(expected):
        return False
    if space == "uint8":
        # A uint8 image keeps only whole numbers: compare what the cast would give.
        values = [float(int(min(255, max(0, v)))) for v in values]
        tol = [tolerance * 255] * 3
    elif space == "float":
        tol = [tolerance] * 3
    else:
        tol = [tolerance / s for s in std]
    return all(abs(v - e) <= t for v, e, t in zip(values, expected, tol, strict=True))


def _fmt(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in values) + ")"
    if isinstance(values, float):
        return f"{values:.3g}" if abs(values) < 10 else f"{values:.0f}"
    return str(values)


def analyze(
    transforms: dict | None,
    trusted_probe: dict | None,
    rubric: dict,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    texts: Sequence[tuple[str, str]] = (),
    source_calls: Sequence[dict] = (),
) -> AugFindings:
    """Decide the augmentations rule from the child's pipeline description and the trusted probe."""
    f = AugFindings()
    if not transforms:
        f.problems.append("no albumentations train pipeline could be built")
        return f
    leaves = _leaves(transforms["description"])
    names = [t["class"] for t in leaves]
    required = rubric.get("required", ["HorizontalFlip", "ShiftScaleRotate", "CoarseDropout"])
    for name in required:
        present = name in names
        if not present and name == "ShiftScaleRotate" and "Affine" in names:
            if rubric.get("accept_affine_for_shift_scale_rotate", False):
                f.notes.append("A.Affine stands in for ShiftScaleRotate (the rubric accepts it)")
                present = True
            else:
                f.problems.append(
                    "ShiftScaleRotate is missing: A.Affine is used instead (the assignment asks for ShiftScaleRotate)"
                )
                f.found[name] = False
                continue
        f.found[name] = present
        if not present:
            f.problems.append(f"{name} is missing from the train pipeline ({transforms.get('site', '?')})")
            continue
        t = next((t for t in leaves if t["class"] in (name, "Affine" if name == "ShiftScaleRotate" else name)), None)
        module = str((t or {}).get("module") or "albumentations")
        if not module.startswith("albumentations"):
            f.problems.append(
                f"{name} in the train pipeline is the submission's own class (from {module}), not albumentations' A.{name}"
            )
            f.found[name] = False
            continue
        if t is not None and isinstance(t.get("p"), (int, float)) and t["p"] <= 0:
            f.problems.append(f"{name} has p={t['p']}: it is never applied")
    if "CoarseDropout" in names:
        _coarse_dropout(f, leaves, transforms, trusted_probe, rubric, mean, std, texts, source_calls)
    return f


def _leaves(desc: dict) -> list[dict]:
    if "transforms" in desc:
        return [leaf for child in desc["transforms"] for leaf in _leaves(child)]
    return [desc]


def _coarse_dropout(
    f: AugFindings,
    leaves: list[dict],
    transforms: dict,
    trusted_probe: dict | None,
    rubric: dict,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    texts: Sequence[tuple[str, str]],
    source_calls: Sequence[dict],
) -> None:
    want = rubric.get("coarse_dropout", {})
    want_holes, want_h, want_w = want.get("holes", [1, 1]), want.get("height", [16, 16]), want.get("width", [16, 16])
    tolerance = float(want.get("fill_tolerance", 0.03))
    index = next(i for i, t in enumerate(leaves) if t["class"] == "CoarseDropout")
    t = leaves[index]
    kwargs = t.get("passed_kwargs")
    if kwargs is None:  # fall back to the literal arguments read from the source
        call = next((c for c in source_calls if c["name"] == "CoarseDropout"), None)
        kwargs = {k: v for k, v in (call or {}).get("kwargs", {}).items() if not (isinstance(v, dict) and "expr" in v)}
    v1 = [k for k in kwargs if k in V1_NAMES]
    v2 = [k for k in kwargs if k in V2_NAMES]
    f.spelling = "mixed" if v1 and v2 else ("1.x" if v1 else "2.x")
    if f.spelling == "mixed":
        f.warnings.append(
            f"CoarseDropout mixes 1.x names ({', '.join(v1)}) and 2.x names ({', '.join(v2)}); judged by the 1.x names"
        )
        f.spelling = "1.x"
    meant = meant_config(kwargs, t.get("attrs", {}), f.spelling)
    size = int((trusted_probe or transforms.get("coarse_dropout_probe") or {}).get("image_size", 32))
    meant["height"] = to_pixels(meant["height"], size, f.spelling)
    meant["width"] = to_pixels(meant["width"], size, f.spelling)
    f.meant = meant
    space, normalize = value_space(leaves[:index])
    f.value_space = space
    expected = expected_fill(mean, space, normalize)
    f.expected_fill = expected
    where = f"CoarseDropout ({transforms.get('site', '')})"
    if list(meant["holes"]) != list(want_holes):
        f.problems.append(f"{where}: holes {_fmt(meant['holes'])}, the assignment asks for exactly {want_holes[0]}")
    if list(meant["height"]) != list(want_h) or list(meant["width"]) != list(want_w):
        f.problems.append(
            f"{where}: hole height {_fmt(meant['height'])} and width {_fmt(meant['width'])} px, "
            f"the assignment asks for {want_h[0]}x{want_w[0]}"
        )
    if meant["mask_fill"] is not None and want.get("mask_fill", "none") == "none":
        f.problems.append(f"{where}: mask fill is {meant['mask_fill']!r}, the assignment asks for None")
    space_text = {
        "uint8": "a uint8 image (0-255)",
        "float": "a float image (0-1)",
        "normalized": "the normalized image (after Normalize)",
    }[space]
    if not fill_matches(meant["fill"], expected, space, tolerance, std):
        fill = meant["fill"]
        hint = ""
        if space == "uint8" and _all_unit(fill):
            hint = " - 0-1 values on a uint8 image are black, not the mean"
            f.unit_mistake = True
        elif space == "normalized" and _all_large(fill):
            hint = " - after Normalize the mean is about 0"
        f.problems.append(
            f"{where}: fill {_fmt(fill)} is not the dataset mean: the hole is cut on {space_text}, "
            f"where the mean is {_fmt(expected)}{hint}"
        )
    # Behaviour: what the pipeline really does here.
    probe = trusted_probe or transforms.get("coarse_dropout_probe")
    f.behaviour = probe
    if probe is None:
        f.warnings.append("the CoarseDropout behaviour could not be measured: judged by its configuration only")
    ignored = [a for a in (t.get("invalid_args") or []) if a in V1_NAMES]
    if probe is not None:
        really = _behaviour_problems(probe, want_holes, want_h, want_w, expected, space, tolerance, std)
        if really and ignored:
            f.warnings.append(
                f"albumentations {transforms.get('version', '?')} (installed here) ignores {', '.join(ignored)} "
                f"with only a UserWarning: this pipeline really cuts {_fmt(probe['holes'])} holes of "
                f"{_fmt(probe.get('heights'))}x{_fmt(probe.get('widths'))} px filled with "
                f"{_fmt(probe.get('fill_min'))}. Judged as the 1.x spelling means it."
            )
            evidence = _ignored_warning_evidence(texts)
            if evidence:
                f.warnings.append(f"the student's own run was affected: {evidence}")
        elif really:
            f.problems.extend(f"{where} behaves differently from its arguments: {p}" for p in really)
    if f.spelling == "1.x" or ignored:
        f.suggestion = suggested_spelling(
            expected if space != "normalized" else [0.0, 0.0, 0.0], want_holes, want_h, want_w
        )


def _all_unit(fill: Any) -> bool:
    vals = [fill] if isinstance(fill, (int, float)) else list(fill) if isinstance(fill, (list, tuple)) else []
    return bool(vals) and all(isinstance(v, (int, float)) and 0 < v <= 1 for v in vals)


def _all_large(fill: Any) -> bool:
    vals = [fill] if isinstance(fill, (int, float)) else list(fill) if isinstance(fill, (list, tuple)) else []
    return bool(vals) and all(isinstance(v, (int, float)) and v > 2 for v in vals)


def _behaviour_problems(
    probe: dict, holes: list, height: list, width: list, expected: list[float], space: str, tol: float, std: tuple
) -> list[str]:
    out = []
    if probe["holes"] != list(holes):
        out.append(f"it cut {_fmt(probe['holes'])} holes per image on the probe, not {holes[0]}")
    if probe.get("heights") and (probe["heights"] != list(height) or probe["widths"] != list(width)):
        out.append(
            f"holes of {_fmt(probe['heights'])} x {_fmt(probe['widths'])} px on the probe, not {height[0]}x{width[0]}"
        )
    fills = probe.get("fill_min")
    if fills and not fill_matches(fills, expected, space, tol, std):
        out.append(f"the hole was filled with {_fmt(fills)}, the mean there is {_fmt(expected)}")
    return out


def _ignored_warning_evidence(texts: Sequence[tuple[str, str]]) -> str:
    for source, text in texts:
        for number, line in enumerate(text.splitlines(), 1):
            if IGNORED_WARNING.search(line):
                return f"{source}:{number}: {line.strip()[:160]}"
    return ""


def suggested_spelling(fill: list[float], holes: list, height: list, width: list) -> str:
    """The CoarseDropout call that means the same under albumentations 2.x (and 1.4.x with fill_value=)."""
    fill_text = "(" + ", ".join(f"{v:.0f}" if abs(v) >= 2 else f"{v:.3g}" for v in fill) + ")"
    return (
        f"A.CoarseDropout(num_holes_range=({holes[0]}, {holes[1]}), hole_height_range=({height[0]}, {height[1]}), "
        f"hole_width_range=({width[0]}, {width[1]}), fill={fill_text}, fill_mask=None, p=0.5)"
        "  # albumentations 1.4.x: write fill_value= instead of fill="
    )
