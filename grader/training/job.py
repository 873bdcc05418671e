"""The training job: the grader trains and evaluates the graph it graded.

Trusted side: no student code runs here.

    train:     the train-mode graph the probe exported, rebuilt against the allowlist, every parameter
               initialised by the grader (``initialise.py``), trained by ``recipe.py`` in this process on
               the TRAIN split, with the student's pipeline rebuilt from plain data (``pipelines.py``)
    evaluate:  after every epoch, those weights in the rebuilt eval-mode graph on the TEST split, in a
               shuffled order, each image's output checked to be its own (``evaluate.py``); stop at target
    --weights: a submitted checkpoint, loaded exactly into the eval graph, evaluated the same way and
               shown with consistency figures that expose a memorised test set (``consistency.py``)

No student code runs here: the graph is a list of allowlisted aten calls and the weights are tensors.
The limits the sandbox gave the old training child still hold: a wall-clock limit (the state kept for
a resumed run), a memory budget checked against the graph's measured activations before training, and
an out-of-memory error is a typed failure for this student, never a crash of the grader.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from grader import __version__
from grader.failures import ErrorKind, Failure
from grader.graph import GraphError, LoadedGraph
from grader.submission import Submission
from grader.training import recipe
from grader.training.consistency import Consistency, flipped, shifted, train_sample
from grader.training.data import DataUnavailable, Split, load_split
from grader.training.evaluate import (
    BatchDependent,
    EvalResult,
    check_checkpoint,
    evaluate,
    load_checkpoint,
    model_with_weights,
    outputs_probabilities,
    preprocess,
)
from grader.training.hyperparameters import resolve_hyp
from grader.training.initialise import initialise
from grader.training.pipelines import training_pipeline
from grader.training.plots import curves_png, misclassified_png
from grader.training.resume import FOLDER as STATE_FOLDER
from grader.training.resume import RunStore, run_key
from grader.training.source import CHECKPOINT, REPRODUCED

if TYPE_CHECKING:
    from rich.console import Console

    from grader.evidence.logs import ChosenLog


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TrainingFailure(Exception):
    """A typed reason this student's training or evaluation stopped (``failure`` is the result's dict)."""

    def __init__(self, failure: dict):
        super().__init__(failure["message"])
        self.failure = failure


OUT_OF_MEMORY_TEXT = ("out of memory", "not enough memory", "DefaultCPUAllocator", "Cannot allocate")


def activation_bytes(graph: LoadedGraph, batch: int) -> int:
    """About what one training step of ``graph`` holds at ``batch`` images: every node's output (kept
    for the backward pass) and its gradient, float32, from the shapes measured at batch 2."""
    total = 0
    for node in graph.nodes:
        if node.shape is not None:
            total += math.prod(node.shape)
    return int(total / 2 * batch * 4 * 2)


class TrainingJob:
    hyp: dict[str, Any]  # the recipe's hyperparameters: run_training sets them (resolve_hyp) before training

    def __init__(self, facts: Any, disc: Any, work: Path, opts: Any, say: Any):
        self.facts, self.disc, self.work, self.opts, self.say = facts, disc, work, opts, say
        self.graph: LoadedGraph = facts.graph
        self.target = float(opts.rubric["rules"]["accuracy"]["target"])
        self.seed = int(opts.rubric["training"].get("seed", recipe.HYP["seed"]))
        self.epochs: list[dict] = []
        self.error: dict | None = None
        self.start = time.monotonic()
        self.reached: dict | None = None
        self.last_weights: bytes | None = None
        self.predictions: np.ndarray | None = None  # of the last evaluated epoch
        self.store: RunStore | None = None  # where this schedule is kept for a resumed grading
        self.kept: list[RunStore] = []  # every schedule's store: cleared, and only these, once results are written
        self.resumed_after: int | None = None  # the epochs an interrupted grading had run
        self.schedules = 0  # schedules started (a longer one may follow the planned one)
        self.header_printed = False
        self.console = _console()
        self.device = pick_device(opts.device)
        self.pipeline_note: str | None = None
        self.roles: dict[str, str] = {}  # parameter -> how the grader initialised it
        self.last_progress = 0.0

    # ---- data --------------------------------------------------------------------------------------
    def load_test(self) -> Split:
        self.test = load_split("test", self.opts.data, self.opts.data_dir)
        self.config = ((self.facts.probe or {}).get("transforms") or {}).get("to_dict")
        self.x_test = preprocess(self.test.images, self.config)
        self.y_test = torch.from_numpy(self.test.labels)
        self.probabilities = outputs_probabilities(self.graph)
        return self.test

    # ---- evaluation ----------------------------------------------------------------------------------
    def evaluate_weights(self, weights: dict[str, torch.Tensor], x: torch.Tensor | None = None) -> EvalResult:
        """``weights`` in the rebuilt eval graph on the test images (or ``x``, the same images changed)."""
        model = model_with_weights(self.graph, weights)
        batch = 500 if self.graph.batch_dynamic else 2
        return evaluate(
            model,
            self.x_test if x is None else x,
            self.y_test,
            self.device,
            batch,
            self.probabilities,
            seed=self.seed,
            fixed_batch=not self.graph.batch_dynamic,
        )

    def evaluate_epoch(self, epoch: int, weights: dict[str, torch.Tensor], stats: dict) -> bool:
        """Evaluate one epoch's weights, print and keep its row; True when training should stop."""
        result = self.evaluate_weights(weights)
        from safetensors.torch import save

        self.last_weights = save(weights)
        self.predictions = result.predictions
        row = {
            "epoch": epoch,
            "train_loss": round(float(stats.get("train_loss", 0.0)), 4),
            "train_acc": round(float(stats.get("train_acc", 0.0)), 4),
            "test_loss": round(result.loss, 4),
            "test_acc": round(result.acc, 2),
            "lr": round(float(stats.get("lr", 0.0)), 5),
            "seconds": round(float(stats.get("seconds", 0.0)), 1),
            "elapsed": round(time.monotonic() - self.start, 1),
        }
        self.epochs.append(row)
        self.print_row(row)
        if self.reached is None and result.acc >= self.target:
            self.reached = row
            return bool(self.opts.rubric["training"]["early_stop"])
        return False

    def consistency(self, test: EvalResult, weights: dict[str, torch.Tensor]) -> Consistency:
        """The checkpoint's right and wrong on flipped and shifted test images and on clean training images."""
        margin = float(self.opts.rubric["rules"]["accuracy"].get("consistency_margin", 3.0))
        labels = self.test.labels
        flip = self.evaluate_weights(weights, preprocess(flipped(self.test.images), self.config)).predictions
        shift = self.evaluate_weights(weights, preprocess(shifted(self.test.images), self.config)).predictions
        train = load_split("train", self.opts.data, self.opts.data_dir)
        pick = train_sample(len(train), self.seed)
        model = model_with_weights(self.graph, weights)
        batch = 500 if self.graph.batch_dynamic else 2
        x, y = preprocess(train.images[pick], self.config), torch.from_numpy(train.labels[pick])
        on_train = evaluate(model, x, y, self.device, batch, self.probabilities, seed=self.seed).predictions
        return Consistency(
            test.predictions == labels, flip == labels, shift == labels, on_train == train.labels[pick], margin
        )

    # ---- resuming ------------------------------------------------------------------------------------
    def keep(self, state: bytes | None, complete: bool = False, extra: dict | None = None) -> None:
        """Save the run as of its last epoch: the rows, the weights and the training state, by value."""
        if self.store is None:
            return
        try:
            self.store.save(self.epochs, self.last_weights, state, complete=complete, extra=extra)
        except OSError as exc:
            self.say("train", f"could not keep the training state: {exc}")
            self.store = None

    def restore(self, rows: list[dict], weights: bytes | None, elapsed: float) -> None:
        self.epochs = [dict(r) for r in rows]
        self.last_weights = weights
        self.reached = next((r for r in self.epochs if r["test_acc"] >= self.target), None)
        self.start = time.monotonic() - elapsed
        self.resumed_after = len(rows)

    def predictions_of_last(self) -> np.ndarray | None:
        """The last epoch's test predictions (evaluated again when the epoch was kept by a resumed run)."""
        if self.predictions is None and self.last_weights is not None:
            from safetensors.torch import load

            self.predictions = self.evaluate_weights(load(self.last_weights)).predictions
        return self.predictions

    # ---- terminal ------------------------------------------------------------------------------------
    def print_row(self, row: dict) -> None:
        if not self.header_printed:  # once per schedule, also above the rows a resumed run kept
            self.header_printed = True
            self.console.print(" epoch  train loss  train acc  test loss  test acc       lr  seconds")
        mark = "  <- target" if row["test_acc"] >= self.target and self.reached is None else ""
        self.console.print(
            f" {row['epoch']:>5}  {row['train_loss']:>10.4f}  {100 * row['train_acc']:>8.2f}%  {row['test_loss']:>9.4f}"
            f"  {row['test_acc']:>7.2f}%  {row['lr']:>7.4f}  {row['seconds']:>7.1f}{mark}"
        )

    def show_progress(self, epoch: int, seen: int, total: int, loss: float, acc: float) -> None:
        """One line about the running epoch, at most once a second."""
        now = time.monotonic()
        if now - self.last_progress < 1.0:
            return
        self.last_progress = now
        done = len(self.epochs) - (self.resumed_after or 0)
        per_epoch = (now - self.start) / done if done > 0 else None
        eta = f", ETA {per_epoch * (self.hyp['epochs'] - len(self.epochs)) / 60:.0f} min" if per_epoch else ""
        line = f"epoch {epoch}/{self.hyp['epochs']}: {100 * seen / max(1, total):.0f}% loss {loss:.3f} acc {100 * acc:.1f}%{eta}"
        self.say("train", line)
        if self.console.is_terminal:
            self.console.print(line, end="\r")

    # ---- schedules -----------------------------------------------------------------------------------
    def attempt(self, why: str) -> dict:
        """What one schedule gave and cost, for the report and the gradebook."""
        best = max((e["test_acc"] for e in self.epochs), default=None)
        return {
            "epochs_planned": int(self.hyp["epochs"]),
            "epochs_run": len(self.epochs),
            "best_test_acc": best,
            "reached_at": self.reached["epoch"] if self.reached else None,
            "wall_s": round(time.monotonic() - self.start, 1),
            "why": why,
            "resumed_after_epoch": self.resumed_after,
        }

    def restart(self, epochs: int) -> None:
        """A fresh run of a longer schedule: same seed, same recipe, only the planned epochs change."""
        self.hyp = dict(self.hyp, epochs=epochs)
        self.epochs, self.reached, self.error, self.last_weights, self.predictions = [], None, None, None, None
        self.resumed_after, self.header_printed = None, False

    # ---- the run ---------------------------------------------------------------------------------------
    def run_key(self, train: Split) -> str:
        """What the figures depend on: the graph trained and evaluated, the pipeline, the recipe and its
        hyperparameters, the device, the data, the grader's version, and the isolation the probe ran
        under (a run begun under another sandbox is not this one's)."""
        probe = self.facts.probe or {}
        return run_key(
            graph=_graph_digest(self.facts.train_graph, self.graph),
            pipeline=((probe.get("transforms") or {}).get("to_dict")),
            hyp=self.hyp,
            recipe=hashlib.sha256(Path(recipe.__file__).read_bytes()).hexdigest(),  # another recipe, another run
            grader=__version__,
            isolation=(self.facts.sandbox or {}).get("isolation"),  # the probe's: what the code could read
            device=self.device.type,
            data=_fingerprint(train.images, train.labels, self.test.labels),  # the data, wherever it lies
        )

    def train(self, train: Split) -> None:
        """Run the planned schedule here; resume it where an interrupted grading of the same graph,
        data and recipe left it (OUT/training_state)."""
        self.store = RunStore(self.opts.state_dir or self.opts.out_dir / STATE_FOLDER, self.run_key(train))
        self.kept.append(self.store)
        saved = self.store.load() if self.opts.resume else None
        self.schedules += 1
        if saved is None and self.opts.resume and self.schedules == 1 and self.store.others():
            self.console.print(
                f"[yellow]not resumed[/yellow]: {self.store.root} holds a run of another model, pipeline, recipe, "
                "grader version, sandbox or data; training from epoch 1"
            )
        early_stop = bool(self.opts.rubric["training"]["early_stop"])
        if saved is not None and (
            saved.complete or (early_stop and any(r["test_acc"] >= self.target for r in saved.rows))
        ):
            # This schedule had ended (or reached the target, killed before it stopped): no training.
            self.restore(
                saved.rows, saved.weights, float(saved.extra.get("wall_s", saved.rows[-1].get("elapsed", 0.0)))
            )
            self.error = saved.extra.get("error")
            self.console.print(f"schedule of {self.hyp['epochs']} epochs: kept from an interrupted grading")
            for row in self.epochs:
                self.print_row(row)
            return
        self.start = time.monotonic()
        try:
            self._run(train, saved)
        except TrainingFailure as exc:
            self.error = exc.failure
        if self.error is not None and self.epochs:
            self.error = self.error | {"message": self.error["message"] + f" (after {len(self.epochs)} epochs)"}
        kind = (self.error or {}).get("type")
        if kind == ErrorKind.RESUME_FAILED.value:
            self.store.discard()  # the next grading trains from epoch 1
        elif self.epochs and kind != ErrorKind.TIMEOUT.value:
            extra = {"error": self.error, "wall_s": round(time.monotonic() - self.start, 1)}
            self.keep(None, complete=True, extra=extra)

    def _run(self, train: Split, saved: Any) -> None:
        if self.facts.train_graph is None:
            raise TrainingFailure(
                self.facts.train_graph_failure
                or Failure(ErrorKind.EXPORT_FAILED, "the model has no train-mode graph").to_dict()
            )
        graph = self.facts.train_graph
        batch = int(self.hyp["batch_size"])
        needed = activation_bytes(graph, max(batch, int(self.hyp.get("bn_batch") or 0)))
        budget = int(self.opts.rubric["limits"]["train_memory_mb"]) << 20
        if needed > budget:
            raise TrainingFailure(
                Failure(
                    ErrorKind.OUT_OF_MEMORY,
                    f"a training step at batch {batch} needs about {needed / 2**30:.1f} GiB for the graph's "
                    f"activations, over the limit of {budget / 2**30:.1f} GiB ([limits] train_memory_mb)",
                ).to_dict()
            )
        model = copy.deepcopy(graph.model)
        roles = initialise(graph, self.seed, model)
        self.roles = {target: role.role for target, role in roles.items()}
        model.move_to(self.device)
        pipeline, self.pipeline_note = training_pipeline(self.config, self.facts.mean, self.facts.std)
        if self.pipeline_note:
            self.console.print(f"[yellow]note[/yellow]: {self.pipeline_note}")
        resume = None
        if saved is not None and saved.state_file is not None:
            try:
                resume = recipe.TrainState.from_bytes(saved.state_file.read_bytes())
                if resume.epoch != len(saved.rows):
                    raise ValueError(f"it is of epoch {resume.epoch}, not {len(saved.rows)}")
            except Exception as exc:
                raise TrainingFailure(
                    Failure(ErrorKind.RESUME_FAILED, f"the saved training state: {exc}").to_dict()
                ) from exc
            self.restore(saved.rows, saved.weights, float(saved.rows[-1].get("elapsed", 0.0)))
            self.console.print(
                f"[green]resuming[/green] after epoch {len(saved.rows)} of {self.hyp['epochs']}, kept in "
                f"{self.store.root if self.store else '?'} by an interrupted grading (--no-resume trains from epoch 1)"
            )
            for row in self.epochs:
                self.print_row(row)
        total = len(train)
        deadline = self.start + float(self.opts.rubric["limits"]["train_seconds"])
        epochs = recipe.train(
            model,
            train.images,
            train.labels,
            pipeline,
            self.hyp,
            self.device,
            self.probabilities,
            lambda epoch, seen, loss, acc: self.show_progress(epoch, seen, total, loss, acc),
            resume,
            deadline,
        )
        try:
            for stats in epochs:
                weights = {model.targets.get(k, k): v for k, v in stats.weights.items()}
                stop = self.evaluate_epoch(stats.epoch, weights, stats.log_entry())
                self.keep(stats.state.to_bytes() if stats.state is not None else None)
                if stop:
                    break
        except recipe.OutOfTime as exc:
            limit = float(self.opts.rubric["limits"]["train_seconds"])
            raise TrainingFailure(
                Failure(ErrorKind.TIMEOUT, f"stopped after {limit:.0f} s (the time limit): {exc}").to_dict()
            ) from exc
        except BatchDependent as exc:
            raise TrainingFailure(Failure(ErrorKind.BATCH_DEPENDENT, str(exc)).to_dict()) from exc
        except FloatingPointError as exc:
            raise TrainingFailure(Failure(ErrorKind.DIVERGED, str(exc)).to_dict()) from exc
        except (MemoryError, torch.OutOfMemoryError) as exc:
            raise TrainingFailure(_out_of_memory(exc)) from exc
        except Exception as exc:  # the graph or the pipeline broke on real data: this student's failure
            if any(text in str(exc) for text in OUT_OF_MEMORY_TEXT):
                raise TrainingFailure(_out_of_memory(exc)) from exc
            raise TrainingFailure(
                Failure(ErrorKind.TRAINING_FAILED, f"{type(exc).__name__}: {str(exc)[:500]}", where="train").to_dict()
            ) from exc
        finally:
            epochs.close()  # the data workers end with the generator
        if self.console.is_terminal:
            self.console.print(" " * 80, end="\r")


