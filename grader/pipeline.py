"""Grade one submission: discover -> probe (sandboxed) -> analyze -> [train/evaluate] -> checks -> results.

Trusted side.

Torch is imported only after the probe child has been started, so the parent's import overlaps the
child's work (the no-train path is dominated by importing torch twice).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import __version__
from grader.boundary import PROBE_OUTPUTS, UnsafeOutput, copy_output, read_output
from grader.discover import Discovery, DiscoveryError, discover
from grader.failures import ErrorKind, Failure
from grader.locations import relabel_results
from grader.report.graded import built_where
from grader.results import RESULTS_SCHEMA
from grader.rubric import max_score
from grader.sandbox import ChildResult, Limits, child_command, run_sandboxed
from grader.submission import Submission
from grader.workspace import fresh_copy, sensitive_paths, transforms_spec

HANDOFF_WAIT_S = 600.0  # the longest a warm probe child waits for its spec (reading a submission is seconds)
# The longest a batch's grading started ahead keeps its probe child waiting for the turn: past it, the
# child ends unused and a fresh one starts at the turn (the margin is for reading the submission).
TURN_WAIT_S = HANDOFF_WAIT_S - 120.0
MAX_PROBE_CANDIDATES = 24  # classes x assumed constructor arguments the probe may try
CAPTURE_SHARE = 0.45  # of the probe's time limit, at most, for running the student's entry point


@dataclass
class GradeOptions:
    rubric: dict
    out_dir: Path
    train: bool = False
    model: str | None = None
    model_kwargs: dict | None = None
    transforms: str | None = None
    transforms_kwargs: dict | None = None
    data: Path | None = None  # image-folder tree
    data_dir: Path | None = None  # torchvision cache
    weights: Path | None = None  # evaluate a submitted checkpoint
    epochs: int | None = None
    isolation: str = "auto"
    accept_unsandboxed: bool = False  # decide accuracy even where no filesystem sandbox works
    device: str | None = None
    resume: bool = True  # continue an interrupted training run kept in out_dir (training/resume.py)
    state_dir: Path | None = None  # where that run is kept (default out_dir/training_state)
    extra_check_dirs: list[Path] = field(default_factory=list)
    progress: Any = None  # callable(stage: str, detail: str) for the terminal


def probe_spec(disc: Discovery, copy_root: Path, out: Path, rubric: dict) -> dict:
    course = rubric["course"]
    model = None
    if disc.models:
        first = disc.models[0]
        model = {
            "file": first.file,
            # The top file's classes first, then the other files' (tried when none of the first builds).
            "candidates": [
                {"file": c.file, "class": c.cls, "args": c.args, "kwargs": c.kwargs, "assumed": c.assumed}
                for c in sorted(disc.models, key=lambda c: c.file != first.file)
            ][:MAX_PROBE_CANDIDATES],
            "input_shape": list(course["input_shape"]),
            "num_classes": int(course["num_classes"]),
            "pinned": "model" in disc.pinned,  # --model / grade.toml / --overrides: the capture does not replace it
        }
    elif disc.entries:  # no nn.Module subclass in the code: the model the training code builds, if any
        model = {
            "file": None,
            "candidates": [],
            "input_shape": list(course["input_shape"]),
            "num_classes": int(course["num_classes"]),
            "pinned": False,
        }
    transforms = None
    if disc.transforms is not None:
        t = disc.transforms
        transforms = transforms_spec(t) | {"pinned": "transforms" in disc.pinned}
    cwd = copy_root / disc.assignment_dir if disc.assignment_dir else copy_root
    probe_seconds = float(rubric["limits"]["probe_seconds"])
    capture = {
        # The student's own entry points, run up to the first optimizer step (grader/child/capture.py).
        "entries": [
            {"file": e.file, "shown_as": e.shown_as, "kind": e.kind, "cells": e.cells, "call_main": e.call_main}
            for e in disc.entries
        ],
        "seconds": round(CAPTURE_SHARE * probe_seconds, 1),
    }
    return {
        "root": str(copy_root),
        "cwd": str(cwd),
        "out": str(out),
        "model": model,
        "transforms": transforms,
        "input_shape": list(course["input_shape"]),
        "sys_path": [p for p in disc.sys_path if p] + ([disc.assignment_dir] if disc.assignment_dir else []),
        "threads": 1,
        "capture": capture if capture["entries"] else None,
        "probe_seconds": probe_seconds,
    }


class Handoff:
    """The one line a warm probe child waits for: its spec's path once the submission has been read, or
    None when there is nothing to probe. Given once; the child never waits past ``HANDOFF_WAIT_S``."""

    def __init__(self) -> None:
        self._given = threading.Event()
        self._line: str | None = None

    def give(self, line: str | None) -> None:
        if not self._given.is_set():
            self._line = line
            self._given.set()

    def __call__(self) -> str | None:
        self._given.wait(HANDOFF_WAIT_S)
        return self._line


def prepare_probe(disc: Discovery, snapshot: Path, slot: Path, opts: GradeOptions) -> Path:
    """The probe's working copy and output folder inside ``slot`` (the one folder its child may write),
    and its spec; returns the spec's path."""
    copy_root = fresh_copy(snapshot, slot, disc, "copy-")
    out = Path(tempfile.mkdtemp(prefix="out-", dir=slot))  # a name the working copy cannot guess
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(probe_spec(disc, copy_root, out, opts.rubric)))
    return spec_path


