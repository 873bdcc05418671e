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
from grader.results import RESULTS_SCHEMA
from grader.rubric import max_score
from grader.sandbox import ChildResult, Limits, child_command, run_sandboxed
from grader.submission import Submission
from grader.workspace import fresh_copy, sensitive_paths, transforms_spec

MAX_PROBE_CANDIDATES = 24  # classes x assumed constructor arguments the probe may try


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
        }
    transforms = None
    if disc.transforms is not None:
        t = disc.transforms
        transforms = transforms_spec(t)
    cwd = copy_root / disc.assignment_dir if disc.assignment_dir else copy_root
    return {
        "root": str(copy_root),
        "cwd": str(cwd),
        "out": str(out),
        "model": model,
        "transforms": transforms,
        "input_shape": list(course["input_shape"]),
        "sys_path": [p for p in disc.sys_path if p] + ([disc.assignment_dir] if disc.assignment_dir else []),
        "threads": 1,
    }


def run_probe(disc: Discovery, snapshot: Path, work: Path, opts: GradeOptions) -> tuple[dict | None, ChildResult, Path]:
    """The probe child on a fresh copy; returns its report (None when unreadable), the run, its outputs."""
    copy_root = fresh_copy(snapshot, work, disc, "copy-")
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))  # a name the working copy cannot guess
    spec = probe_spec(disc, copy_root, out, opts.rubric)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))
    limits = opts.rubric["limits"]
    seconds = float(limits["probe_seconds"])
    result = run_sandboxed(
        child_command("probe", spec_path),
        cwd=Path(spec["cwd"]),
        writable=[copy_root, out],
        forbidden=sensitive_paths(opts),
        limits=Limits(wall_s=seconds, cpu_s=int(seconds) * 2, memory_mb=int(limits["probe_memory_mb"])),
        isolation=opts.isolation,
    )
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


def grade(submission: Path, opts: GradeOptions) -> dict:
    """Grade ``submission``; always returns a results dict (``error`` says when it could not)."""
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
    work = Path(tempfile.mkdtemp(prefix="s6-grade-"))
    try:
        say("discover", str(submission))
        # One walk of the tree, each file read once: a snapshot by value (no links) that every later
        # stage reads through its index, so that a link in the submission cannot bring a file of
        # this machine into the report; the hash comes from the same reads.
        snapshot = work / "snapshot"
        index = Submission.scan(submission).copy_to(snapshot)
        results["submission"]["hash"] = index.content_hash(rubric)
        try:
            disc = discover(index, opts.model, opts.model_kwargs, opts.transforms, int(rubric["course"]["num_classes"]))
        except DiscoveryError as exc:
            results["error"] = Failure(ErrorKind.DISCOVERY_FAILED, str(exc)).to_dict()
            return results
        results["facts"]["discovery"] = disc.to_dict() | {"root": str(submission)}
        say("probe", "importing and tracing the model in the sandbox")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(run_probe, disc, snapshot, work, opts)
            # Meanwhile: this process's own heavy imports (torch, albumentations, pytest, jinja2) run
            # in parallel with the child's work.
            import albumentations  # noqa: F401

            import grader.report.html  # noqa: F401  (used by the CLI right after)
            from grader.checks_runner import run_checks
            from grader.facts_from_probe import analyze_submission, collect_evidence, reanalyze_augmentations

            probe, child, probe_out = future.result()
        results["timings"]["probe_s"] = round(child.wall_s, 2)
        say("analyze", "rebuilding the graph and deciding the rules")
        facts = analyze_submission(snapshot, disc, probe, child, probe_out, rubric)
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
        checks = run_checks(facts, rubric, opts.extra_check_dirs)
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
        for key in ("model", "transforms", "discovery"):
            results["facts"][key] = relabel_results(results["facts"].get(key), disc.locations)
        _keep_artifacts(probe_out, opts.out_dir, facts.warnings)
        results["facts"]["artifacts"] = str(opts.out_dir)
    except Exception as exc:  # the grader's own failure: still a result, typed
        results["error"] = Failure(
            ErrorKind.GRADER_ERROR, f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-3000:]
        ).to_dict()
    finally:
        results["timings"]["total_s"] = round(time.monotonic() - started, 2)
        shutil.rmtree(work, ignore_errors=True)
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
        text = disc.generated.get(file) if file in disc.generated else _indexed_source(index, file)
        qa["model_code"] = {"file": file, "cls": chosen, "text": (text or "")[:30_000]}
    if disc is not None:
        qa["augmentation_code"] = [{"file": c.file, "line": c.line, "text": c.text} for c in disc.aug_calls[:20]]
    return qa