def _out_of_memory(exc: BaseException) -> dict:
    return Failure(
        ErrorKind.OUT_OF_MEMORY, f"training ran out of memory ({type(exc).__name__}: {str(exc)[:200]})"
    ).to_dict()


def _cpus() -> int:
    import os

    return os.cpu_count() or 2


def _graph_digest(*graphs: LoadedGraph | None) -> str:
    """A hash of the graphs' nodes and input names and shapes (their weights are the grader's own)."""
    h = hashlib.sha256()
    for graph in graphs:
        if graph is None:
            continue
        for node in graph.nodes:
            h.update(json.dumps([node.name, node.target, node.args, node.kwargs], default=str).encode())
        for inp in graph.inputs:
            h.update(f"{inp.kind}/{inp.target}/{inp.shape}/{inp.dtype}".encode())
    return h.hexdigest()


def student_log_claim(snapshot: Path, disc: Any) -> ChosenLog | None:
    """The student's own log, read as text before training (None when there is none)."""
    from grader.evidence.logs import choose_log, find_logs

    index = disc.submission or Submission.scan(snapshot)  # the same index discovery read
    try:
        log = choose_log(find_logs(index, [], under=disc.assignment_dir or ""))
    except Exception:  # the log is evidence, never a reason for the training job to break
        return None
    return log if log.found else None


