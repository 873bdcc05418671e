"""Everything the trusted side knows about a submission, handed to the checks as the ``facts`` fixture."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.checks_api import NotRun, Undecidable
from grader.failures import ErrorKind, Failure

if TYPE_CHECKING:  # only for the annotations: graph.py imports torch, which Facts itself never needs
    from grader.analysis.augmentations import AugFindings
    from grader.analysis.layers import ParamFacts, SpatialLayer
    from grader.analysis.receptive_field import MeasuredRF, RFResult
    from grader.analysis.source import SourceFacts
    from grader.discover import Discovery
    from grader.graph import LoadedGraph


@dataclass
class Facts:
    submission: Path
    rubric: dict
    discovery: Discovery | None = None
    probe: dict | None = None  # the child's probe.json
    failure: dict | None = None  # typed reason the model could not be analysed: {"type", "message", "where"}
    graph: LoadedGraph | None = None  # the eval-mode export: what the rules read and what is evaluated
    train_graph: LoadedGraph | None = None  # the train-mode export: what the grader trains
    train_graph_failure: dict | None = None  # typed reason there is no train graph (accuracy cannot be trained)
    layers: list[SpatialLayer] = field(default_factory=list)
    rf: RFResult | None = None
    measured_rf: MeasuredRF | None = None
    params: ParamFacts | None = None
    batch_mixing: list[str] = field(default_factory=list)  # why the eval graph mixes a batch's images (analysis/batch)
    aug: AugFindings | None = None
    aug_failure: dict | None = None  # typed reason the train transforms could not be analysed
    # What the augmentations are decided from (kept to decide them again once the real data's mean is known):
    # the child's transform description, the trusted probe of the rebuilt pipeline, the student's texts, the
    # A.* calls found in the source.
    aug_inputs: tuple[dict, dict | None, list[tuple[str, str]], list[dict]] | None = None
    augmented_grid_png: str | None = None  # base64 PNG of the probe's augmented images
    summary_text: str = ""  # the probe's torchinfo summary
    sandbox: dict = field(default_factory=dict)  # how the probe child was isolated: isolation, wall_s, layers...
    sources: SourceFacts | None = None
    evidence: dict | None = None  # README / logs / notebooks (grader.evidence)
    training: dict | None = None  # the grader's own training job, when it ran
    training_skipped: str = "not run: pass --train (the default when a GPU is present) to train the model"
    training_refused: dict | None = None  # typed reason the submission's own code keeps accuracy undecided
    mean: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, ...] = (0.2470, 0.2435, 0.2616)
    warnings: list[str] = field(default_factory=list)

    @property
    def watches_grader(self) -> list[str]:
        """Lines of the submission that ask whether they are exported, traced or graded."""
        return self.sources.watch_lines if self.sources is not None else []

    def need(self, what: str) -> Any:
        """The fact ``what``, or stop the check with the typed reason it is missing.

        What the probe produced (the graph and everything read from it, the pipeline) is not believed
        for a submission whose code watches the grader: it could show the grader another network."""
        if what in ("graph", "rf", "params", "aug") and self.watches_grader:
            first = self.watches_grader[0]
            more = f" and {len(self.watches_grader) - 1} more line(s)" if len(self.watches_grader) > 1 else ""
            raise Undecidable(
                f"not decided: the code asks whether it is being exported, traced or graded ({first}{more}), "
                "so what the grader saw may not be what runs; remove that code",
                ErrorKind.WATCHES_GRADER.value,
            )
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
            if self.training_refused is not None:
                raise Undecidable(self.training_refused["message"], self.training_refused["type"])
            raise NotRun(self.training_skipped)
        if what == "evidence":
            raise NotRun("the submission's own evidence (README, logs) was not read")
        raise Undecidable(f"{what} is not available")
