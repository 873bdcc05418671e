"""Grade one submission: discover -> probe (sandboxed) -> analyze -> [train/evaluate] -> checks -> results.

Torch is imported only after the probe child has been started, so the parent's import overlaps the
child's work (the no-train path is dominated by importing torch twice).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import __version__
from grader.discover import Discovery, DiscoveryError, discover
from grader.rubric import max_score
from grader.sandbox import ChildResult, Limits, run_sandboxed

RESULTS_SCHEMA = "s6-grader/results/1"
COPY_SKIP_DIRS = {".git", ".venv", "venv", "env", "__pycache__", "node_modules", "wandb", "runs", "grade-out", ".ipynb_checkpoints"}  # fmt: skip
COPY_MAX_FILE = 20 * 1024 * 1024  # data and checkpoints stay behind: the probe needs code
COPY_MAX_TOTAL = 200 * 1024 * 1024
PROBE_JSON_MAX = 20 * 1024 * 1024


@dataclass
class GradeOptions:
    rubric: dict
    out_dir: Path
    train: bool = False
    model: str | None = None
    model_kwargs: dict | None = None
    transforms: str | None = None
    data: Path | None = None  # image-folder tree
    data_dir: Path | None = None  # torchvision cache
    weights: Path | None = None  # evaluate a submitted checkpoint
    epochs: int | None = None
    isolation: str = "auto"
    device: str | None = None
    extra_check_dirs: list[Path] = field(default_factory=list)
    progress: Any = None  # callable(stage: str, detail: str) for the terminal


def submission_hash(root: Path, rubric: dict, files: list[Path] | None = None) -> str:
    """Content hash of the submission's files (what the probe copies) and the rubric."""
    h = hashlib.sha256(json.dumps(rubric, sort_keys=True, default=str).encode())
    for path in sorted(files if files is not None else _copyable(root)):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _copyable(root: Path) -> list[Path]:
    out, total = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in COPY_SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            if size > COPY_MAX_FILE or total + size > COPY_MAX_TOTAL:
                continue
            total += size
            out.append(path)
    return out


def copy_submission(root: Path, dest: Path, files: list[Path] | None = None) -> None:
    """A working copy for the child: code and small files only, no links out of the tree."""
    for path in files if files is not None else _copyable(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def probe_spec(disc: Discovery, copy_root: Path, out: Path, rubric: dict) -> dict:
    course = rubric["course"]
    model = None
    if disc.models:
        first = disc.models[0]
        model = {
            "file": first.file,
            "candidates": [
                {"class": c.cls, "args": c.args, "kwargs": c.kwargs} for c in disc.models if c.file == first.file
            ],
            "input_shape": list(course["input_shape"]),
            "num_classes": int(course["num_classes"]),
        }
    transforms = None
    if disc.transforms is not None:
        t = disc.transforms
        transforms = {"file": t.file, "name": t.name, "kind": t.kind, "args": t.args, "kwargs": t.kwargs}
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


def run_probe(
    disc: Discovery, root: Path, work: Path, rubric: dict, isolation: str, files: list[Path] | None = None
) -> tuple[dict | None, ChildResult]:
    copy_root = work / "submission"
    out = work / "probe"
    copy_root.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    copy_submission(root, copy_root, files)
    for rel, source in disc.generated.items():
        (copy_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy_root / rel).write_text(source)
    spec = probe_spec(disc, copy_root, out, rubric)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))
    limits = rubric.get("limits", {})
    result = run_sandboxed(
        [sys.executable, "-m", "grader.probe.child", str(spec_path)],
        cwd=Path(spec["cwd"]),
        writable=[copy_root, out],
        hidden=[p for p in _sensitive_paths(root)],
        limits=Limits(
            wall_s=float(limits.get("probe_seconds", 180)),
            cpu_s=int(limits.get("probe_seconds", 180)) * 2,
            memory_mb=int(limits.get("probe_memory_mb", 6144)),
        ),
        isolation=isolation,
    )
    probe_file = out / "probe.json"
    report = None
    if probe_file.is_file() and probe_file.stat().st_size <= PROBE_JSON_MAX:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            report = json.loads(probe_file.read_text())
            if not isinstance(report, dict):
                report = None
    return report, result


