"""Child side: make a student's module importable without letting it do real work.

Untrusted side (runs inside the sandbox next to the student's code).

- Stub modules for third-party imports the submission makes that are not installed (``google.colab``,
  ``torch_lr_finder``…): only imports made from the submission's own files are stubbed, and each is
  recorded so the report can say so.
- Fake torchvision datasets: CIFAR10/MNIST/CIFAR100 (and ImageFolder) built at import time get 64
  random images instead of a download (the probe has no network and never sees real data). During the
  capture run (``grader/child/capture.py``, ``CAPTURING``) every image is one grader-made 32x32 image
  whose per-channel mean and std are CIFAR-10's, so a mean or std the student's code computes from the
  data (``train.data.mean(axis=(0, 1, 2)) / 255``) is the real one; a split holds ``CAPTURE_SPLIT``
  images (enough for any batch the capture makes, cheap to average).
- The creation site (file:line in the submission) of every nn.Module and albumentations Compose is
  recorded, so that messages can point at the line that built a layer.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

STUBBED: list[str] = []
DATASETS_FAKED: list[str] = []
CREATED_COMPOSES: list[tuple[Any, str]] = []
CAPTURING = [False]  # set by the capture run: datasets hold grader-made images with CIFAR-10's statistics
CAPTURE_SPLIT = {True: 512, False: 128}  # images in the train / test split during the capture run
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _submission_frame(root: str, depth: int = 2) -> str | None:
    """'file.py:12' of the innermost caller frame inside the submission, or None."""
    frame: types.FrameType | None = sys._getframe(depth)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(root):
            return f"{filename[len(root) :].lstrip('/')}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _importer_in_submission(root: str) -> bool:
    """True when the module doing the import (the first frame outside importlib) is a submission file.

    A library's own optional imports (``try: import triton``) are never stubbed, even when the
    library is being imported on behalf of student code.
    """
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith("<frozen importlib") or filename.endswith(("importlib/__init__.py", "runtime.py"))):
            return filename.startswith(root)
        frame = frame.f_back
    return False


class _Stub:
    """Stands in for anything from a missing module: callable, subscriptable, iterable (empty)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> _Stub:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Stub(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub(f"{self._name}()")

    def __getitem__(self, key: Any) -> _Stub:
        return _Stub(f"{self._name}[]")

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)

    def __repr__(self) -> str:
        return f"<stub {self._name}>"


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Stub(f"{self.__name__}.{attr}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on sys.meta_path: a missing module imported from a submission file becomes a stub."""

    def __init__(self, root: str):
        self.root = root

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        top = fullname.split(".")[0]
        if top in sys.stdlib_module_names:
            return None
        if top != fullname and top not in STUBBED:
            return None  # a submodule of a real package: let the ImportError through
        if not _importer_in_submission(self.root):
            return None
        if top == fullname:
            STUBBED.append(fullname)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install_stub_finder(root: Path) -> None:
    sys.meta_path.append(_StubFinder(str(root)))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``hook(module)`` right after ``name`` is imported (first on sys.meta_path)."""

    def __init__(self, name: str, hook: Any):
        self.name, self.hook = name, hook

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, hook = spec.loader, self.hook
        original = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            original(module)
            hook(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]  # wrapping the loader is the point
        return spec


def fake_datasets() -> None:
    """Swap torchvision's downloadable datasets for small random ones, if and when it is imported."""
    if "torchvision.datasets" in sys.modules:
        _patch_datasets(sys.modules["torchvision.datasets"])
    else:
        sys.meta_path.insert(0, _AfterImport("torchvision.datasets", _patch_datasets))


@functools.cache
def statistics_image(mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD) -> np.ndarray:
    """One 32x32x3 uint8 image whose per-channel mean and std over its pixels (in 0-1 units) are ``mean``
    (within 1/1024 of a grey level) and ``std`` (within a few hundredths of one): evenly spread values,
    shuffled. Read-only: every fake image is this one."""
    rng = np.random.default_rng(6)
    channels = []
    for m, s in zip(mean, std, strict=True):
        spread = np.linspace(-1.0, 1.0, 1024) * (s * 255 * np.sqrt(3.0) * np.sqrt(1023 / 1025))
        values = np.clip(np.round(m * 255 + spread), 0, 255)
        missing = int(round(m * 255 * 1024) - values.sum())  # the exact sum: +-1 on the values nearest the mean
        nearest = np.argsort(np.abs(values - m * 255), kind="stable")[: abs(missing)]
        values[nearest] += np.sign(missing)
        channels.append(rng.permutation(values))
    image = np.stack(channels, -1).reshape(32, 32, 3).astype(np.uint8)
    image.flags.writeable = False
    return image


def _patch_datasets(tvd: Any) -> None:
    """Replace CIFAR10/CIFAR100/MNIST/ImageFolder in ``torchvision.datasets`` with fakes (same API)."""
    try:
        from PIL import Image
    except Exception:
        return

    def make(name: str, shape: tuple[int, ...], classes: list[str]) -> type:
        class Fake(tvd.VisionDataset):
            def __init__(
                self,
                root: Any = "",
                train: bool = True,
                transform: Any = None,
                target_transform: Any = None,
                download: bool = False,
                **kwargs: Any,
            ):
                super().__init__(str(root), transform=transform, target_transform=target_transform)
                rng = np.random.default_rng(0)
                self.train = train
                if CAPTURING[0]:
                    n = CAPTURE_SPLIT[bool(train)]
                    image = statistics_image()
                    image = image if len(shape) == 3 else image[..., 0]
                    self.data = np.repeat(image[None, : shape[0], : shape[1]], n, axis=0)
                    self.targets = [i % len(classes) for i in range(n)]
                else:
                    DATASETS_FAKED.append(name)
                    self.data = rng.integers(0, 256, size=(64, *shape), dtype=np.uint8)
                    self.targets = [int(t) for t in rng.integers(0, len(classes), size=64)]
                self.classes = list(classes)
                self.class_to_idx = {c: i for i, c in enumerate(classes)}

            def __getitem__(self, index: int) -> tuple[Any, Any]:
                img = Image.fromarray(np.ascontiguousarray(self.data[index]))
                target = self.targets[index]
                if self.transform is not None:
                    img = self.transform(img)
                if self.target_transform is not None:
                    target = self.target_transform(target)
                return img, target

            def __len__(self) -> int:
                return len(self.data)

        Fake.__name__ = Fake.__qualname__ = name
        return Fake

    class ImageFolder(tvd.VisionDataset):
        """An image-folder tree of grader-made images: its classes are the folder's, or CIFAR-10's."""

        def __init__(self, root: Any = "", transform: Any = None, target_transform: Any = None, **kwargs: Any):
            super().__init__(str(root), transform=transform, target_transform=target_transform)
            if not CAPTURING[0]:
                DATASETS_FAKED.append("ImageFolder")
            try:
                classes = sorted(p.name for p in Path(str(root)).iterdir() if p.is_dir())
            except OSError:
                classes = []
            self.classes = classes or list(CIFAR10_CLASSES)
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
            n = CAPTURE_SPLIT[True] if CAPTURING[0] else 64
            self.samples = [(f"{root}/{self.classes[i % len(self.classes)]}/{i}.png", i % len(self.classes)) for i in range(n)]  # fmt: skip
            self.imgs = self.samples
            self.targets = [t for _, t in self.samples]
            self.loader = lambda path: Image.fromarray(statistics_image())

        def __getitem__(self, index: int) -> tuple[Any, Any]:
            img, target = Image.fromarray(statistics_image()), self.targets[index]
            if self.transform is not None:
                img = self.transform(img)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return img, target

        def __len__(self) -> int:
            return len(self.samples)

    tvd.CIFAR10 = make("CIFAR10", (32, 32, 3), CIFAR10_CLASSES)
    tvd.CIFAR100 = make("CIFAR100", (32, 32, 3), [str(i) for i in range(100)])
    tvd.MNIST = make("MNIST", (28, 28), [str(i) for i in range(10)])
    tvd.ImageFolder = ImageFolder
    for module_name, names in (("cifar", ("CIFAR10", "CIFAR100")), ("mnist", ("MNIST",)), ("folder", ("ImageFolder",))):
        module = sys.modules.get(f"torchvision.datasets.{module_name}")
        for attr in names if module is not None else ():
            setattr(module, attr, getattr(tvd, attr))


def record_creation_sites(root: Path) -> None:
    """Remember where in the submission each nn.Module and A.Compose was constructed."""
    import torch.nn as nn

    root_s = str(root)
    original = nn.Module.__init__

    def module_init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        site = _submission_frame(root_s)
        if site is not None:
            object.__setattr__(self, "_s6_created_at", site)

    nn.Module.__init__ = module_init  # type: ignore[method-assign]  # patching the constructor is the point
    try:
        import albumentations as A
    except Exception:
        return
    compose_init = A.Compose.__init__

    def compose_record(self: Any, *args: Any, **kwargs: Any) -> None:
        compose_init(self, *args, **kwargs)
        site = _submission_frame(root_s)
        if site is not None:
            CREATED_COMPOSES.append((self, site))

    A.Compose.__init__ = compose_record
    # Keep the keyword arguments each augmentation was given: albumentations 2.x drops the 1.x names
    # (max_holes, fill_value...) and keeps no trace of their values.
    for name in ("CoarseDropout", "ShiftScaleRotate", "HorizontalFlip", "Affine", "Cutout"):
        cls = getattr(A, name, None)
        if cls is not None:
            cls.__init__ = _keep_kwargs(cls.__init__)


def _keep_kwargs(init: Any) -> Any:
    import functools

    from grader.augment_inspect import jsonable

    @functools.wraps(init)  # albumentations reads __init__'s signature to serialize the transform
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        try:
            self._s6_kwargs = {k: jsonable(v) for k, v in kwargs.items()}
            self._s6_positional = len(args)
        except Exception:
            pass

    return wrapper


def module_sites(model: Any) -> dict[str, str]:
    """Module path -> 'file.py:line' where it was constructed (submodules included)."""
    out = {}
    for name, module in model.named_modules():
        site = getattr(module, "_s6_created_at", None)
        if site:
            out[name] = site
    return out
