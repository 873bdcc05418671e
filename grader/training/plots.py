"""Pictures for the report: learning curves and a grid of misclassified test images (base64 PNG).

Trusted side.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def curves_png(epochs: list[dict], target: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [e["epoch"] for e in epochs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(x, [e["train_loss"] for e in epochs], "o-", label="train")
    ax1.plot(x, [e["test_loss"] for e in epochs], "o-", label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(x, [100 * e["train_acc"] for e in epochs], "o-", label="train")
    ax2.plot(x, [e["test_acc"] for e in epochs], "o-", label="test")
    ax2.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}%")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def misclassified_png(
    images: np.ndarray, labels: np.ndarray, preds: np.ndarray, classes: tuple[str, ...], n: int = 20
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = np.nonzero(preds != labels)[0][:n]
    cols = 10
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.35))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), wrong, strict=False):
        ax.imshow(images[i])
        ax.set_title(f"{classes[labels[i]]}\n→ {classes[preds[i]]}", fontsize=7)
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out
