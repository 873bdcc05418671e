"""Describe an albumentations pipeline and measure what its CoarseDropout really does.

Shared by both sides: in the sandboxed child on the student's own pipeline object, and on the trusted
side on the pipeline rebuilt from ``A.to_dict`` (plain data) with ``A.from_dict``. Holds no student code.

The description reads each transform's attributes under both the 1.x and the 2.x names, so a
pipeline built under either release is described the same way. The behaviour probe runs the
pipeline up to CoarseDropout on a probe image with every random transform switched off and
CoarseDropout forced on, and reports the holes it cut and their fill, in the value space where
the hole is cut (uint8 0..255, float 0..1, or normalised).
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CONTAINERS = {"Compose", "OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform"}
# Transforms that are not random: they stay on when the others are switched off.
DETERMINISTIC = {"Normalize", "ToFloat", "FromFloat", "ToTensorV2", "ToTensor", "ToRGB", "ToGray_disabled"}
VALUE_CHANGERS = {"Normalize", "ToFloat", "FromFloat"}
# CoarseDropout's arguments under the 1.x names and under the 2.x names.
COARSE_DROPOUT_V1 = (
    "max_holes",
    "max_height",
    "max_width",
    "min_holes",
    "min_height",
    "min_width",
    "fill_value",
    "mask_fill_value",
)
COARSE_DROPOUT_V2 = ("num_holes_range", "hole_height_range", "hole_width_range", "fill", "fill_mask")
# Attributes worth reading, under the 1.x and the 2.x names.
KNOWN_ATTRS = (
    *COARSE_DROPOUT_V1,
    *COARSE_DROPOUT_V2,
    # ShiftScaleRotate / Affine
    "shift_limit",
    "shift_limit_x",
    "shift_limit_y",
    "scale_limit",
    "rotate_limit",
    "border_mode",
    "value",
    "translate_percent",
    "translate_px",
    "scale",
    "rotate",
    "shear",
    # Normalize / ToFloat
    "mean",
    "std",
    "max_pixel_value",
    "normalization",
    # flips, crops (min_height and min_width, PadIfNeeded's too, are among CoarseDropout's above)
    "height",
    "width",
    "always_apply",
)


def jsonable(v: Any) -> Any:
    """Plain JSON data for attribute values (tuples -> lists, numpy -> lists, others -> repr)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (np.integer, np.floating)):
        return jsonable(v.item())
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return repr(v)[:200]


def describe(transform: Any, path: str = "") -> dict:
    """A JSON description of a transform (recursing into containers)."""
    cls = type(transform)
    out: dict[str, Any] = {"class": cls.__name__, "module": cls.__module__, "path": path}
    p = getattr(transform, "p", None)
    out["p"] = jsonable(p)
    attrs = {}
    for name in KNOWN_ATTRS:
        if name in getattr(transform, "__dict__", {}) or (
            hasattr(type(transform), name) and not callable(getattr(type(transform), name))
        ):
            try:
                attrs[name] = jsonable(getattr(transform, name))
            except Exception:
                continue
    out["attrs"] = attrs
    try:
        out["init_args"] = jsonable(transform.get_transform_init_args())
    except Exception:
        out["init_args"] = None
    passed = getattr(transform, "_s6_kwargs", None)
    if passed is not None:
        out["passed_kwargs"] = passed
    invalid = getattr(transform, "invalid_args", None)
    if invalid:
        out["invalid_args"] = jsonable(list(invalid))
    children = getattr(transform, "transforms", None)
    if cls.__name__ in CONTAINERS and children is not None:
        out["transforms"] = [describe(t, f"{path}.{i}" if path else str(i)) for i, t in enumerate(children)]
    return out


def flatten(desc: dict) -> list[dict]:
    """Leaf transforms of a description, in order."""
    if "transforms" in desc:
        return [leaf for child in desc["transforms"] for leaf in flatten(child)]
    return [desc]


def leaves(pipeline: Any) -> list[Any]:
    """Leaf transform objects of a pipeline, in order."""
    children = getattr(pipeline, "transforms", None)
    if type(pipeline).__name__ in CONTAINERS and children is not None:
        return [leaf for child in children for leaf in leaves(child)]
    return [pipeline]


def probe_image(size: int = 32, seed: int = 0) -> np.ndarray:
    """A uint8 probe image: random values in 20..235 so that no fill value can hide in it."""
    rng = np.random.default_rng(seed)
    return rng.integers(20, 236, size=(size, size, 3), dtype=np.uint8)


def _to_hwc_array(out: Any) -> np.ndarray:
    if hasattr(out, "detach"):  # a torch tensor from ToTensorV2 (CHW)
        arr = out.detach().cpu().numpy()
        return arr.transpose(1, 2, 0) if arr.ndim == 3 else arr
    return np.asarray(out)


