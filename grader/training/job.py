"""The training job (trusted side's orchestration): data, the sandboxed training child, per-epoch evaluation.

    trusted: load CIFAR-10 -> write the TRAIN split to .npy -> start the child (train split only)
    child:   trains with the grader's recipe, hands over weights after every epoch (safetensors)
    trusted: loads each epoch's weights into the graph rebuilt from the probe, evaluates it on the
             TEST split, prints the epoch's row, stops the child once the target is reached

The verdict and every figure come from the trusted evaluation; the child's own numbers are only
its train loss/accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from grader.boundary import TRAIN_OUTPUTS, UnsafeOutput, read_output
from grader.failures import ErrorKind, Failure
from grader.graph import GraphError
from grader.rubric import TRAINING_OVERRIDES, TRAINING_RUBRIC_ONLY
from grader.sandbox import Limits, child_command, run_sandboxed
from grader.sandbox.layers import describe as describe_layers
from grader.submission import Submission
from grader.training import recipe
from grader.training.data import DataUnavailable, Split, load_split
from grader.training.evaluate import (
    EvalResult,
    evaluate,
    load_checkpoint,
    model_with_weights,
    outputs_probabilities,
    preprocess,
)
from grader.training.plots import curves_png, misclassified_png
from grader.training.resume import FOLDER as STATE_FOLDER
from grader.training.resume import RunStore, run_key
from grader.training.source import CHECKPOINT, REPRODUCED
from grader.workspace import fresh_copy, sensitive_paths, transforms_spec

if TYPE_CHECKING:
    from rich.console import Console

    from grader.evidence.logs import ChosenLog

TUNABLE = TRAINING_OVERRIDES  # what a rubric's [training] and a submission's [grade.training] may set


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_hyp(rubric_training: dict, requested: dict | None, epochs: int | None) -> tuple[dict, list[str]]:
    """The recipe's hyperparameters: its own defaults (recipe.HYP), the rubric's overrides, then the
    submission's requests within the rubric's caps."""
    hyp = dict(recipe.HYP)
    notes = []
    for key in TUNABLE + TRAINING_RUBRIC_ONLY:
        if key in rubric_training:
            hyp[key] = rubric_training[key]
    caps = {"epochs": int(rubric_training["max_epochs"]), "batch_size": int(rubric_training["max_batch_size"])}
    wanted = dict(requested or {})
    if epochs is not None:
        wanted["epochs"] = epochs
    for key, value in wanted.items():
        if key in TRAINING_RUBRIC_ONLY:
            notes.append(f"training setting {key}={value!r} ignored: only the course's rubric sets the {key}")
            continue
        if key not in TUNABLE or not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            notes.append(f"training setting {key}={value!r} ignored (allowed: {', '.join(TUNABLE)}, positive numbers)")
            continue
        if key in caps and value > caps[key]:
            notes.append(f"{key}={value} is over the rubric's cap; {caps[key]} used")
            value = caps[key]
        hyp[key] = type(hyp[key])(value)
    return hyp, notes


class _Watcher:
    """Polled by the sandbox while the child trains: evaluates each new epoch and decides the stop."""

    def __init__(self, job: TrainingJob):
        self.job = job
        self.seen = 0

    def __call__(self, final: bool = False) -> bool:
        """Evaluate every complete new epoch; True to stop the child. A link where an epoch's file
        belongs is waited on while the child runs (it writes by rename), and refused at the end."""
        job = self.job
        while self.seen < int(job.hyp["epochs"]):  # files past the planned epochs are not the child's
            name = f"epoch_{self.seen + 1:03d}"
            try:  # the stats are written after the weights: both there means the epoch is complete
                stats = json.loads(read_output(job.out, f"{name}.json", TRAIN_OUTPUTS["epoch.json"]))
                weights = read_output(job.out, f"{name}.safetensors", TRAIN_OUTPUTS["epoch.safetensors"])
            except FileNotFoundError:
                break
            except UnsafeOutput as exc:
                if not final:
                    break
                job.error = Failure(ErrorKind.UNSAFE_OUTPUT, f"the training child's output {exc}").to_dict()
                return True
            except ValueError as exc:
                job.error = Failure(
                    ErrorKind.UNSAFE_OUTPUT, f"the training child's output {name}.json: {exc}"
                ).to_dict()
                return True
            self.seen += 1
            if job.evaluate_epoch(self.seen, weights, stats if isinstance(stats, dict) else {}):
                return True
        job.show_progress()
        return False


class TrainingJob:
    hyp: dict[str, Any]  # the recipe's hyperparameters: run_training sets them (resolve_hyp) before training

    def __init__(self, facts: Any, disc: Any, work: Path, opts: Any, say: Any):
        self.facts, self.disc, self.work, self.opts, self.say = facts, disc, work, opts, say
        self.graph = facts.graph
        self.target = float(opts.rubric["rules"]["accuracy"]["target"])
        self.out = work / "train"
        self.epochs: list[dict] = []
        self.error: dict | None = None
        self.start = time.monotonic()
        self.reached: dict | None = None
        self.last_weights: bytes | None = None
        self.predictions: np.ndarray | None = None  # of the last evaluated epoch
        self.layers: dict = {}  # what protected the training child
        self.store: RunStore | None = None  # where this schedule is kept for a resumed grading
        self.kept: list[RunStore] = []  # every schedule's store: cleared, and only these, once results are written
        self.resumed_after: int | None = None  # the epochs an interrupted grading had run
        self.schedules = 0  # schedules started (a longer one may follow the planned one)
        self.header_printed = False
        self.console = _console()
        self.device = pick_device(opts.device)

    # ---- data --------------------------------------------------------------------------------------
    def load_test(self) -> Split:
        self.test = load_split("test", self.opts.data, self.opts.data_dir)
        config = ((self.facts.probe or {}).get("transforms") or {}).get("to_dict")
        self.x_test = preprocess(self.test.images, config)
        self.y_test = torch.from_numpy(self.test.labels)
        self.probabilities = outputs_probabilities(self.graph)
        return self.test

    # ---- evaluation ----------------------------------------------------------------------------------
    def evaluate_weights(self, weights: dict[str, torch.Tensor]) -> EvalResult:
        model = model_with_weights(self.graph, weights)
        batch = 500 if self.graph.batch_dynamic else 2
        return evaluate(model, self.x_test, self.y_test, self.device, batch, self.probabilities)

    def evaluate_epoch(self, epoch: int, weights: bytes, stats: dict) -> bool:
        from safetensors.torch import load

        try:
            result = self.evaluate_weights(load(weights))
        except GraphError as exc:
            self.error = Failure(
                ErrorKind(exc.kind),
                f"epoch {epoch}: {exc} (the trained model does not match the graph that was graded)",
            ).to_dict()
            return True
        except Exception as exc:
            self.error = Failure(ErrorKind.EVALUATION_FAILED, f"epoch {epoch}: {type(exc).__name__}: {exc}").to_dict()
            return True
        self.last_weights = weights
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
        self.keep(epoch, weights)
        if self.reached is None and result.acc >= self.target:
            self.reached = row
            return bool(self.opts.rubric["training"]["early_stop"])
        return False

    # ---- resuming ------------------------------------------------------------------------------------
    def keep(self, epoch: int, weights: bytes) -> None:
        """Save the run as of this epoch: the rows, the weights and the child's state, by value."""
        state = None
        # Weights, momentum and an average are about 3x the weights: a state far larger is not read.
        cap = min(TRAIN_OUTPUTS["state.safetensors"], 3 * len(weights) + (1 << 20))
        try:
            state = read_output(self.out, f"state_{epoch:03d}.safetensors", cap) if self.store else None
        except (OSError, UnsafeOutput):
            pass  # this epoch cannot be resumed from; the rows and weights are kept all the same
        for name in (f"epoch_{epoch:03d}.safetensors", f"state_{epoch:03d}.safetensors"):
            (self.out / name).unlink(missing_ok=True)  # read: a long run does not fill the disk with them
        if self.store is None:
            return
        try:
            self.store.save(self.epochs, weights, state)
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

    def show_progress(self) -> None:
        try:
            p = json.loads(read_output(self.out, "progress.json", TRAIN_OUTPUTS["progress.json"]))
            p = p if isinstance(p, dict) else {}
        except (OSError, ValueError, UnsafeOutput):
            return
        done = len(self.epochs)
        per_epoch = (time.monotonic() - self.start) / max(1, done) if done else None
        eta = f", ETA {per_epoch * (self.hyp['epochs'] - done) / 60:.0f} min" if per_epoch else ""
        line = f"epoch {p.get('epoch')}/{self.hyp['epochs']}: {100 * p.get('seen', 0) / max(1, p.get('total', 1)):.0f}% loss {p.get('loss', 0):.3f} acc {100 * p.get('acc', 0):.1f}%{eta}"
        self.say("train", line)
        if not self.console.is_terminal:
            return
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
    def train(self, train: Split, snapshot: Path) -> None:
        """Run the planned schedule in the sandboxed child; resume it where an interrupted grading
        of the same submission and recipe left it (OUT/training_state)."""
        model = next(c for c in self.facts.probe["candidates"] if c.get("chosen"))
        spec_model = {
            "file": model.get("file") or self.disc.models[0].file,
            "class": model["class"],
            "args": model["args"],
            "kwargs": model["kwargs"],
        }
        transforms = transforms_spec(self.disc.transforms) if self.disc.transforms is not None else None
        cuda = self.device.type == "cuda"
        self.hyp["workers"] = min(8, max(1, (os.cpu_count() or 2) - 1)) if cuda else 1
        index = self.disc.submission or Submission.scan(snapshot)
        key = run_key(
            # The files, and of the rubric only what shapes the model: its limits and target may change.
            submission=index.content_hash({"course": self.opts.rubric["course"]}),
            model=spec_model,
            transforms=transforms,
            hyp=self.hyp,
            recipe=hashlib.sha256(Path(recipe.__file__).read_bytes()).hexdigest(),  # another recipe, another run
            device=self.device.type,
            data=_fingerprint(train.images, train.labels, self.test.labels),  # the data, wherever it lies
        )
        self.store = RunStore(self.opts.state_dir or self.opts.out_dir / STATE_FOLDER, key)
        self.kept.append(self.store)
        saved = self.store.load() if self.opts.resume else None
        self.schedules += 1
        if saved is None and self.opts.resume and self.schedules == 1 and self.store.others():
            self.console.print(
                f"[yellow]not resumed[/yellow]: {self.store.root} holds a run of another submission, rubric or recipe; training from epoch 1"
            )
        early_stop = bool(self.opts.rubric["training"]["early_stop"])
        if saved is not None and (
            saved.complete or (early_stop and any(r["test_acc"] >= self.target for r in saved.rows))
        ):
            # This schedule had ended (or reached the target, killed before it stopped): no training.
            self.restore(
                saved.rows, saved.weights, float(saved.extra.get("wall_s", saved.rows[-1].get("elapsed", 0.0)))
            )
            self.error, self.layers = saved.extra.get("error"), saved.extra.get("layers") or {}
            self.console.print(f"schedule of {self.hyp['epochs']} epochs: kept from an interrupted grading")
            for row in self.epochs:
                self.print_row(row)
            return
        data_dir = Path(tempfile.mkdtemp(prefix="train-data-", dir=self.work))  # the TRAIN split only
        np.save(data_dir / "train_images.npy", train.images)
        np.save(data_dir / "train_labels.npy", train.labels)
        self.out = Path(tempfile.mkdtemp(prefix="train-out-", dir=self.work))
        copy_root = fresh_copy(snapshot, self.work, self.disc, "train-copy-")  # nothing the probe wrote
        spec: dict[str, Any] = {
            "root": str(copy_root),
            "cwd": str(copy_root / self.disc.assignment_dir) if self.disc.assignment_dir else str(copy_root),
            "out": str(self.out),
            "model": spec_model,
            "transforms": transforms,
            "train_images": str(data_dir / "train_images.npy"),
            "train_labels": str(data_dir / "train_labels.npy"),
            "hyp": self.hyp,
            "device": str(self.device),
            "threads": max(1, (os.cpu_count() or 2)),
            "outputs_are_probabilities": self.probabilities,
            "sys_path": [p for p in self.disc.sys_path if p]
            + ([self.disc.assignment_dir] if self.disc.assignment_dir else []),
        }
        self.start = time.monotonic()
        watcher = _Watcher(self)
        if saved is not None and saved.state_file is not None:
            shutil.copyfile(saved.state_file, data_dir / "resume_state.safetensors")
            spec["resume"] = {"file": str(data_dir / "resume_state.safetensors"), "epoch": len(saved.rows)}
            self.restore(saved.rows, saved.weights, float(saved.rows[-1].get("elapsed", 0.0)))
            watcher.seen = len(saved.rows)
            self.console.print(
                f"[green]resuming[/green] after epoch {len(saved.rows)} of {self.hyp['epochs']}, kept in "
                f"{self.store.root} by an interrupted grading (--no-resume trains from epoch 1)"
            )
            for row in self.epochs:
                self.print_row(row)
        spec_path = self.out / "spec.json"
        spec_path.write_text(json.dumps(spec))
        limits = self.opts.rubric["limits"]
        child = run_sandboxed(
            child_command("train", spec_path),
            cwd=Path(spec["cwd"]),
            writable=[copy_root, self.out],
            readable=[data_dir],
            forbidden=sensitive_paths(self.opts),
            limits=Limits(
                wall_s=float(limits["train_seconds"]),
                cpu_s=10**7,
                memory_mb=int(limits["train_memory_mb"]),
            ),
            gpu=cuda,
            isolation=self.opts.isolation,
            poll=watcher,
        )
        if self.console.is_terminal:
            self.console.print(" " * 80, end="\r")
        if not child.stopped:
            watcher(final=True)  # epochs written just before the child ended
        if self.error is None:
            status = _read_json(self.out, "status.json")
            failure = child.failure()
            if status.get("error"):
                self.error = status["error"]
            elif failure and not self.epochs:
                self.error = failure
            elif failure:
                self.error = failure | {"message": failure["message"] + f" (after {len(self.epochs)} epochs)"}
        self.layers = child.layers
        # The schedule is over (a run killed at the wall-clock limit stays resumable, the limit raised).
        kind = (self.error or {}).get("type")
        if self.store is not None and kind == ErrorKind.RESUME_FAILED.value:
            self.store.discard()  # the next grading trains from epoch 1
        elif self.store is not None and self.epochs and kind != ErrorKind.TIMEOUT.value:
            extra = {"error": self.error, "layers": self.layers, "wall_s": round(time.monotonic() - self.start, 1)}
            try:
                self.store.save(self.epochs, self.last_weights, None, complete=True, extra=extra)
            except OSError:
                pass


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


