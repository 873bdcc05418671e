"""CIFAR-10 (or any image-folder tree) decoded once into uint8 arrays.

Trusted side.

Two sources:
- an image-folder tree ``DIR/{train,test}/<class>/*.png|jpg`` (``--data DIR``: a TA's private
  test set, or the CIFAR-10 re-encoding used on machines without internet);
- torchvision's ``CIFAR10`` downloaded once into a cache folder (``--data-dir``, env
  ``S6_GRADER_DATA``, default ``~/.cache/s6-grader``).

Only trusted code calls this module. The training child never sees the test split: the trusted
side writes the train split to an ``.npy`` file and hands the child that file alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class DataUnavailable(Exception):
    """No data could be found or downloaded; the message is one line for the user."""


@dataclass
class Split:
    images: np.ndarray  # uint8, N x H x W x 3
    labels: np.ndarray  # int64, N
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in 0..1 units (what CoarseDropout's fill is judged against)."""
        x = self.images.reshape(-1, 3).astype(np.float64) / 255.0
        return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


def default_data_dir() -> Path:
    env = os.environ.get("S6_GRADER_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "s6-grader"


def is_image_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def load_split(split: str, data: Path | None = None, data_dir: Path | None = None) -> Split:
    """Load ``split`` ('train' or 'test') from an image-folder tree or torchvision's CIFAR-10.

    ``data`` names an image-folder tree; without it torchvision's CIFAR-10 in ``data_dir``
    (downloaded there when missing) is used. Raises DataUnavailable with a one-line reason.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if data is not None:
        if not is_image_folder(data):
            raise DataUnavailable(
                f"{data} is not an image-folder tree (expected {data}/train/<class>/*.png and {data}/test/...)"
            )
        return _load_image_folder(data / split)
    return _load_torchvision_cifar10(split, data_dir or default_data_dir())


CACHE_MIN_IMAGES = 2000  # decoding 60,000 JPEGs takes a while: big trees are cached once decoded


def _load_image_folder(root: Path) -> Split:
    from PIL import Image

    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not classes:
        raise DataUnavailable(f"{root} has no class folders")
    files = [
        (label, f)
        for label, name in enumerate(classes)
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    cache = _cache_file(root, files) if len(files) >= CACHE_MIN_IMAGES else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return Split(z["images"], z["labels"], tuple(str(c) for c in z["classes"]), f"image folder {root}")
    images, labels = [], []
    for label, f in files:
        with Image.open(f) as im:
            images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        labels.append(label)
    if not images:
        raise DataUnavailable(f"{root} holds no images")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataUnavailable(f"{root}: images of different sizes {sorted(shapes)[:3]}")
    split = Split(np.stack(images), np.asarray(labels, dtype=np.int64), classes, f"image folder {root}")
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + ".tmp.npz")
            np.savez(tmp, images=split.images, labels=split.labels, classes=np.asarray(classes))
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only cache only costs time
    return split


def _cache_file(root: Path, files: list[tuple[int, Path]]) -> Path:
    """Cache key: the folder, its file names, sizes and modification times."""
    import hashlib

    h = hashlib.sha256(str(root.resolve()).encode())
    for label, f in files:
        st = f.stat()
        h.update(f"{label}/{f.name}/{st.st_size}/{st.st_mtime_ns}".encode())
    return default_data_dir() / "decoded" / f"{h.hexdigest()[:20]}.npz"


def _load_torchvision_cifar10(split: str, data_dir: Path) -> Split:
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(data_dir), train=(split == "train"), download=True)
    except Exception as exc:  # network errors, corrupt archives, a read-only cache
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataUnavailable(
            f"CIFAR-10 could not be found or downloaded into {data_dir} ({reason}); "
            "pass --data DIR with DIR/{train,test}/<class>/* or --data-dir with a downloaded copy"
        ) from exc
    return Split(
        np.asarray(ds.data, dtype=np.uint8),
        np.asarray(ds.targets, dtype=np.int64),
        tuple(ds.classes),
        f"torchvision CIFAR10 in {data_dir}",
    )