def run_probe(slot: Path, handoff: Handoff, opts: GradeOptions) -> tuple[dict | None, ChildResult, Path | None]:
    """The probe child, started at once: it loads its libraries, then waits for ``handoff`` (its spec,
    in ``slot``). Returns its report (None when unreadable), the run, and its output folder (None when
    it was not handed a spec)."""
    limits = opts.rubric["limits"]
    seconds = float(limits["probe_seconds"])
    result = run_sandboxed(
        child_command("probe", None),
        cwd=slot,
        writable=[slot],
        forbidden=sensitive_paths(opts),
        limits=Limits(wall_s=seconds, cpu_s=int(seconds) * 2, memory_mb=int(limits["probe_memory_mb"])),
        isolation=opts.isolation,
        handoff=handoff,
    )
    line = handoff()
    if line is None:
        return None, result, None
    out = Path(line).parent
    report = None
    try:
        report = json.loads(read_output(out, "probe.json", PROBE_OUTPUTS["probe.json"]))
    except UnsafeOutput as exc:
        result.notes.append(f"the probe's output {exc} (a file planted by the submission's code)")
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    if not isinstance(report, dict):
        report = None
    return report, result, out


@dataclass
class StartedProbe:
    """A probe child started before anything of the submission is read (``start_probe``): the
    grading's scratch folder, the child's slot in it, the handoff it waits for, the thread running it."""

    work: Path
    slot: Path
    handoff: Handoff
    pool: concurrent.futures.ThreadPoolExecutor
    future: concurrent.futures.Future

    def close(self, wait: bool = True) -> None:
        """Hand a child that got no spec its cue to end unused, and remove the scratch folder.
        ``wait=False``: do not wait for the child to finish its imports (a CLI that exits at once)."""
        self.handoff.give(None)
        self.pool.shutdown(wait=wait)
        shutil.rmtree(self.work, ignore_errors=True)


def start_probe(opts: GradeOptions) -> StartedProbe:
    """Start the probe child now: it loads torch while the caller still reads the submission (the
    import is the long pole of a grading without training). ``grade`` takes it, or starts its own."""
    work = Path(tempfile.mkdtemp(prefix="s6-grade-"))
    slot = Path(tempfile.mkdtemp(prefix="probe-", dir=work))
    handoff = Handoff()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    return StartedProbe(work, slot, handoff, pool, pool.submit(run_probe, slot, handoff, opts))


