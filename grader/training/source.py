"""Where a training result's accuracy comes from: the two values of its ``source``.

Trusted side. Kept apart from ``job.py`` so that the report, the gradebook and the checks can ask
without importing torch.
"""

from __future__ import annotations

CHECKPOINT = "checkpoint accuracy"  # a submitted checkpoint, evaluated as it is (--weights)
REPRODUCED = "reproduced by the grader"  # the grader's own training (--train)


def from_checkpoint(training: dict | None) -> bool:
    """Whether this training result is a submitted checkpoint's accuracy, not the grader's training."""
    return training is not None and training.get("source") == CHECKPOINT