def longer_schedule(job: TrainingJob, rubric_training: dict, claim: ChosenLog | None) -> tuple[int, str] | None:
    """(epochs, why) for a second, longer schedule, or None.

    Only when the planned schedule ran to its end without error and missed the target, while the
    student's own log reached the target at a later epoch than planned; capped by the rubric's
    ``evidence_max_epochs`` (the TA's ceiling on compute per student).
    """
    ceiling = int(rubric_training["evidence_max_epochs"])
    planned = int(job.hyp["epochs"])
    if job.reached is not None or job.error is not None or len(job.epochs) < planned or ceiling <= planned:
        return None
    wanted = claim.first_epoch_reaching(job.target) if claim else None
    if claim is None or not wanted or wanted <= planned:
        return None
    epochs = min(wanted, ceiling)
    why = f"the student's log ({claim.source}) reached {claim.best_acc}% and first reached {job.target:g}% at epoch {wanted}"
    if epochs < wanted:
        why += f" (the rubric's ceiling is {ceiling})"
    return epochs, why


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)  # the buffer itself, no copy
    return h.hexdigest()


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def unsandboxed_refusal(facts: Any, opts: Any) -> str | None:
    """Why accuracy must not be decided here: no filesystem layer hid the test split from the probe,
    where the submission's code ran (a constant built at import time could hold what it read)."""
    if (facts.sandbox or {}).get("isolation") != "plain" or opts.accept_unsandboxed:
        return None
    return (
        "not decided: no filesystem sandbox (bubblewrap or Landlock) works on this machine, so the submission's "
        "code could have read the test split; pass --accept-unsandboxed to decide it anyway"
    )


