"""Grade a class: fetch each submission, skip what is already graded, grade the rest on the engine, commit.

Trusted side.

Per student (in a thread; the work itself runs in the engine's processes)::

    prepare   folder: as is; zip: safe unzip; git: shallow clone  -> typed unzip_failed / clone_failed
    key       content hash of the submission and the rubric (grader.submission.Submission.content_hash), the mode
              (train or not) and the grader version; equal to the committed done.json's -> skipped
    grade     one ``python -m grader`` process (with GPUs and --train: a CPU probe first, then the
              training on a GPU slot, so that broken submissions never wait for a GPU)
    commit    results.json, report.html, log.txt, artifacts, done.json -> DIR/<student>/ atomically

then the class outputs are rebuilt from the student folders.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from grader import __version__
from grader.batch.classout import ClassTable, write_class_outputs
from grader.batch.engines import Engine
from grader.batch.git import CloneError, clone, head_commit
from grader.batch.inputs import Entry
from grader.batch.overrides import grade_args as override_args
from grader.batch.progress import ClassProgress
from grader.batch.results import RETRY_ERRORS, error_results, now
from grader.batch.store import Store
from grader.batch.unit_process import Unit, UnitOutput
from grader.batch.unzip import UnzipError, safe_unzip
from grader.failures import ErrorKind, Failure
from grader.results import status_of
from grader.submission import Submission


@dataclass
class BatchOptions:
    out: Path
    train: bool = False
    force: bool = False
    timeout_s: float = 600.0
    train_timeout_s: float = 6 * 3600.0
    clone_timeout_s: float = 300.0
    memory_mb: int | None = 8192
    threads_per_job: int = 1
    grade_args: list[str] = field(default_factory=list)  # passed to every `grade` (rubric, isolation, data)
    hide: list[str] = field(default_factory=list)
    formats: set[str] = field(default_factory=set)
    max_edits: int = 2
    quiet: bool = False
    launch: str = "fork"
    overrides: dict[str, dict] = field(default_factory=dict)  # student -> model, transforms, folder...


@dataclass
class Outcome:
    student: str
    state: str  # graded | skipped
    status: str  # passed | failed | error
    score: float = 0.0
    error_type: str = ""
    wall_s: float = 0.0  # grading time (without the wait for a slot)


@dataclass
class Prepared:
    root: Path
    notes: list[str]
    commit: str | None = None


class PrepareError(Exception):
    """The submission could not be fetched or unpacked: a typed error and a key for resuming."""

    def __init__(self, kind: str, message: str, key: str | None):
        super().__init__(message)
        self.kind, self.message, self.key = kind, message, key


class Batch:
    """One run over the class (the caller holds the output folder's lock)."""

    def __init__(self, opts: BatchOptions, rubric: dict, store: Store, engine: Engine):
        self.opts = opts
        self.rubric = rubric
        self.store = store
        self.engine = engine
        self.mode = "train" if opts.train else "no-train"
        self.rubric_hash = hashlib.sha256(json.dumps(rubric, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self._log_lock = threading.Lock()

    def run(self, entries: list[Entry], todo: list[Entry]) -> tuple[list[Outcome], ClassTable]:
        """Grade ``todo`` (a subset of ``entries``), then rebuild the class outputs over all ``entries``."""
        self.log(f"batch of {len(todo)} submission(s) of {len(entries)}, engine {self.engine.name}, mode {self.mode}")
        progress = ClassProgress(len(todo), quiet=self.opts.quiet)
        outcomes: list[Outcome] = []
        workers = max(1, min(len(todo), self.engine.concurrency() + 1))  # +1: fetch the next while all slots grade
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="batch")
        try:
            futures = [pool.submit(self.grade_student, e, progress) for e in todo]
            for future in concurrent.futures.as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                detail = f"{outcome.score:g}" + (f", {outcome.error_type}" if outcome.error_type else "")
                if outcome.state == "graded":
                    detail += f", {outcome.wall_s:.0f} s"
                progress.finished(outcome.student, outcome.status if outcome.state == "graded" else "skipped", detail)
        except BaseException:
            # Ctrl-C: do not wait for the gradings in flight (they die with this process, and what is
            # committed is complete); the caller exits, and a re-run resumes.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            progress.close()
        pool.shutdown(wait=True)
        table = write_class_outputs(self.store, entries, self.rubric, self.opts.formats, self.opts.max_edits)
        graded = sum(o.state == "graded" for o in outcomes)
        self.log(f"done: {graded} graded, {len(outcomes) - graded} skipped")
        return outcomes, table

    def grade_student(self, entry: Entry, progress: ClassProgress | None = None) -> Outcome:
        """Prepare, key, grade and commit one student; a bug here still commits a typed result."""
        started = time.monotonic()
        try:
            return self._grade_student(entry, progress, started)
        except Exception as exc:  # the batch's own failure: this student gets batch_error, the class goes on
            message = f"{type(exc).__name__}: {exc}"
            self.log(f"{entry.student}: batch error {message}\n{traceback.format_exc()}")
            results = error_results(entry.student, Failure(ErrorKind.BATCH_ERROR, message).to_dict(), self.rubric, None)
            self._commit(entry, results, None, {}, traceback.format_exc(), key=None, started=started)
            return Outcome(entry.student, "graded", "error", 0.0, "batch_error", time.monotonic() - started)
        finally:
            self.store.clear_scratch(entry.student)

    def _grade_student(self, entry: Entry, progress: ClassProgress | None, started: float) -> Outcome:
        scratch = self.store.scratch(entry.student)
        try:
            prepared = self.prepare(entry, scratch)
        except PrepareError as exc:
            key = f"{exc.key}/{self.mode}/{__version__}" if exc.key else None
            if self._is_done(entry.student, key):
                return self._skipped(entry.student)
            if progress:
                progress.started()
            results = error_results(
                entry.student, Failure(ErrorKind(exc.kind), exc.message).to_dict(), self.rubric, exc.key
            )
            self._commit(entry, results, None, {}, f"{exc.kind}: {exc.message}\n", key, started, retry=key is None)
            return Outcome(entry.student, "graded", "error", 0.0, exc.kind, time.monotonic() - started)
        override = self.opts.overrides.get(entry.student, {})
        if override.get("folder"):
            folder = (prepared.root / str(override["folder"])).resolve()
            if not folder.is_dir() or not folder.is_relative_to(prepared.root.resolve()):
                error = Failure(
                    ErrorKind.BAD_OVERRIDE,
                    f"the override folder {override['folder']!r} is not a folder of the submission",
                ).to_dict()
                results = error_results(entry.student, error, self.rubric, None)
                self._commit(entry, results, None, {}, error["message"] + "\n", None, started, retry=True)
                return Outcome(entry.student, "graded", "error", 0.0, "bad_override", time.monotonic() - started)
            prepared = dataclasses.replace(prepared, root=folder)
        content_hash = Submission.scan(prepared.root).content_hash(
            self.rubric | ({"overrides": override} if override else {})
        )
        key = f"{content_hash}/{self.mode}/{__version__}"
        if self._is_done(entry.student, key):
            return self._skipped(entry.student)
        if progress:
            progress.started()
        output = self.grade(entry, prepared)
        graded = output.results()
        if output.error is not None or graded is None:
            error = output.error or Failure(ErrorKind.CRASH, "no results").to_dict()
            results = error_results(entry.student, error, self.rubric, content_hash, output.log)
            report = None
        else:
            results = graded
            report = output.files.get("report.html")
        retry = (results.get("error") or {}).get("type") in RETRY_ERRORS
        results.setdefault("submission", {})["hash"] = content_hash
        artifacts = {k: v for k, v in output.files.items() if k not in ("results.json", "report.html")}
        if report is not None:
            artifacts["report.html"] = report
        self._commit(entry, results, prepared, artifacts, output.log, key, started, retry=retry, grade_s=output.wall_s)
        error_type = (results.get("error") or {}).get("type", "")
        return Outcome(
            entry.student,
            "graded",
            status_of(results),
            float(results.get("score", 0) or 0),
            error_type,
            output.wall_s,
        )

    def prepare(self, entry: Entry, scratch: Path) -> Prepared:
        """The submission as a folder on this machine."""
        if entry.kind == "folder":
            return Prepared(Path(entry.source), [])
        if entry.kind == "zip":
            try:
                root, notes = safe_unzip(Path(entry.source), scratch / "src")
            except UnzipError as exc:
                raise PrepareError("unzip_failed", str(exc), self._file_key(Path(entry.source))) from exc
            return Prepared(root, notes)
        dest = scratch / entry.student
        try:
            clone(entry.source, dest, entry.commit, self.opts.clone_timeout_s)
        except CloneError as exc:
            raise PrepareError("clone_failed", str(exc), None) from exc
        return Prepared(dest, [], head_commit(dest))

    def grade(self, entry: Entry, prepared: Prepared) -> UnitOutput:
        """Grade on the engine; with GPU slots and --train, probe on a CPU first and train only what loads."""
        base = Unit(
            student=entry.student,
            source=prepared.root,
            train=False,
            timeout_s=self.opts.timeout_s,
            memory_mb=self.opts.memory_mb,
            threads=self.opts.threads_per_job,
            grade_args=list(self.opts.grade_args) + override_args(self.opts.overrides.get(entry.student, {})),
            hide=list(self.opts.hide),
            launch=self.opts.launch,
        )
        if not self.opts.train:
            return self.engine.run(base)
        # A batch killed mid-training (or a student's grading killed at --train-timeout, then --force)
        # resumes that training where it stopped: the grader keeps its state here until it has results.
        state_dir = self.store.training_state(entry.student)
        train = dataclasses.replace(base, train=True, timeout_s=self.opts.train_timeout_s, state_dir=state_dir)
        if not self.engine.gpu_slots:
            return self.engine.run(train)
        probe = self.engine.run(base)
        probed = probe.results()
        if probe.error is not None or probed is None or probed.get("error"):
            return probe  # broken before training: it would only hold a GPU to fail the same way
        trained = self.engine.run(train)
        trained.log = f"{probe.log}\n--- training ---\n{trained.log}"
        if trained.error is None and trained.results() is not None:
            return trained
        return _training_failed(probe, trained)

    def _is_done(self, student: str, key: str | None) -> bool:
        if key is None or self.opts.force:
            return False
        marker = self.store.marker(student)
        return bool(marker and marker.get("key") == key and not marker.get("retry"))

    def _skipped(self, student: str) -> Outcome:
        marker = self.store.marker(student) or {}
        return Outcome(
            student,
            "skipped",
            marker.get("status", ""),
            float(marker.get("score", 0) or 0),
            marker.get("error_type", ""),
        )

    def _commit(
        self,
        entry: Entry,
        results: dict,
        prepared: Prepared | None,
        artifacts: dict[str, bytes],
        log: str,
        key: str | None,
        started: float,
        retry: bool = False,
        grade_s: float = 0.0,
    ) -> None:
        wall = round(time.monotonic() - started, 2)  # with the waits for a slot and the fetch
        status = status_of(results)
        error = results.get("error") or {}
        results["batch"] = {
            "student": entry.student,
            "name": entry.original,
            "kind": entry.kind,
            "source": entry.describe(),
            "commit": prepared.commit if prepared else None,
            "key": key,
            "mode": self.mode,
            "rubric_hash": self.rubric_hash,
            "engine": self.engine.name,
            "duration_s": wall,
            "grade_s": round(grade_s, 2),  # the grading processes alone
            "notes": prepared.notes if prepared else [],
        }
        files = dict(artifacts)
        if "report.html" not in files:
            files["report.html"] = _render(results).encode()
        files["results.json"] = json.dumps(results, indent=1, default=str).encode()
        files["log.txt"] = log.encode(errors="replace")
        marker = {
            "key": key,
            "retry": retry,
            "student": entry.student,
            "source": entry.describe(),
            "mode": self.mode,
            "content_hash": (results.get("submission") or {}).get("hash"),
            "rubric_hash": self.rubric_hash,
            "grader_version": __version__,
            "graded_at": now(),
            "status": status,
            "score": results.get("score", 0),
            "error_type": error.get("type", ""),
            "duration_s": wall,
            "grade_s": round(grade_s, 2),
        }
        self.store.commit(entry.student, files, marker)
        self.log(f"{entry.student}: {status} {results.get('score', 0)} {error.get('type', '')} in {wall} s")

    def _file_key(self, path: Path) -> str | None:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
        return hashlib.sha256(f"{digest}/{self.rubric_hash}".encode()).hexdigest()[:16]

    def log(self, line: str) -> None:
        """DIR/batch.log: what happened, one line per event (appended; survives crashes)."""
        with self._log_lock, open(self.store.root / "batch.log", "a") as f:
            f.write(f"{now()} {line}\n")


def _training_failed(probe: UnitOutput, trained: UnitOutput) -> UnitOutput:
    """The probe's results, with the accuracy rule in error: everything else was graded."""
    results = probe.results() or {}
    error = trained.error or Failure(ErrorKind.CRASH, "the training run wrote no results").to_dict()
    results["error"] = Failure(ErrorKind(error["type"]), f"training: {error['message']}", where="train").to_dict()
    for check in results.get("checks", []):
        if check.get("id") == "accuracy":
            check.update(status="error", points=0.0, message=f"training did not finish: {error['message']}")
    files = dict(probe.files)
    files["results.json"] = json.dumps(results).encode()
    files.pop("report.html", None)  # re-rendered from the amended results
    return UnitOutput(files, trained.returncode, probe.wall_s + trained.wall_s, trained.log, None)


def _render(results: dict) -> str:
    from grader.report.html import render_report
    from grader.report.sections import extra_sections

    try:
        return render_report(results, *extra_sections(results))
    except Exception:  # a section that cannot render must not cost the student the report
        return render_report(results)
