"""Trusted facts about the train augmentations: the transforms found, and CoarseDropout as written, built and seen.

Three sources are combined:
- the spelling the student wrote (the keyword arguments the child saw passed to each transform, and the
  source lines discovery read);
- the pipeline as built (its description, and ``A.to_dict``);
- its behaviour: holes cut on a probe image by the pipeline rebuilt on the trusted side (or, when it
  cannot be rebuilt, by the child's own object).

What the student wrote is read in the semantics of the spelling used: 1.x names as 1.x meant them
(``max_holes=1, max_height=16, ..., fill_value=...``), 2.x names as 2.x means them; the facts also say
which 1.x names the installed albumentations ignores (2.x drops them with only a UserWarning) and where
the student's own output shows that warning. Nothing here is judged: the augmentations check
(``checks/augmentations.py``) compares these facts with the rubric's arguments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grader.augment_inspect import COARSE_DROPOUT_V1, COARSE_DROPOUT_V2

IGNORED_WARNING = re.compile(r"not valid for transform CoarseDropout|Argument\(s\) '[^']*max_holes", re.I)


@dataclass
class AugFindings:
    """What the train pipeline is: its transforms, and its (first) CoarseDropout in the pipeline's value space."""

    built: bool = False  # an albumentations train pipeline was built and described
    trusted: bool = True  # rebuilt and described by the grader; False: its own serialisation, which can only fail
    site: str | None = None  # where it is built (file:line)
    version: str | None = None  # the albumentations that built it
    transforms: list[dict] = field(default_factory=list)  # every leaf transform in order: class, module, p
    # CoarseDropout, when the pipeline has one:
    spelling: str = ""  # "1.x" | "2.x": the names it is read by (a mix of both is read by its 1.x names)
    v1_names: list[str] = field(default_factory=list)  # the 1.x / 2.x argument names the student passed
    v2_names: list[str] = field(default_factory=list)
    meant: dict = field(
        default_factory=dict
    )  # holes, height and width (px), fill, mask_fill as the spelling means them
    value_space: str = "uint8"  # what the hole is cut on: 'uint8', 'float' or 'normalized'
    expected_fill: list[float] | None = None  # the dataset mean in that value space
    fill_offset: list[float] | None = None  # the meant fill minus that mean, per channel (None: no number)
    dataset_std: list[float] = field(default_factory=list)  # after Normalize, one 0-1 image unit is 1/std there
    behaviour: dict | None = None  # what the probe saw
    behaviour_fill_offset: list[float] | None = None  # the fill the probe saw minus the mean, per channel
    ignored: list[str] = field(default_factory=list)  # 1.x names the installed albumentations ignores
    ignored_warning: str = ""  # file:line where the student's own output shows the warning about them

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


def fill_offset(fill: Any, expected: list[float], space: str) -> list[float] | None:
    """``fill`` minus the mean ``expected``, per channel, as the image holds the fill: a uint8 image keeps
    only whole numbers in 0-255, so the cast comes first. None for a fill that is no number (``'random'``)
    or has another number of channels than the mean."""
    if isinstance(fill, str) or fill is None:
        return None
    values = [float(fill)] * 3 if isinstance(fill, (int, float)) else [float(v) for v in fill]
    if len(values) == 1:
        values = values * 3
    if len(values) != len(expected):
        return None
    if space == "uint8":
        values = [float(int(min(255, max(0, v)))) for v in values]
    return [v - e for v, e in zip(values, expected, strict=True)]


def analyze(
    transforms: dict | None,
    trusted_probe: dict | None,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    texts: Sequence[tuple[str, str]] = (),
    source_calls: Sequence[dict] = (),
) -> AugFindings:
    """The facts of the child's pipeline description and the trusted probe, against the data's mean/std."""
    f = AugFindings()
    if not transforms:
        return f
    f.built, f.site, f.version = True, transforms.get("site"), transforms.get("version")
    f.trusted = transforms.get("trusted", True) is not False
    leaves = _leaves(transforms["description"])
    f.transforms = [{"class": t["class"], "module": t.get("module"), "p": t.get("p")} for t in leaves]
    if any(t["class"] == "CoarseDropout" for t in leaves):
        _coarse_dropout(f, leaves, transforms, trusted_probe, mean, std, texts, source_calls)
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
    mean: tuple[float, ...],
    std: tuple[float, ...],
    texts: Sequence[tuple[str, str]],
    source_calls: Sequence[dict],
) -> None:
    index = next(i for i, t in enumerate(leaves) if t["class"] == "CoarseDropout")
    t = leaves[index]
    kwargs = t.get("passed_kwargs")
    if kwargs is None:  # fall back to the literal arguments read from the source
        call = next((c for c in source_calls if c["name"] == "CoarseDropout"), None)
        kwargs = {k: v for k, v in (call or {}).get("kwargs", {}).items() if not (isinstance(v, dict) and "expr" in v)}
    f.v1_names = [k for k in kwargs if k in COARSE_DROPOUT_V1]
    f.v2_names = [k for k in kwargs if k in COARSE_DROPOUT_V2]
    f.spelling = "1.x" if f.v1_names else "2.x"
    meant = meant_config(kwargs, t.get("attrs", {}), f.spelling)
    size = int((trusted_probe or transforms.get("coarse_dropout_probe") or {}).get("image_size", 32))
    meant["height"] = to_pixels(meant["height"], size, f.spelling)
    meant["width"] = to_pixels(meant["width"], size, f.spelling)
    f.meant = meant
    space, normalize = value_space(leaves[:index])
    f.value_space = space
    f.expected_fill = expected_fill(mean, space, normalize)
    f.fill_offset = fill_offset(meant["fill"], f.expected_fill, space)
    f.dataset_std = list(std)
    probe = trusted_probe or transforms.get("coarse_dropout_probe")
    f.behaviour = probe
    if probe is not None and probe.get("fill_min"):
        f.behaviour_fill_offset = fill_offset(probe["fill_min"], f.expected_fill, space)
    f.ignored = [a for a in (t.get("invalid_args") or []) if a in COARSE_DROPOUT_V1]
    if f.ignored:
        f.ignored_warning = _ignored_warning_evidence(texts)


def _ignored_warning_evidence(texts: Sequence[tuple[str, str]]) -> str:
    for source, text in texts:
        for number, line in enumerate(text.splitlines(), 1):
            if IGNORED_WARNING.search(line):
                return f"{source}:{number}: {line.strip()[:160]}"
    return ""