def _read_json(folder: Path, name: str) -> dict:
    try:
        data = json.loads(read_output(folder, name, TRAIN_OUTPUTS[name]))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, UnsafeOutput):
        return {}


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def unsandboxed_refusal(facts: Any, opts: Any) -> str | None:
    """Why accuracy must not be decided here: no filesystem layer hid the test split from the code."""
    from grader.sandbox import choose_layer

    probe_layer = (facts.sandbox or {}).get("isolation")
    train_layer = choose_layer(opts.isolation) if not opts.weights else probe_layer
    if "plain" not in (probe_layer, train_layer) or opts.accept_unsandboxed:
        return None
    return (
        "not decided: no filesystem sandbox (bubblewrap or Landlock) works on this machine, so the submission's "
        "code could have read the test split; pass --accept-unsandboxed to decide it anyway"
    )


def run_training(facts: Any, disc: Any, submission: Path, work: Path, opts: Any, say: Any) -> dict | None:
    """Train (or evaluate ``opts.weights``) and return the training facts; None when it cannot run."""
    if facts.graph is None:
        facts.training_skipped = "not run: the model could not be analysed, so there is nothing to train"
        return None
    refusal = unsandboxed_refusal(facts, opts)
    if refusal:
        facts.training_skipped = refusal
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
        result["source"] = CHECKPOINT
        try:
            evaluated = job.evaluate_weights(load_checkpoint(Path(opts.weights)))
        except GraphError as exc:
            result["error"] = Failure(ErrorKind(exc.kind), str(exc)).to_dict()
            return result
        result.update(best_test_acc=round(evaluated.acc, 2), test_loss=round(evaluated.loss, 4), epochs_run=0)
        result["misclassified_png"] = misclassified_png(test.images, test.labels, evaluated.predictions, test.classes)
        return result
    result["source"] = REPRODUCED
    try:
        train = load_split("train", opts.data, opts.data_dir)
    except DataUnavailable as exc:
        facts.training_skipped = f"not run: {exc}"
        return None
    facts.mean, facts.std = train.mean_std()
    job.hyp, notes = resolve_hyp(opts.rubric["training"], disc.pinned.get("training"), opts.epochs)
    result["notes"] = notes
    if job.device.type == "cpu":
        minutes = len(train) / 50000 * 2.5
        job.console.print(
            f"[yellow]training on the CPU[/yellow]: about {minutes:.1f} minutes per epoch for a 200k-parameter model on 2 cores; up to {job.hyp['epochs']} epochs"
        )
    say("train", f"{len(train)} training images, up to {job.hyp['epochs']} epochs on {job.device}")
    job.train(train, submission)
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
        job.train(train, submission)
        attempts.append(job.attempt(why))
    result["attempts"] = attempts
    result["compute_s"] = round(sum(a["wall_s"] for a in attempts), 1)
    result["hyp"] = job.hyp
    result["sandbox"] = job.layers | {"summary": describe_layers(job.layers)}
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