def refusal(facts: Any) -> dict | None:
    """Why this submission's accuracy is not decided, as a typed failure of the submission (its code
    watches the grader, its forward reads hidden data, or it mixes the images of a batch); None: train
    or evaluate it."""
    if facts.watches_grader:
        return Failure(
            ErrorKind.WATCHES_GRADER,
            f"not decided: the code asks whether it is being exported or graded ({facts.watches_grader[0]}), "
            "so the graph the grader would train may not be what runs",
        ).to_dict()
    if facts.params is not None and facts.params.hidden_data:
        return Failure(
            ErrorKind.HIDDEN_DATA,
            f"not decided: the forward reads {facts.params.hidden_total:,} numbers that are neither parameters "
            "nor BatchNorm statistics (hidden data: see the params rule)",
        ).to_dict()
    if facts.batch_mixing:
        return Failure(
            ErrorKind.BATCH_DEPENDENT,
            f"refused: {facts.batch_mixing[0]}: in eval mode an image's prediction must not depend on the other "
            "images of its batch",
        ).to_dict()
    return None


def run_training(facts: Any, disc: Any, submission: Path, work: Path, opts: Any, say: Any) -> dict | None:
    """Train (or evaluate ``opts.weights``) and return the training facts; None when it cannot run."""
    if facts.graph is None:
        facts.training_skipped = "not run: the model could not be analysed, so there is nothing to train"
        return None
    facts.training_refused = refusal(facts)
    if facts.training_refused is not None:
        return None
    why_not = unsandboxed_refusal(facts, opts)
    if why_not:
        facts.training_skipped = why_not
        return None
    job = TrainingJob(facts, disc, work, opts, say)
    try:
        test = job.load_test()
    except DataUnavailable as exc:
        facts.training_skipped = f"not run: {exc}"
        job.console.print(f"[yellow]accuracy not decided[/yellow]: {exc}")
        return None
    result: dict[str, Any] = {"target": job.target, "device": str(job.device), "data": test.source, "epochs": []}
    if opts.weights is not None:
        return _checkpoint(job, test, result)
    result["source"] = REPRODUCED
    try:
        train = load_split("train", opts.data, opts.data_dir)
    except DataUnavailable as exc:
        facts.training_skipped = f"not run: {exc}"
        return None
    facts.mean, facts.std = train.mean_std()
    job.hyp, notes = resolve_hyp(opts.rubric["training"], disc.pinned.get("training"), opts.epochs)
    job.hyp["workers"] = min(8, max(1, _cpus() - 1)) if job.device.type == "cuda" else 1  # augmentation processes
    result["notes"] = notes
    if job.device.type == "cpu":
        minutes = len(train) / 50000 * 2.5
        job.console.print(
            f"[yellow]training on the CPU[/yellow]: about {minutes:.1f} minutes per epoch for a 200k-parameter model on 2 cores; up to {job.hyp['epochs']} epochs"
        )
    say("train", f"{len(train)} training images, up to {job.hyp['epochs']} epochs on {job.device}")
    job.train(train)
    attempts = [job.attempt("the planned schedule")]
    # An explicit --epochs is the schedule the TA asked for: no second one.
    claim = student_log_claim(submission, disc) if opts.epochs is None else None
    longer = longer_schedule(job, opts.rubric["training"], claim)
    if longer is not None:
        epochs, why = longer
        job.console.print(
            f"[yellow]target missed[/yellow] in {job.hyp['epochs']} epochs; {why}: retraining with {epochs} epochs"
        )
        say("train", f"retraining with a {epochs}-epoch schedule ({why})")
        job.restart(epochs)
        job.train(train)
        attempts.append(job.attempt(why))
    result["attempts"] = attempts
    result["compute_s"] = round(sum(a["wall_s"] for a in attempts), 1)
    result["compute"] = {
        "epochs": sum(a["epochs_run"] for a in attempts),
        "images": sum(a["epochs_run"] for a in attempts) * len(train),
        "seconds": result["compute_s"],
    }
    result["hyp"] = job.hyp
    result["initialised"] = job.roles
    if job.pipeline_note:
        result["pipeline_note"] = job.pipeline_note
    result["epochs"] = job.epochs
    result["epochs_run"] = len(job.epochs)
    result["error"] = job.error
    result["wall_s"] = round(time.monotonic() - job.start, 1)
    if job.epochs:
        best = max(job.epochs, key=lambda e: e["test_acc"])
        result["best_test_acc"] = best["test_acc"]
        result["best_epoch"] = best["epoch"]
        result["final_test_acc"] = job.epochs[-1]["test_acc"]
        result["stopped_early"] = job.reached is not None and len(job.epochs) < job.hyp["epochs"]
        if job.reached:
            result["epochs_to_target"] = job.reached["epoch"]
            result["seconds_to_target"] = job.reached["elapsed"]
        result["curves_png"] = curves_png(job.epochs, job.target)
        predictions = job.predictions_of_last()
        if predictions is not None:
            result["misclassified_png"] = misclassified_png(test.images, test.labels, predictions, test.classes)
        if job.last_weights is not None:
            opts.out_dir.mkdir(parents=True, exist_ok=True)
            (opts.out_dir / "trained.safetensors").write_bytes(job.last_weights)
            result["weights_file"] = str(opts.out_dir / "trained.safetensors")
        (opts.out_dir / "training_log.json").write_text(
            json.dumps({k: v for k, v in result.items() if not k.endswith("_png")}, indent=1)
        )
    if job.store is not None and (job.error or {}).get("type") != ErrorKind.TIMEOUT.value:
        # The results are written: nothing of this grading is left to resume. Runs kept there for
        # other submissions (the default ./grade-out is shared) stay until their own grading ends.
        for store in job.kept:
            store.discard()
    elif job.store is not None:  # stopped by the wall-clock limit: the next grading goes on from here
        job.console.print(f"the training state is kept in {job.store.root}: grading again resumes it")
    return result