def _components(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (top, left, height, width) of 4-connected regions of a boolean mask."""
    seen = np.zeros_like(mask, dtype=bool)
    boxes = []
    h, w = mask.shape
    for i in range(h):
        for j in range(w):
            if not mask[i, j] or seen[i, j]:
                continue
            stack = [(i, j)]
            seen[i, j] = True
            ys, xs = [], []
            while stack:
                y, x = stack.pop()
                ys.append(y)
                xs.append(x)
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            boxes.append((min(ys), min(xs), max(ys) - min(ys) + 1, max(xs) - min(xs) + 1))
    return boxes


def probe_coarse_dropout(pipeline: Any, samples: int = 24, size: int = 32) -> dict | None:
    """Run the pipeline up to its first CoarseDropout (forced on, everything random before it off).

    Returns hole counts, hole sizes and fill values seen over ``samples`` runs, and the value
    space at that point: {'dtype', 'normalized_before': bool, 'scaled_to_float': bool}.
    None when the pipeline has no CoarseDropout.
    """
    import albumentations as A

    items = leaves(pipeline)
    index = next((i for i, t in enumerate(items) if type(t).__name__ == "CoarseDropout"), None)
    if index is None:
        return None
    before = []
    for t in items[:index]:
        name = type(t).__name__
        if name in DETERMINISTIC and name not in ("ToTensorV2", "ToTensor"):
            before.append(t)
    dropout = copy.deepcopy(items[index])
    dropout.p = 1.0
    base = A.Compose([copy.deepcopy(t) for t in before]) if before else None
    counts, heights, widths, fills = [], [], [], []
    dtype = "uint8"
    for k in range(samples):
        image = probe_image(size, seed=k)
        prepared = base(image=image)["image"] if base is not None else image
        dtype = str(np.asarray(prepared).dtype)
        cut = np.asarray(dropout(image=prepared.copy())["image"])
        changed = np.any(np.abs(cut.astype(np.float64) - np.asarray(prepared).astype(np.float64)) > 1e-6, axis=-1)
        boxes = _components(changed)
        counts.append(len(boxes))
        for top, left, h, w in boxes:
            heights.append(h)
            widths.append(w)
            region = cut[top : top + h, left : left + w].reshape(-1, cut.shape[-1]).astype(np.float64)
            fills.append([float(v) for v in np.median(region, axis=0)])
    names = [type(t).__name__ for t in items[:index]]
    return {
        "index": index,
        "samples": samples,
        "image_size": size,
        "holes": [min(counts), max(counts)],
        "heights": [min(heights), max(heights)] if heights else None,
        "widths": [min(widths), max(widths)] if widths else None,
        "fill_min": [min(f[c] for f in fills) for c in range(len(fills[0]))] if fills else None,
        "fill_max": [max(f[c] for f in fills) for c in range(len(fills[0]))] if fills else None,
        "dtype": dtype,
        "normalized_before": "Normalize" in names,
        "scaled_to_float": "ToFloat" in names,
        "before": names,
    }


def display_prefix(pipeline: Any) -> Any:
    """The pipeline's transforms before the first Normalize/ToFloat/ToTensor: images to look at."""
    import albumentations as A

    items = []
    for t in leaves(pipeline):
        if type(t).__name__ in VALUE_CHANGERS | {"ToTensorV2", "ToTensor"}:
            break
        items.append(t)
    return A.Compose(items)


def augmented_grid(pipeline: Any, image: np.ndarray, n: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` augmented versions of ``image`` (uint8 HWC) through the display prefix of the pipeline."""
    import random

    prefix = display_prefix(pipeline)
    random.seed(seed)
    np.random.seed(seed)
    out = []
    for k in range(n):
        if hasattr(prefix, "set_random_seed"):
            prefix.set_random_seed(seed + k)
        arr = np.asarray(prefix(image=image.copy())["image"])
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255 if arr.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        out.append(arr)
    return np.stack(out)


def showcase_image(size: int = 32) -> np.ndarray:
    """A structured uint8 picture (an 'F' on a gradient) where flips, shifts and rotations show."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([x * 255 // (size - 1), y * 255 // (size - 1), np.full_like(x, 160)], -1).astype(np.uint8)
    s = size // 8
    img[2 * s : 7 * s, 2 * s : 3 * s] = (250, 250, 40)
    img[2 * s : 3 * s, 2 * s : 6 * s] = (250, 250, 40)
    img[4 * s : 5 * s, 2 * s : 5 * s] = (250, 250, 40)
    return img
