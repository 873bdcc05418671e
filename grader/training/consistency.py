"""Trusted side: is a submitted checkpoint's test accuracy the model's, or the public test set's?

A checkpoint (``--weights``) is the student's weights, trained anywhere, and CIFAR-10's test set is
public: weights can memorise it. A model that learned the task does about as well on the same test
images flipped or shifted by a couple of pixels (it was trained with flips and shifts) and on clean
training images (which it has seen); a memorised test set is recognised only pixel for pixel. So
beside the test accuracy the grader measures those three figures, and a test accuracy above any of
them by more than the rubric's margin is "memorisation suspected": the accuracy is not passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHIFT = 2  # pixels, right and down: well within the ShiftScaleRotate every submission trains with
TRAIN_SAMPLE = 10_000  # clean training images the figure is measured on (a seeded sample)


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


@dataclass
class Consistency:
    test: float  # percent, the checkpoint's test accuracy
    flipped: float
    shifted: float
    train: float
    margin: float  # points

    @property
    def gaps(self) -> dict[str, float]:
        return {
            "flipped test images": self.test - self.flipped,
            f"test images shifted by {SHIFT} px": self.test - self.shifted,
            "clean training images": self.test - self.train,
        }

    @property
    def suspected(self) -> bool:
        return any(gap > self.margin for gap in self.gaps.values())

    def explain(self) -> str:
        """'test 100.00% against 12.30% on flipped test images ...': the figures, the largest gap first."""
        gaps = sorted(self.gaps.items(), key=lambda kv: -kv[1])
        parts = [f"{self.test - gap:.2f}% on {what}" for what, gap in gaps]
        return f"test accuracy {self.test:.2f}% against " + ", ".join(parts) + f" (margin {self.margin:g} points)"

    def to_dict(self) -> dict:
        return {
            "test": round(self.test, 2),
            "flipped": round(self.flipped, 2),
            "shifted": round(self.shifted, 2),
            "train": round(self.train, 2),
            "margin": self.margin,
            "suspected": self.suspected,
            "summary": self.explain(),
        }