def _checkpoint(job: TrainingJob, test: Split, result: dict) -> dict:
    """A submitted checkpoint: loaded exactly, evaluated, and its consistency figures measured."""
    result["source"] = CHECKPOINT
    try:
        weights = load_checkpoint(Path(job.opts.weights))
        check_checkpoint(job.graph, weights)
        evaluated = job.evaluate_weights(weights)
        figures = job.consistency(evaluated, weights)
    except GraphError as exc:
        result["error"] = Failure(ErrorKind(exc.kind), str(exc)).to_dict()
        return result
    except BatchDependent as exc:
        result["error"] = Failure(ErrorKind.BATCH_DEPENDENT, str(exc)).to_dict()
        return result
    except DataUnavailable as exc:
        result["error"] = Failure(
            ErrorKind.EVALUATION_FAILED, f"the train split for the consistency figures: {exc}"
        ).to_dict()
        return result
    except Exception as exc:
        result["error"] = Failure(ErrorKind.EVALUATION_FAILED, f"{type(exc).__name__}: {str(exc)[:300]}").to_dict()
        return result
    result.update(best_test_acc=round(evaluated.acc, 2), test_loss=round(evaluated.loss, 4), epochs_run=0)
    result["consistency"] = figures.to_dict()
    result["misclassified_png"] = misclassified_png(test.images, test.labels, evaluated.predictions, test.classes)
    job.console.print(f"checkpoint: {figures.explain()}")
    return result
