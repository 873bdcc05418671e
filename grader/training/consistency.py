"""Trusted side: is a submitted checkpoint's test accuracy the model's, or the public test set's?

A checkpoint (``--weights``) is the student's weights, trained anywhere, and CIFAR-10's test set is
public: weights can memorise it. A model that learned the task does about as well on the same test
images flipped or shifted by a couple of pixels (it was trained with flips and shifts) and on clean
training images (which it has seen); a memorised test set is recognised only pixel for pixel. So
beside the test accuracy the grader measures those three figures, and a test accuracy above any of
them by more than the rubric's margin is "memorisation suspected": the accuracy is not passed.

A gap counts only when it is also far beyond chance (``SIGNIFICANCE`` standard errors): on a small test
split a few images make several points, and an honest model must not be suspected for them. The
flipped and shifted figures are paired with the test images (McNemar: the images right on one side and
wrong on the other), the training figure is another sample (two proportions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHIFT = 2  # pixels, right and down: well within the ShiftScaleRotate every submission trains with
TRAIN_SAMPLE = 10_000  # clean training images the figure is measured on (a seeded sample)
SIGNIFICANCE = 3.0  # standard errors a gap must also exceed (chance alone reaches it about once in 700)


def flipped(images: np.ndarray) -> np.ndarray:
    """Each N x H x W x C image mirrored left to right."""
    return np.ascontiguousarray(images[:, :, ::-1])


def shifted(images: np.ndarray, dx: int = SHIFT, dy: int = SHIFT) -> np.ndarray:
    """Each image moved ``dx`` px right and ``dy`` px down, the uncovered border reflected in."""
    padded = np.pad(images, ((0, 0), (dy, 0), (dx, 0), (0, 0)), mode="reflect")
    return np.ascontiguousarray(padded[:, : images.shape[1], : images.shape[2]])


def train_sample(n: int, seed: int, size: int = TRAIN_SAMPLE) -> np.ndarray:
    """Indices of a seeded sample of the train split."""
    return np.random.default_rng([int(seed), 104729]).permutation(n)[: min(n, size)]


def paired_z(first: np.ndarray, second: np.ndarray) -> float:
    """How many standard errors the first accuracy is above the second, on the same images (McNemar)."""
    only_first = int(np.sum(first & ~second))
    only_second = int(np.sum(~first & second))
    discordant = only_first + only_second
    return (only_first - only_second) / np.sqrt(discordant) if discordant else 0.0


def unpaired_z(first: np.ndarray, second: np.ndarray) -> float:
    """How many standard errors the first accuracy is above the second, on different images."""
    p1, p2 = float(first.mean()), float(second.mean())
    error = np.sqrt(p1 * (1 - p1) / len(first) + p2 * (1 - p2) / len(second))
    return (p1 - p2) / error if error > 0 else (np.inf if p1 > p2 else 0.0)


@dataclass
class Gap:
    what: str  # 'flipped test images', ...
    accuracy: float  # percent
    points: float  # test accuracy minus this one
    z: float  # standard errors

    def beyond(self, margin: float) -> bool:
        return self.points > margin and self.z > SIGNIFICANCE


@dataclass
class Consistency:
    """The figures of one checkpoint, from each image's right or wrong (bool arrays)."""

    test: np.ndarray
    flipped: np.ndarray
    shifted: np.ndarray
    train: np.ndarray
    margin: float  # points

    @staticmethod
    def percent(right: np.ndarray) -> float:
        return 100.0 * float(right.mean()) if len(right) else 0.0

    @property
    def gaps(self) -> list[Gap]:
        test = self.percent(self.test)
        return [
            Gap("flipped test images", self.percent(self.flipped), test - self.percent(self.flipped), paired_z(self.test, self.flipped)),
            Gap(f"test images shifted by {SHIFT} px", self.percent(self.shifted), test - self.percent(self.shifted), paired_z(self.test, self.shifted)),
            Gap("clean training images", self.percent(self.train), test - self.percent(self.train), unpaired_z(self.test, self.train)),
        ]  # fmt: skip

    @property
    def suspected(self) -> bool:
        return any(gap.beyond(self.margin) for gap in self.gaps)

    def explain(self) -> str:
        """'test 100.00% against 12.30% on flipped test images ...': the figures, the largest gap first."""
        gaps = sorted(self.gaps, key=lambda g: -g.points)
        parts = [f"{g.accuracy:.2f}% on {g.what}" for g in gaps]
        return (
            f"test accuracy {self.percent(self.test):.2f}% against "
            + ", ".join(parts)
            + f" (margin {self.margin:g} points, beyond chance by {SIGNIFICANCE:g} standard errors)"
        )

    def to_dict(self) -> dict:
        gaps = self.gaps
        return {
            "test": round(self.percent(self.test), 2),
            "flipped": round(gaps[0].accuracy, 2),
            "shifted": round(gaps[1].accuracy, 2),
            "train": round(gaps[2].accuracy, 2),
            "z": {"flipped": round(gaps[0].z, 1), "shifted": round(gaps[1].z, 1), "train": round(float(gaps[2].z), 1)},
            "margin": self.margin,
            "suspected": self.suspected,
            "summary": self.explain(),
        }