def grade(submission: Path, opts: GradeOptions, started_probe: StartedProbe | None = None) -> dict:
    """Grade ``submission``; always returns a results dict (``error`` says when it could not).

    ``started_probe``: a child from ``start_probe(opts)`` (the CLI starts it before its own checks); by
    default one is started here, as the first step."""
    started = time.monotonic()
    submission = submission.resolve()
    rubric = opts.rubric
    say = opts.progress or (lambda stage, detail="": None)
    results: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "grader_version": __version__,
        "submission": {"path": str(submission), "name": submission.name},
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rubric": rubric["course"].get("name", ""),
        "score": 0,
        "max_score": max_score(rubric),
        "bonus": 0,
        "checks": [],
        "facts": {},
        "warnings": [],
        "error": None,
        "output": "",
        "timings": {},
    }
    timings = results["timings"]  # seconds from the start of grade() (handoff_s) or of each stage
    started_probe = started_probe or start_probe(opts)
    work, slot, handoff, future = started_probe.work, started_probe.slot, started_probe.handoff, started_probe.future
    try:
        say("discover", str(submission))
        # One walk of the tree, each file read once: a snapshot by value (no links) that every later
        # stage reads through its index, so that a link in the submission cannot bring a file of
        # this machine into the report; the hash comes from the same reads.
        snapshot = work / "snapshot"
        index = Submission.scan(submission).copy_to(snapshot)
        results["submission"]["hash"] = index.content_hash(rubric)
        try:
            disc = discover(
                index,
                opts.model,
                opts.model_kwargs,
                opts.transforms,
                int(rubric["course"]["num_classes"]),
                opts.transforms_kwargs,  # --transforms-kwargs / an override's transforms_kwargs
            )
        except DiscoveryError as exc:
            results["error"] = Failure(ErrorKind.DISCOVERY_FAILED, str(exc)).to_dict()
            return results
        results["facts"]["discovery"] = disc.to_dict() | {"root": str(submission)}
        say("probe", "importing and tracing the model in the sandbox")
        handoff.give(str(prepare_probe(disc, snapshot, slot, opts)))
        timings["handoff_s"] = round(time.monotonic() - started, 2)  # the submission read, the copy made
        # Meanwhile: this process's own heavy imports (torch, albumentations, pytest, jinja2) run
        # in parallel with the child's work.
        import albumentations  # noqa: F401

        import grader.report.html  # noqa: F401  (used by the CLI right after)
        from grader.checks_runner import run_checks
        from grader.facts_from_probe import analyze_submission, collect_evidence, reanalyze_augmentations

        probe, child, probe_out = future.result()
        if probe_out is None:
            raise RuntimeError("the probe was not handed its spec")
        timings["probe_s"] = round(child.wall_s, 2)  # from the handoff
        say("analyze", "rebuilding the graph and deciding the rules")
        mark = time.monotonic()
        facts = analyze_submission(snapshot, disc, probe, child, probe_out, rubric)
        timings["analyze_s"] = round(time.monotonic() - mark, 2)
        results["output"] = ((probe or {}).get("captured_output") or "")[-20000:] + child.stdout[-4000:]
        if opts.train or opts.weights:
            say("train", "training job")
            from grader.training.job import run_training

            facts.training = run_training(facts, disc, snapshot, work, opts, say)
            reanalyze_augmentations(facts)  # the fill is judged against the real data's mean
        else:
            facts.training_skipped = "not run: grading without training (--no-train); pass --train to train the model"
        facts.evidence = collect_evidence(facts, disc)
        for nb in facts.evidence.get("notebooks", []):
            if nb.get("out_of_order"):
                facts.warnings.append(
                    f"{nb['path']}: {nb.get('order_note', 'cells ran out of order')}; its outputs may not come from the code as it reads"
                )
        mark = time.monotonic()
        checks = run_checks(facts, rubric, opts.extra_check_dirs)
        timings["checks_s"] = round(time.monotonic() - mark, 2)
        results["checks"] = [c.to_dict() for c in checks]
        results["score"] = round(sum(c.points for c in checks if not c.extra), 2)
        results["max_score"] = sum(c.max_points for c in checks if not c.extra)
        results["bonus"] = round(sum(c.points for c in checks if c.extra), 2)
        results["facts"].update(_facts_json(facts))
        results["warnings"] = facts.warnings
        if facts.failure is not None:
            results["error"] = {k: facts.failure.get(k, "") for k in ("type", "message", "where")}
        for key in ("checks", "warnings", "error", "output"):  # lines a student recognises
            results[key] = relabel_results(results[key], disc.locations)
        for key in ("model", "transforms", "discovery", "capture", "qa"):
            results["facts"][key] = relabel_results(results["facts"].get(key), disc.locations)
        _keep_artifacts(probe_out, opts.out_dir, facts.warnings)
        results["facts"]["artifacts"] = str(opts.out_dir)
    except Exception as exc:  # the grader's own failure: still a result, typed
        results["error"] = Failure(
            ErrorKind.GRADER_ERROR, f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-3000:]
        ).to_dict()
    finally:
        started_probe.close()  # a probe not handed its spec ends unused
        timings["total_s"] = round(time.monotonic() - started, 2)
    return results


