"""Everything the trusted side knows about a submission, handed to the checks as the ``facts`` fixture."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.checks_api import NotRun, Undecidable
from grader.failures import ErrorKind, Failure


@dataclass
class Facts:
    submission: Path
    rubric: dict
    discovery: Any = None  # grader.discover.Discovery
    probe: dict | None = None  # the child's probe.json
    failure: dict | None = None  # typed reason the model could not be analysed: {"type", "message", "where"}
    graph: Any = None  # grader.graph.LoadedGraph
    layers: list = field(default_factory=list)  # grader.analysis.layers.SpatialLayer
    rf: Any = None  # grader.analysis.receptive_field.RFResult
    measured_rf: Any = None  # grader.analysis.receptive_field.MeasuredRF
    params: Any = None  # grader.analysis.layers.ParamFacts
    aug: Any = None  # grader.analysis.augmentations.AugFindings
    aug_failure: dict | None = None
    sources: Any = None  # grader.analysis.source.SourceFacts
    evidence: dict | None = None  # README / logs / notebooks (grader.evidence)
    training: dict | None = None  # the grader's own training job, when it ran
    training_skipped: str = "not run: pass --train (the default when a GPU is present) to train the model"
    mean: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, ...] = (0.2470, 0.2435, 0.2616)
    warnings: list[str] = field(default_factory=list)

    def need(self, what: str) -> Any:
        """The fact ``what``, or stop the check with the typed reason it is missing."""
        value = getattr(self, what)
        if value is not None:
            return value
        if what in ("graph", "rf", "params"):
            reason = self.failure or Failure(ErrorKind.NOT_ANALYSED, "the model was not analysed").to_dict()
            where = f" ({reason['where']})" if reason.get("where") else ""
            raise Undecidable(
                f"the model could not be analysed: {reason['type']}{where}: {reason['message']}", reason["type"]
            )
        if what == "aug":
            reason = self.aug_failure or Failure(ErrorKind.NOT_FOUND, "no train transforms were found").to_dict()
            raise Undecidable(
                f"the train transforms could not be analysed: {reason['type']}: {reason['message']}", reason["type"]
            )
        if what == "training":
            raise NotRun(self.training_skipped)
        if what == "evidence":
            raise NotRun("the submission's own evidence (README, logs) was not read")
        raise Undecidable(f"{what} is not available")