def _sensitive_paths(root: Path) -> list[Path]:
    """What a child must never read: the data caches and the folder of other submissions."""
    from grader.training.data import default_data_dir

    paths = [default_data_dir()]
    env = os.environ.get("S6_GRADER_HIDE")
    if env:
        paths += [Path(p) for p in env.split(os.pathsep) if p]
    return paths


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
        try:
            disc = discover(submission, opts.model, opts.model_kwargs, opts.transforms)
        except DiscoveryError as exc:
            results["error"] = {"type": "discovery_failed", "message": str(exc)}
            return results
        files = _copyable(submission)  # one walk of the tree serves the hash and the probe's copy
        results["submission"]["hash"] = submission_hash(submission, rubric, files)
        results["facts"]["discovery"] = disc.to_dict()
        say("probe", "importing and tracing the model in the sandbox")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(run_probe, disc, submission, work, rubric, opts.isolation, files)
            # Meanwhile: this process's own heavy imports (torch, albumentations, pytest, jinja2) run
            # in parallel with the child's work.
            import albumentations  # noqa: F401

            import grader.report.html  # noqa: F401  (used by the CLI right after)
            from grader.analyze import analyze_submission, collect_evidence, reanalyze_augmentations
            from grader.checks_runner import run_checks

            probe, child = future.result()
        results["timings"]["probe_s"] = round(child.wall_s, 2)
        say("analyze", "rebuilding the graph and deciding the rules")
        facts = analyze_submission(submission, disc, probe, child, work, rubric)
        results["output"] = ((probe or {}).get("captured_output") or "")[-20000:] + child.stdout[-4000:]
        if opts.train or opts.weights:
            say("train", "training job")
            from grader.training.job import run_training

            facts.training = run_training(facts, disc, submission, work, opts, say)
            reanalyze_augmentations(facts)  # the fill is judged against the real data's mean
        else:
            facts.training_skipped = "not run: grading without training (--no-train); pass --train to train the model"
        facts.evidence = collect_evidence(facts, disc, rubric)
        for nb in facts.evidence.get("notebooks", []):
            if nb.get("out_of_order"):
                facts.warnings.append(f"{nb['path']}: {nb.get('order_note', 'cells ran out of order')}; its outputs may not come from the code as it reads")  # fmt: skip
        checks = run_checks(facts, rubric, opts.extra_check_dirs)
        results["checks"] = [c.to_dict() for c in checks]
        results["score"] = round(sum(c.points for c in checks if not c.extra), 2)
        results["bonus"] = round(sum(c.points for c in checks if c.extra), 2)
        results["facts"].update(_facts_json(facts))
        results["warnings"] = facts.warnings
        if facts.failure is not None:
            results["error"] = {k: facts.failure.get(k, "") for k in ("type", "message", "where")}
        _keep_artifacts(work, opts.out_dir)
        results["facts"]["artifacts"] = str(opts.out_dir)
    except Exception as exc:  # the grader's own failure: still a result, typed
        results["error"] = {"type": "grader_error", "message": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}  # fmt: skip
    finally:
        results["timings"]["total_s"] = round(time.monotonic() - started, 2)
        shutil.rmtree(work, ignore_errors=True)
    return results


def _keep_artifacts(work: Path, out_dir: Path) -> None:
    """Copy the probe's inert outputs next to the report (graph, initial weights, summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("graph.json", "weights.safetensors", "summary.txt", "probe.json"):
        src = work / "probe" / name
        if src.is_file():
            shutil.copyfile(src, out_dir / name)


def _facts_json(facts: Any) -> dict:
    out: dict[str, Any] = {}
    probe = facts.probe or {}
    model = next((c for c in probe.get("candidates", []) if c.get("chosen")), None)
    out["model"] = {
        "file": (facts.discovery.models[0].file if facts.discovery and facts.discovery.models else None),
        "class": model["class"] if model else None,
        "candidates": probe.get("candidates", []),
    }
    if facts.params is not None:
        out["params"] = facts.params.params
        out["hidden_weights"] = facts.params.hidden
    if facts.rf is not None:
        out["receptive_field"] = facts.rf.rf
        out["rf_at"] = facts.rf.at_layer
        out["layers"] = [row.__dict__ for row in facts.rf.rows]
    if facts.measured_rf is not None:
        out["measured_receptive_field"] = facts.measured_rf.__dict__
    if facts.graph is not None:
        out["output_shape"] = list(facts.graph.output_shape)
        out["ops"] = sorted({n.aten for n in facts.graph.nodes if n.aten})
    out["summary"] = getattr(facts, "summary_text", "")
    out["transforms"] = (probe.get("transforms") or {}) | {"findings": facts.aug.to_dict() if facts.aug else None}
    out["augmented_grid"] = getattr(facts, "augmented_grid_png", None)
    out["sandbox"] = getattr(facts, "sandbox", {})
    out["stubbed_modules"] = probe.get("stubbed_modules", [])
    out["datasets_faked"] = probe.get("datasets_faked", [])
    out["probe_warnings"] = probe.get("warnings", [])
    out["evidence"] = facts.evidence
    out["training"] = facts.training
    out["dataset_mean"] = list(facts.mean)
    out["qa"] = _qa(facts)
    return out


def _qa(facts: Any) -> dict:
    """Material for the report's answers to the assignment's questions (model code, augmentation code)."""
    qa: dict[str, Any] = {}
    disc = facts.discovery
    if disc is not None and disc.models:
        chosen = next(
            (c["class"] for c in (facts.probe or {}).get("candidates", []) if c.get("chosen")), disc.models[0].cls
        )
        file = disc.models[0].file
        path = facts.submission / file
        text = (
            disc.generated.get(file)
            if file in disc.generated
            else (path.read_text(errors="replace") if path.is_file() else "")
        )
        qa["model_code"] = {"file": file, "cls": chosen, "text": (text or "")[:30_000]}
    if disc is not None:
        qa["augmentation_code"] = [{"file": c.file, "line": c.line, "text": c.text} for c in disc.aug_calls[:20]]
    return qa