def _keep_artifacts(probe_out: Path, out_dir: Path, warnings: list[str]) -> None:
    """Copy the probe's inert outputs next to the report (graph, initial weights, summary), by value."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("graph.json", "weights.safetensors", "summary.txt", "probe.json"):
        try:
            copy_output(probe_out, name, PROBE_OUTPUTS[name], out_dir / name)
        except FileNotFoundError:
            continue
        except (UnsafeOutput, OSError) as exc:
            warnings.append(f"the probe's output {exc}: not kept")


def _facts_json(facts: Any) -> dict:
    out: dict[str, Any] = {}
    probe = facts.probe or {}
    model = next((c for c in probe.get("candidates", []) if c.get("chosen")), None)
    out["model"] = {
        "file": (model or {}).get("file")
        or (facts.discovery.models[0].file if facts.discovery and facts.discovery.models else None),
        "assumed": (model or {}).get("assumed", []),
        "class": model["class"] if model else None,
        "candidates": probe.get("candidates", []),
    }
    out["capture"] = capture_facts(probe, facts.discovery, model)
    if (model or {}).get("captured") and out["capture"] and out["capture"].get("model"):
        out["model"]["captured"] = out["capture"]["model"]
    if facts.params is not None:
        out["params"] = facts.params.params
        out["hidden_weights"] = facts.params.hidden
    if facts.rf is not None:
        out["receptive_field"] = facts.rf.rf
        out["rf_unknown"] = facts.rf.unknown  # why the recurrence could not follow the graph (rf is None)
        out["rf_at"] = facts.rf.at_layer
        out["layers"] = [row.__dict__ for row in facts.rf.rows]
    if facts.measured_rf is not None:
        out["measured_receptive_field"] = facts.measured_rf.__dict__
    if facts.graph is not None:
        out["output_shape"] = list(facts.graph.output_shape)
        out["ops"] = sorted({n.aten for n in facts.graph.nodes if n.aten})
    # Lines a student recognises: a generated module's line becomes the notebook cell or file it came from.
    locations = facts.discovery.locations if facts.discovery is not None else {}
    out["batch_mixing"] = relabel_results(list(facts.batch_mixing), locations)
    out["watches_grader"] = relabel_results(list(facts.watches_grader), locations)
    out["training_refused"] = relabel_results(facts.training_refused, locations)
    out["summary"] = facts.summary_text
    out["transforms"] = (probe.get("transforms") or {}) | {"findings": facts.aug.to_dict() if facts.aug else None}
    out["augmented_grid"] = facts.augmented_grid_png
    out["sandbox"] = facts.sandbox
    out["stubbed_modules"] = probe.get("stubbed_modules", [])
    out["datasets_faked"] = probe.get("datasets_faked", [])
    out["probe_warnings"] = probe.get("warnings", [])
    out["evidence"] = facts.evidence
    out["training"] = facts.training
    out["dataset_mean"] = list(facts.mean)
    out["qa"] = _qa(facts)
    return out


def _text(value: Any, limit: int = 300) -> str | None:
    """A string of the probe's report as shown to a reader (the child's output: length-capped, never trusted)."""
    return value[:limit] if isinstance(value, str) and value else None


def capture_facts(probe: dict, disc: Discovery | None, chosen: dict | None) -> dict | None:
    """What the capture run (the student's entry point up to its first optimizer step) found, what the
    code alone pointed at, and where they differ: for the report. None when no entry point was run.

    Everything here is display: the probe's strings, length-capped; the model and the pipeline that are
    graded were rebuilt and measured like any other."""
    cap = probe.get("capture")
    if not isinstance(cap, dict) or disc is None:
        return None
    shown = {e.shown_as for e in disc.entries}
    stopped: dict = cap["stopped"] if isinstance(cap.get("stopped"), dict) else {}
    tried = []
    for t in cap.get("tried", [])[:5] if isinstance(cap.get("tried"), list) else []:
        if not isinstance(t, dict) or t.get("entry") not in shown:
            continue
        error: dict = t["error"] if isinstance(t.get("error"), dict) else {}
        tried.append(
            {
                "entry": t["entry"],
                "status": _text(t.get("status"), 40),
                "error": _text(error.get("message")),
                "where": _text(error.get("where"), 200),
                "cell_errors": len(t["cell_errors"]) if isinstance(t.get("cell_errors"), list) else 0,
            }
        )
    out: dict[str, Any] = {
        "entry": cap.get("entry") if cap.get("entry") in shown else None,
        "tried": tried,
        "stopped": _text(stopped.get("what"), 60),
        "stopped_at": _text(stopped.get("at"), 200),
        "stopped_entry_at": _text(stopped.get("entry_at"), 200),
        "seconds": cap.get("seconds") if isinstance(cap.get("seconds"), (int, float)) else None,
        "shims": [x[:200] for x in cap.get("shims", [])[:20] if isinstance(x, str)]
        if isinstance(cap.get("shims"), list)
        else [],
        "disagreements": [],
        # Every A.Compose the run built, by the student's line (the one applied is ``pipeline``).
        "pipelines_built": [
            site
            for b in (cap["pipelines_built"][:20] if isinstance(cap.get("pipelines_built"), list) else [])
            if isinstance(b, dict) and (site := _text(b.get("site"), 200))
        ],
    }
    if chosen and chosen.get("captured"):
        out["model"] = {
            "class": _text(chosen.get("class"), 120),
            "file": _text(chosen.get("file"), 200),
            "built_at": _text(chosen.get("built_at"), 200),
            "entry_at": _text(chosen.get("entry_at"), 200),
            "optimizer": _text(chosen.get("optimizer"), 60),
            "optimizer_at": _text(chosen.get("optimizer_at"), 200),
            "arguments": _arguments(chosen.get("args"), chosen.get("kwargs")),
        }
    pipeline: dict = cap["pipeline"] if isinstance(cap.get("pipeline"), dict) else {}
    if pipeline:
        out["pipeline"] = {
            "site": _text(pipeline.get("site"), 200),
            "applied_at": _text(pipeline.get("applied_at"), 200),
            "how": _text(pipeline.get("how"), 80),
            "agrees": bool(pipeline.get("agrees")),
            "ignored": _text(pipeline.get("ignored"), 80),
        }
    if _text(cap.get("torchvision_applied_at")):
        out["torchvision_applied_at"] = _text(cap.get("torchvision_applied_at"), 200)
    # What the code alone pointed at, and where the run says otherwise (the run wins, unless pinned).
    static_model = f"{disc.models[0].file}:{disc.models[0].cls}" if disc.models else None
    static_pipeline = None
    if disc.transforms is not None:
        t = disc.transforms
        static_pipeline = f"{t.file}:{t.name}" if t.name else f"{t.file}:{t.line}"
    out["static"] = {"model": static_model, "pipeline": static_pipeline}
    model = out.get("model")
    out["differs"] = {"model": False, "pipeline": False}
    if model and static_model and static_model != f"{model['file']}:{model['class']}":
        out["differs"]["model"] = True
        out["disagreements"].append(
            f"the training code trains {model['file']}:{model['class']}"
            + (f" (built at {built_where(model)})" if model.get("built_at") else "")
            + f"; the code alone pointed at {static_model}"
        )
    if pipeline and not out["pipeline"]["agrees"] and not out["pipeline"]["ignored"]:
        out["differs"]["pipeline"] = True
        where = out["pipeline"]["site"] or "?"
        applied = f", applied at {out['pipeline']['applied_at']}" if out["pipeline"]["applied_at"] else ""
        alone = f"the code alone gave {static_pipeline}" if static_pipeline else "the code alone found none"
        out["disagreements"].append(
            f"the training images go through the pipeline built at {where}{applied}; {alone}"
            + (" (built differently)" if static_pipeline else "")
        )
    return out


def _arguments(args: Any, kwargs: Any) -> str:
    """``(10, dropout=0.05)`` from the probe's JSON values (display only)."""
    parts = [json.dumps(a)[:60] if not isinstance(a, str) else a[:60] for a in (args if isinstance(args, list) else [])]
    if isinstance(kwargs, dict):
        parts += [f"{k}={json.dumps(v)[:60]}" for k, v in list(kwargs.items())[:12]]
    return "(" + ", ".join(parts)[:300] + ")"


def _class_source(text: str, name: str) -> str:
    """The class ``name`` out of a generated module (a notebook's cells), else the whole text."""
    import ast

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return text
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    return (ast.get_source_segment(text, node) or text) if node is not None else text


def _indexed_source(index: Submission, file: str) -> str:
    rel = index.normalize(file)
    try:
        return index.source(rel) if index.has(rel) else ""
    except OSError:
        return ""


def _qa(facts: Any) -> dict:
    """Material for the report's answers to the assignment's questions (model code, augmentation code)."""
    qa: dict[str, Any] = {}
    disc = facts.discovery
    if disc is not None and disc.models:
        picked = next((c for c in (facts.probe or {}).get("candidates", []) if c.get("chosen")), None)
        chosen = picked["class"] if picked else disc.models[0].cls
        # The probe's output is untrusted: the file it names is looked up in the index, never opened by
        # path, so "../../etc/passwd" names nothing.
        file = str((picked or {}).get("file") or disc.models[0].file)
        index = disc.submission or Submission.scan(facts.submission)
        text = _class_source(disc.generated[file], chosen) if file in disc.generated else _indexed_source(index, file)
        qa["model_code"] = {"file": file, "cls": chosen, "text": (text or "")[:30_000]}
    if disc is not None:
        # A notebook's calls are read twice (its cells, and the module of its definitions): each once,
        # located in its cell.
        entries, seen = [], set()
        for c in sorted(disc.aug_calls, key=lambda c: c.file not in disc.locations):
            if c.text in seen:
                continue
            seen.add(c.text)
            where = relabel_results(f"{c.file}:{c.line}", disc.locations) if c.file in disc.locations else None
            if where is None and c.file.endswith(".ipynb"):
                where = c.file  # a line of the cells joined means nothing to a reader
            entries.append({"file": c.file, "line": c.line, "where": where or f"{c.file}:{c.line}", "text": c.text})
        qa["augmentation_code"] = entries[:20]
    return qa
