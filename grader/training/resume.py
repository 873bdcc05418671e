"""An interrupted training run kept on disk, so that grading the same submission again resumes it.

Trusted side. After every epoch the trusted job keeps, in ``OUT/training_state/<key>/`` (or
``--state-dir``; ``grade batch`` gives each student one): its own
rows (the trusted evaluation's figures), the handed-over weights of the last epoch, and the
child's training state (``recipe.TrainState``: copied by value, never parsed here; only a later
training child loads it). ``epochs.json`` is written last and names the state file it goes with,
so a run killed between two writes leaves the previous epoch whole.

The key is everything the figures depend on: the submission's files (and the rubric's course
section, not its limits or target), the hyperparameters as applied, the recipe's source, the device
type and a fingerprint of the data. A key that differs finds nothing. A schedule that ran to its end is kept as complete, so an interrupted second schedule
does not make the first run again. Once the grading has written its results its own runs go;
runs kept there for other submissions stay (the default ``./grade-out`` is shared).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.boundary import write_output

FOLDER = "training_state"


def run_key(**parts: Any) -> str:
    """A short hash of what a run's figures depend on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class SavedRun:
    """What was kept of a run: the trusted rows and the files that go with their last epoch."""

    rows: list[dict]
    weights: bytes | None  # the handed-over weights of the last row's epoch
    state_file: Path | None  # the child's TrainState after that epoch (None: not resumable)
    complete: bool  # the schedule ran to its end (or stopped at the target): nothing to train
    extra: dict  # what the job keeps beside the rows (the attempt, the sandbox, the error)


class RunStore:
    """The saved runs under ``root`` (``OUT/training_state``, or ``--state-dir``), one folder per key."""

    def __init__(self, root: Path, key: str):
        self.root = root
        self.folder = self.root / key

    def load(self) -> SavedRun | None:
        """The run saved under this key, or None when there is none (or it is not whole)."""
        try:
            meta = json.loads((self.folder / "epochs.json").read_text())
            rows = meta["rows"]
            weights = (self.folder / meta["weights"]).read_bytes() if meta.get("weights") else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(rows, list) or not rows:
            return None
        state = self.folder / meta["state"] if meta.get("state") else None
        if state is not None and not state.is_file():
            state = None
        return SavedRun(rows, weights, state, bool(meta.get("complete")), meta.get("extra") or {})

    def others(self) -> list[str]:
        """Keys of runs saved for another submission or recipe (what this key does not resume)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p != self.folder)

    def save(
        self,
        rows: list[dict],
        weights: bytes | None,
        state: bytes | None,
        complete: bool = False,
        extra: dict | None = None,
    ) -> None:
        """Keep the run as of its last row; the previous epoch's files go once the new ones are in."""
        self.folder.mkdir(parents=True, exist_ok=True)
        epoch = int(rows[-1]["epoch"]) if rows else 0
        names = {"weights": f"weights_{epoch:03d}.safetensors", "state": f"state_{epoch:03d}.safetensors"}
        if weights is not None:
            write_output(self.folder, names["weights"], weights)
        if state is not None:
            write_output(self.folder, names["state"], state)
        meta = {
            "rows": rows,
            "weights": names["weights"] if weights is not None else None,
            "state": names["state"] if state is not None else None,
            "complete": complete,
            "extra": extra or {},
        }
        write_output(self.folder, "epochs.json", json.dumps(meta, indent=1))
        keep = {"epochs.json", *(v for v in (meta["weights"], meta["state"]) if v)}
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        """This key's run is gone (the next grading trains it from epoch 1), and the folder with it
        once no run is left there (a run kept for another submission keeps it)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.root.rmdir()
        except OSError:
            pass  # not empty, or already gone
