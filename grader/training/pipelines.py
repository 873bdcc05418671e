"""Trusted side: the albumentations pipeline the grader trains with, rebuilt from plain data.

The probe serialises the student's train pipeline with ``A.to_dict``; here it is rebuilt with
``A.from_dict``, which instantiates only transforms registered in this process: albumentations' own
(the student's classes are never imported here). Transforms that read files (reference images,
templates) or run arbitrary functions are refused, so rebuilding cannot reach the test split. A
pipeline that cannot be rebuilt is replaced by the course's canonical one (the assignment's three
augmentations with its arguments, then Normalize and ToTensorV2), and the report says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

# Transforms that take images or functions from outside the pipeline (files, callables): never rebuilt here.
REFUSED = {
    "FDA",
    "HistogramMatching",
    "PixelDistributionAdaptation",
    "TemplateTransform",
    "Lambda",
    "OverlayElements",
    "Mosaic",
    "TextImage",
}
REFUSED_ARGS = ("reference", "template", "read_fn", "metadata_key")


class PipelineRefused(Exception):
    """The serialised pipeline cannot be rebuilt here (the message says why, in one line)."""


def _transforms(config: Any) -> Iterator[dict]:
    if isinstance(config, dict):
        if "__class_fullname__" in config:
            yield config
        for value in config.values():
            yield from _transforms(value)
    elif isinstance(config, list):
        for value in config:
            yield from _transforms(value)


def rebuild(config: Any) -> Any:
    """``A.from_dict`` of the probe's ``A.to_dict`` output: albumentations' own transforms only.

    Raises PipelineRefused naming the reason."""
    if not isinstance(config, dict) or "transform" not in config:
        raise PipelineRefused("the probe serialised no pipeline")
    for t in _transforms(config["transform"]):
        name = str(t.get("__class_fullname__", "")).rsplit(".", 1)[-1]
        if name in REFUSED or any(word in str(key) for key in t for word in REFUSED_ARGS):
            raise PipelineRefused(f"{name} takes images or functions from outside the pipeline")
    import albumentations as A

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return A.from_dict(config)
    except Exception as exc:
        raise PipelineRefused(f"{type(exc).__name__}: {str(exc)[:200]}") from exc


def canonical(mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """The assignment's pipeline: HorizontalFlip, ShiftScaleRotate, one 16x16 CoarseDropout hole filled
    with the dataset mean (cut on the uint8 image), Normalize, ToTensorV2."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    fill = tuple(round(m * 255) for m in mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if A.__version__.startswith("1."):
            dropout = A.CoarseDropout(
                max_holes=1, max_height=16, max_width=16, min_holes=1, min_height=16, min_width=16, fill_value=fill
            )
        else:
            dropout = A.CoarseDropout(
                num_holes_range=(1, 1), hole_height_range=(16, 16), hole_width_range=(16, 16), fill=fill
            )
        return A.Compose(
            [
                A.HorizontalFlip(p=0.5),
                A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=15, p=0.5),
                dropout,
                A.Normalize(mean=mean, std=std),
                ToTensorV2(),
            ]
        )


def training_pipeline(config: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[Any, str | None]:
    """(pipeline, note): the student's pipeline rebuilt, or the canonical one and why."""
    try:
        return rebuild(config), None
    except PipelineRefused as exc:
        return canonical(mean, std), (
            f"the train pipeline could not be rebuilt here ({exc}): the model was trained with the "
            "assignment's canonical pipeline (HorizontalFlip, ShiftScaleRotate, CoarseDropout 16x16 with the mean)"
        )
