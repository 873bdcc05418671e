"""Typed failures: the one list of error kinds, and the ``{"type", "message", ...}`` dict each is written as.

Shared by both sides: the trusted grader (discovery, analysis, training, the batch) and the sandboxed
children in ``grader/child/`` (the probe and the training child write the same dicts into their inert
outputs). So this module imports only the standard library.

A failure is built as ``Failure(ErrorKind.TIMEOUT, "message").to_dict()``; a kind held in a variable
(``GraphError.kind``, a discovery problem) is converted with ``ErrorKind(value)``, which raises
``ValueError`` for a kind that is not listed here. The values are the strings that results.json, the
gradebook's ``error_type`` column and the report have always shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ErrorKind(str, Enum):
    """Why something could not be graded; the value is what results.json's ``type`` says."""

    # The sandboxed children (grader/sandbox/launch.py, grader/child/probe.py typed_error).
    TIMEOUT = "timeout"  # a child (or the whole grading) ran past its wall-clock or CPU time limit
    SANDBOX_FAILED = "sandbox_failed"  # the sandbox could not be set up (Landlock, the seccomp filter or the capability drop refused)
    OUT_OF_MEMORY = "out_of_memory"  # MemoryError, or killed by SIGKILL (the memory limit)
    FILE_TOO_LARGE = "file_too_large"  # the child wrote a file over the size limit (SIGXFSZ)
    CRASH = "crash"  # a process died or exited with an error status, with no more specific reason
    SYNTAX_ERROR = "syntax_error"  # a file of the submission does not parse
    IMPORT_ERROR = "import_error"  # the student's code imports a module or a name that is not there
    EXIT_CALLED = "exit_called"  # the student's code called exit() / sys.exit()
    CUDA_REQUIRED = "cuda_required"  # the student's code needs a GPU to import or build the model
    IMPORT_FAILED = "import_failed"  # importing the model's module raised (not an ImportError)
    MODEL_BUILD_FAILED = "model_build_failed"  # the model's constructor or first forward pass raised
    TRANSFORMS_BUILD_FAILED = "transforms_build_failed"  # the train pipeline could not be built
    EXPORT_FAILED = "export_failed"  # the model was built but its aten graph was not exported
    TRAINING_FAILED = "training_failed"  # the training child raised while training
    DIVERGED = "diverged"  # training produced a non-finite loss (FloatingPointError)
    RESUME_FAILED = "resume_failed"  # the state kept from an interrupted training run could not be loaded
    # What the probe found (or did not) in the submission.
    MODEL_NOT_FOUND = "model_not_found"  # no nn.Module subclass (or no code at all) to grade
    NOT_FOUND = "not_found"  # the named class is not in its file, or no train pipeline was found
    NOT_ALBUMENTATIONS = "not_albumentations"  # the train pipeline is torchvision's, not albumentations
    WRONG_OUTPUT_SHAPE = "wrong_output_shape"  # the model does not map (N, 3, 32, 32) to (N, classes)
    PROBE_FAILED = "probe_failed"  # the probe wrote no readable report (the transforms were not analysed)
    # The trusted side reading the probe's and the training child's outputs (grader/facts_from_probe.py,
    # grader/graph.py's GraphError, grader/training/).
    NOT_ANALYSED = "not_analysed"  # a check needed the model's facts and no failure says why they are missing
    NO_FEATURE_MAP = "no_feature_map"  # the graph has no 4-D feature map to measure a receptive field on
    BAD_GRAPH = "bad_graph"  # the exported graph or its weights are malformed or unreadable
    TOO_LARGE = "too_large"  # a child's output, or a tensor the graph asks for, is over the limit
    UNSAFE_OUTPUT = "unsafe_output"  # a child's output is a link, not a regular file, or unreadable
    WEIGHTS_MISMATCH = "weights_mismatch"  # the weights do not match the graph's parameters
    UNSUPPORTED_OP = "unsupported_op"  # the graph uses an operator that is not on the allowlist
    GRAPH_FAILED = "graph_failed"  # the rebuilt graph raised when run
    BAD_CHECKPOINT = "bad_checkpoint"  # --weights is not a safetensors file or a state_dict of tensors
    EVALUATION_FAILED = "evaluation_failed"  # evaluating a trained epoch's weights raised
    WRITES_OWN_TENSOR = "writes_own_tensor"  # the forward writes into a parameter, buffer or constant of its own
    EXPORT_MISMATCH = "export_mismatch"  # the eval-mode and train-mode graphs do not read the same parameters
    BATCH_DEPENDENT = "batch_dependent"  # in eval mode an image's output depends on the other images of its batch
    HIDDEN_DATA = "hidden_data"  # the forward reads more numbers than parameters and BN statistics: not decided
    WATCHES_GRADER = "watches_grader"  # the code asks whether it is exported, traced or graded: graph rules undecided
    # The whole grading (grader/cli.py, grader/pipeline.py).
    DISCOVERY_FAILED = "discovery_failed"  # discovery could not go on (not a folder, a bad grade.toml)
    BAD_PIN = "bad_pin"  # --model or --transforms names a file or class that is not in the submission
    GRADER_ERROR = "grader_error"  # the grader itself raised while grading (a bug: the trace says where)
    # The batch (grader/batch/).
    BATCH_ERROR = "batch_error"  # the batch failed on this student (or could not start the grader)
    BAD_OVERRIDE = "bad_override"  # a student's override names a folder that is not in the submission
    CLONE_FAILED = "clone_failed"  # the student's repository could not be cloned
    UNZIP_FAILED = "unzip_failed"  # the student's zip is unreadable or unsafe to unpack
    # A rule's check (grader/checks_runner.py, grader/checks_api.py): the evidence's error_type.
    RF_MISMATCH = "rf_mismatch"  # the RF recurrence and its gradient measurement disagree, or the recurrence is lost
    GRADER_BUG = "grader_bug"  # a check raised an unexpected exception (the check's fault, not the student's)
    CHECK_FILE_ERROR = "check_file_error"  # a course's check file could not be loaded
    UNDECIDED = "error"  # undecidable() with no kind of its own (checks_api.Undecidable's default)

    # Written and formatted as the value (as StrEnum does): f"{kind}" is "timeout", not "ErrorKind.TIMEOUT".
    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


@dataclass(frozen=True)
class Failure:
    """One typed failure. ``where``, ``stage`` and ``trace`` are written only when set (not None):
    each site keeps exactly the keys it always wrote (``where=""`` writes an empty ``where``)."""

    kind: ErrorKind
    message: str
    where: str | None = None  # file:line in the submission (or the stage's name, e.g. "train")
    stage: str | None = None  # what the child was doing (the probe's typed errors)
    trace: str | None = None  # the grader's own traceback (grader_error)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ErrorKind):
            raise TypeError(f"Failure kind must be an ErrorKind, not {self.kind!r} (convert with ErrorKind(value))")

    def to_dict(self) -> dict[str, str]:
        """``{"type", "message"}``, then ``where``, ``stage`` and ``trace`` where set: plain strings."""
        out = {"type": self.kind.value, "message": self.message}
        for key in ("where", "stage", "trace"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out
