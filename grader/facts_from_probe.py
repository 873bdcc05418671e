"""Trusted side: turn the probe's inert outputs into Facts (graph, layers, RF, params, transforms)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from grader.analysis.augmentations import analyze as analyze_augmentations
from grader.analysis.batch import batch_mixing
from grader.analysis.layers import param_facts, spatial_layers
from grader.analysis.receptive_field import analytic_rf, measure_rf
from grader.analysis.source import read_sources
from grader.boundary import PROBE_OUTPUTS, UnsafeOutput, read_output
from grader.discover import Discovery
from grader.facts import Facts
from grader.failures import ErrorKind, Failure
from grader.graph import GraphError, LoadedGraph, load_graph
from grader.sandbox import ChildResult
from grader.sandbox.layers import describe as describe_layers
from grader.submission import Submission
from grader.training.source import from_checkpoint


def analyze_submission(
    submission: Path, disc: Discovery, probe: dict | None, child: ChildResult, out: Path, rubric: dict
) -> Facts:
    """Facts from the probe's outputs in ``out`` (each read by value, links refused)."""
    course = rubric["course"]
    facts = Facts(submission=submission, rubric=rubric, discovery=disc, probe=probe)
    facts.mean = tuple(course.get("dataset_mean", facts.mean))
    facts.std = tuple(course.get("dataset_std", facts.std))
    facts.sandbox = {
        "isolation": child.isolation,
        "wall_s": round(child.wall_s, 2),
        "returncode": child.returncode,
        "probe": child.layers,
        "summary": describe_layers(child.layers),
    }
    if child.isolation == "plain":
        facts.warnings.append(
            "no filesystem sandbox works here (neither bubblewrap nor Landlock): the submission ran in a plain subprocess with limits and could read this machine's files"
        )
    elif child.isolation == "landlock":
        facts.warnings.append(
            "the submission ran under Landlock alone, without bubblewrap's namespaces (filesystem allowlist, no network, "
            "no /dev/shm): it could see the names and sizes of files outside its view, though not read them"
        )
    facts.warnings += [note for note in child.notes if "planted" in note or "inside" in note]
    facts.sources = read_sources(disc.submission or submission, disc.py_files, disc.notebooks)
    facts.failure = _model_failure(disc, probe, child)
    if facts.failure is None:
        _load_graph(facts, out)
    if facts.graph is not None:
        facts.layers = spatial_layers(facts.graph)
        budget = int(rubric["rules"]["params"]["hidden_budget"])
        facts.params = param_facts(facts.graph, facts.train_graph, budget)
        facts.batch_mixing = batch_mixing(facts.graph)
        try:
            facts.rf = analytic_rf(facts.graph, facts.layers)
            square = not all(_symmetric(layer) for layer in facts.layers)
            facts.measured_rf = measure_rf(facts.graph, facts.rf.at, facts.rf.rf, facts.rf.jump, square)
        except ValueError as exc:
            facts.failure = Failure(ErrorKind.NO_FEATURE_MAP, str(exc), where="").to_dict()
    summary = _read(facts, out, "summary.txt")
    facts.summary_text = summary.decode(errors="replace")[:200_000] if summary else ""
    _transforms(facts, disc, probe, out)
    for stub in (probe or {}).get("stubbed_modules", []):
        facts.warnings.append(f"module {stub} is not installed here: the probe used a stand-in for it")
    if (probe or {}).get("datasets_faked"):
        facts.warnings.append(
            "the code builds a torchvision dataset at import time: the probe gave it 64 random images instead"
        )
    return facts


def _symmetric(layer: Any) -> bool:
    return all(a == b for a, b in (layer.kernel, layer.stride, layer.padding, layer.dilation))


def _model_failure(disc: Discovery, probe: dict | None, child: ChildResult) -> dict | None:
    """The typed reason the model cannot be analysed, or None when a graph should be there."""
    captured = any(c.get("chosen") and c.get("captured") for c in (probe or {}).get("candidates", []))
    if not disc.models and not captured:  # (a model built inline by the training code is captured)
        problem = disc.problems[0] if disc.problems else Failure(ErrorKind.MODEL_NOT_FOUND, "no model found").to_dict()
        return Failure(
            ErrorKind(problem["type"]),
            problem["message"] + ". Point at it with --model FILE:CLASS or grade.toml",
            where="",
        ).to_dict()
    if probe is None or ("build" not in probe.get("steps", {}) and "import" not in probe.get("steps", {})):
        failure = child.failure() or Failure(ErrorKind.CRASH, "the probe wrote no result").to_dict()
        failure.setdefault("where", "")
        if failure["type"] == "timeout":
            failure["message"] += (
                ": importing or building the model did not finish (training at import time? an endless loop?)"
            )
        return failure
    errors = [e for e in probe.get("errors", []) if e.get("stage") != "building the transforms"]
    if errors:  # the probe's own typed error, relayed as written (probe.json is untrusted: see _transforms)
        return {k: errors[0].get(k, "") for k in ("type", "message", "where")}
    if probe.get("steps", {}).get("build") == "failed":
        cands = probe.get("candidates", [])
        tried = "; ".join(f"{c['class']}: {c.get('error', {}).get('message', '?')}" for c in cands[:4])
        kinds = {c.get("error", {}).get("type") for c in cands}
        kind = (
            ErrorKind.CUDA_REQUIRED
            if ErrorKind.CUDA_REQUIRED in kinds
            else (
                ErrorKind.WRONG_OUTPUT_SHAPE if ErrorKind.WRONG_OUTPUT_SHAPE in kinds else ErrorKind.MODEL_BUILD_FAILED
            )
        )
        where = next((c["error"].get("where", "") for c in cands if c.get("error", {}).get("where")), "")
        return Failure(
            kind,
            f"no candidate model maps (N, 3, 32, 32) to 10 logits ({tried}). Pass --model FILE:CLASS and --model-kwargs if needed",
            where=where,
        ).to_dict()
    if probe.get("steps", {}).get("export") != "ok":
        return Failure(
            ErrorKind.EXPORT_FAILED, "the model was built but its graph was not exported", where=""
        ).to_dict()
    if child.timed_out:
        return child.failure()
    return None


def _read(facts: Facts, out: Path, name: str) -> bytes | None:
    """One of the probe's outputs by value; None when missing; a warning when it was refused."""
    try:
        return read_output(out, name, PROBE_OUTPUTS[name])
    except FileNotFoundError:
        return None
    except UnsafeOutput as exc:
        facts.warnings.append(f"the probe's output {exc}: ignored")
        return None
    except OSError:
        return None


def _load_graph(facts: Facts, out: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        graph_bytes = read_output(out, "graph.json", PROBE_OUTPUTS["graph.json"])
        weights_bytes = read_output(out, "weights.safetensors", PROBE_OUTPUTS["weights.safetensors"])
    except FileNotFoundError:
        facts.failure = Failure(ErrorKind.EXPORT_FAILED, "the probe wrote no graph", where="").to_dict()
        return
    except UnsafeOutput as exc:
        kind = ErrorKind.TOO_LARGE if "bytes" in exc.reason else ErrorKind.UNSAFE_OUTPUT
        facts.failure = Failure(kind, f"the probe's output {exc}", where=exc.name).to_dict()
        return
    try:
        graph = json.loads(graph_bytes)
        weights = load(weights_bytes)
        facts.graph = _rebuilt(graph, weights, "eval")
    except GraphError as exc:
        facts.failure = Failure(ErrorKind(exc.kind), str(exc), where="").to_dict()
        return
    except (ValueError, SafetensorError, OSError) as exc:
        facts.failure = Failure(ErrorKind.BAD_GRAPH, f"unreadable graph or weights: {exc}", where="").to_dict()
        return
    # The train-mode export: what the grader trains. Without it the model rules stand; accuracy cannot be trained.
    train_error = (facts.probe or {}).get("train_export_error")
    try:
        facts.train_graph = _rebuilt(
            json.loads(read_output(out, "graph_train.json", PROBE_OUTPUTS["graph_train.json"])), weights, "train"
        )
        same_parameters(facts.graph, facts.train_graph)
    except FileNotFoundError:
        message = (
            f"the model was not exported in train mode: {train_error.get('message', '')}"[:600]
            if isinstance(train_error, dict)
            else "the probe wrote no train-mode graph"
        )
        facts.train_graph_failure = Failure(ErrorKind.EXPORT_FAILED, message, where="").to_dict()
    except UnsafeOutput as exc:
        facts.train_graph_failure = Failure(ErrorKind.UNSAFE_OUTPUT, f"the probe's output {exc}", where="").to_dict()
    except GraphError as exc:
        facts.train_graph, kind = None, ErrorKind(exc.kind)
        facts.train_graph_failure = Failure(kind, f"the train-mode graph: {exc}", where="").to_dict()
    except (ValueError, OSError) as exc:
        facts.train_graph_failure = Failure(
            ErrorKind.BAD_GRAPH, f"unreadable train-mode graph: {exc}", where=""
        ).to_dict()


def _rebuilt(graph: Any, weights: dict, mode: str) -> LoadedGraph:
    """One of the probe's graphs rebuilt, its layers named by the lines that built them."""
    if not isinstance(graph, dict) or graph.get("mode", "eval") != mode:
        raise GraphError("bad_graph", f"the {mode}-mode graph file does not hold a {mode}-mode graph")
    loaded = load_graph(graph, weights)
    sites = graph.get("module_sites", {}) if isinstance(graph.get("module_sites"), dict) else {}
    loaded.model_class = str(graph.get("model_class", ""))
    # Name each layer by the line that built it (what a student edits), not the forward() call.
    for node in loaded.nodes:
        site = sites.get(node.module)
        if isinstance(site, str) and node.module:
            node.source = site[:200]
    return loaded


def same_parameters(eval_graph: LoadedGraph, train_graph: LoadedGraph) -> None:
    """The two exports of one model read the same parameters and buffers (names, shapes, dtypes): what is
    trained in one is what is evaluated in the other. GraphError('export_mismatch') otherwise."""

    def held(graph: LoadedGraph) -> dict[str, tuple]:
        return {i.target: (i.kind, i.shape, i.dtype) for i in graph.inputs if i.kind in ("parameter", "buffer")}

    a, b = held(eval_graph), held(train_graph)
    if a != b:
        differ = sorted(set(a) ^ set(b)) or sorted(k for k in a if a[k] != b[k])
        raise GraphError(
            "export_mismatch",
            f"the eval-mode and train-mode exports hold different tensors ({', '.join(differ[:3])}): "
            "what would be trained is not what is graded",
        )


def _transforms(facts: Facts, disc: Discovery, probe: dict | None, out: Path) -> None:
    if probe is None:
        facts.aug_failure = Failure(
            ErrorKind.PROBE_FAILED, (facts.failure or {}).get("message", "the probe did not run")
        ).to_dict()
        return
    transforms = probe.get("transforms")
    if transforms is None:
        err = next((e for e in probe.get("errors", []) if e.get("stage") == "building the transforms"), None)
        t = disc.transforms
        if err and t is not None:  # the probe builds transforms only when discovery found some
            # The probe's own kind, relayed as it wrote it: probe.json is the child's (untrusted) output,
            # and a kind forged there must not stop the grading (ErrorKind() would raise on it).
            facts.aug_failure = {"type": err["type"], "message": undecided_pipeline(err, t, probe)}
        elif disc.torchvision_pipeline or _text((probe.get("capture") or {}).get("torchvision_applied_at")):
            where = _text((probe.get("capture") or {}).get("torchvision_applied_at")) or disc.torchvision_pipeline
            facts.aug_failure = Failure(
                ErrorKind.NOT_ALBUMENTATIONS,
                f"the train pipeline at {where} is torchvision's transforms.Compose, not albumentations: the assignment asks for A.HorizontalFlip, A.ShiftScaleRotate and A.CoarseDropout",
            ).to_dict()
        elif disc.transforms is None:
            facts.aug_failure = Failure(
                ErrorKind.NOT_FOUND,
                "no albumentations train pipeline (A.Compose with HorizontalFlip/ShiftScaleRotate/CoarseDropout) was found"
                + (f" ({capture_note(probe)})" if capture_note(probe) else "")
                + "; point at it with --transforms FILE:NAME",
            ).to_dict()
        return
    texts = student_texts(disc.submission or Submission.scan(facts.submission), disc)
    calls = [c.__dict__ for c in disc.aug_calls]
    trusted, why = trusted_description(transforms, calls, facts.sources)
    if trusted is None:
        facts.aug_failure = Failure(
            ErrorKind.TRANSFORMS_BUILD_FAILED,
            f"the train pipeline could not be rebuilt on the grader's side ({why}), and a description written "
            "by the submission's own process is not believed: the augmentations are not decided. Build the "
            "pipeline from albumentations' own transforms (A.Compose([...]))",
        ).to_dict()
        return
    trusted_probe = None
    pipeline = trusted.pop("pipeline")
    try:
        import warnings

        from grader.augment_inspect import probe_coarse_dropout

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trusted_probe = probe_coarse_dropout(pipeline) if pipeline is not None else None
    except Exception as exc:
        facts.warnings.append(f"the rebuilt pipeline could not be probed ({type(exc).__name__})")
    facts.aug_inputs = (trusted, trusted_probe, texts, calls)
    reanalyze_augmentations(facts)
    grid_bytes = _read(facts, out, "augmented.npy")
    if grid_bytes:
        try:
            grid = np.load(io.BytesIO(grid_bytes), allow_pickle=False)
            facts.augmented_grid_png = grid_png(grid)
        except (ValueError, OSError):
            pass


def _text(value: Any, limit: int = 240) -> str:
    """A string of the probe's report, length-capped ('' for anything else): display only."""
    return value[:limit] if isinstance(value, str) else ""


def capture_note(probe: dict) -> str:
    """Why the run of the student's entry point did not settle the pipeline, in a few words ('' when
    no entry point was run)."""
    cap: dict = probe["capture"] if isinstance(probe.get("capture"), dict) else {}
    tried = [t for t in cap.get("tried", []) if isinstance(t, dict)] if isinstance(cap.get("tried"), list) else []
    if not tried:
        return ""
    first = tried[0]
    entry, status = _text(first.get("entry"), 120), _text(first.get("status"), 20)
    if isinstance(cap.get("pipeline"), dict) and "pinned" in _text(cap["pipeline"].get("ignored")):
        return f"the pin is used, not the pipeline {entry} applies"
    error: dict = first["error"] if isinstance(first.get("error"), dict) else {}
    if status in ("error", "exit"):
        where = f" at {_text(error.get('where'), 120)}" if _text(error.get("where")) else ""
        return f"the training code could not run here: {entry} stopped{where}, {_text(error.get('message'), 160)}"
    if status == "timeout":
        return f"the training code reached no training step in time ({entry})"
    if status == "stopped":
        return f"{entry} trains without an albumentations pipeline on its images"
    return f"{entry} ran without reaching a training step"


MISSING = [
    (re.compile(r"NameError: name '(\w+)' is not defined"), "{0}"),
    (re.compile(r"KeyError: '?([^']+)'?"), "the key {0!r}"),
    (re.compile(r"missing \d+ required (?:positional|keyword-only) arguments?: ('.*)"), "{0}"),
]


def _wanted(err: dict, t: Any) -> str:
    """The value the pipeline's code wanted and the grader could not give, as a person names it."""
    message = _text(err.get("message"), 400)
    for pattern, text in MISSING:
        match = pattern.search(message)
        if match:
            return text.format(match.group(1).replace("'", ""))
    guessed = [a.split(" ", 2)[1] for a in t.assumed if a.startswith("assumed ")]
    names = [g.split("=", 1)[0] for g in guessed]
    if "NoneType" in message:
        none = [g.split("=", 1)[0] for g in guessed if g.endswith("=None")] or names
        what = "values the code computes" if len(none) > 1 else "a value the code computes"
        return " and ".join(none) + f" ({what} when it runs)" if none else ""
    if names:
        return (
            " or ".join(names) + " as the code computes it (the grader's guesses " + ", ".join(guessed) + " do not fit)"
        )
    return ""


def undecided_pipeline(err: dict, t: Any, probe: dict) -> str:
    """One line: where the pipeline is, the value its code wanted, why the run did not give it, the pin."""
    where = _text(err.get("where"), 200) or (f"{t.file}:{t.line}" if t.line else f"{t.file}:{t.name or ''}")
    wanted = _wanted(err, t)
    names = list(t.kwargs) if isinstance(t.kwargs, dict) else []
    names += [n for n in re.findall(r"\w+", wanted.split(" (")[0]) if n not in names and n not in ("and", "the", "key")]
    template = "{" + ", ".join(f'"{k}": ...' for k in names) + "}" if names else "{...}"
    pin = f"--transforms {t.file}:{t.name or 'NAME'}" + (
        f" --transforms-kwargs '{template}'" if t.kind in ("function", "class", "pinned") else ""
    )
    note = capture_note(probe)
    text = (
        f"the train pipeline at {where} could not be built: it needs {wanted}"
        if wanted
        else (f"the train pipeline at {where} could not be built")
    )
    text += f" ({_text(err.get('message'), 200)})"
    if note:
        text += f"; {note}"
    return " ".join(f"{text}. Pin it with {pin} (or `transforms` and `transforms_kwargs` in grade.toml)".split())


def _own_classes(config: Any) -> list[dict]:
    """The leaves of a serialised pipeline, when some are not albumentations' (``module.Class`` names);
    [] when every leaf is albumentations' own or the config is not a pipeline."""
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY

    transform = config.get("transform") if isinstance(config, dict) else None
    leaves: list[dict] = []

    def walk(t: Any) -> None:
        if isinstance(t, dict) and isinstance(t.get("transforms"), list):
            for child in t["transforms"]:
                walk(child)
        elif isinstance(t, dict) and isinstance(t.get("__class_fullname__"), str):
            full = t["__class_fullname__"]
            module, _, name = full.rpartition(".")
            p = t.get("p") if isinstance(t.get("p"), (int, float)) else None
            leaves.append(
                {
                    "class": name or full,
                    "module": module or "albumentations",
                    "p": p,
                    "attrs": {},
                    "own": full not in SERIALIZABLE_REGISTRY,
                }
            )

    walk(transform)
    return leaves if any(leaf["own"] for leaf in leaves) else []


def trusted_description(transforms: dict, calls: list[dict], sources: Any) -> tuple[dict | None, str]:
    """The pipeline as the grader rebuilt it from plain data, described here (with the spelling the
    student's source shows), or (None, why) when it cannot be rebuilt.

    The child's own description is read for one thing only, how CoarseDropout was spelled, and only
    where the submission's source has a CoarseDropout call written with exactly those names."""
    import albumentations as A

    from grader.augment_inspect import COARSE_DROPOUT_V1, describe
    from grader.training.pipelines import PipelineRefused, rebuild

    config = transforms.get("to_dict")
    try:
        pipeline = rebuild(config)
    except PipelineRefused as exc:
        own = _own_classes(config)
        if own:  # the submission's own classes: enough to fail the rule, never to pass it
            site = transforms.get("site")
            return {"site": site if isinstance(site, str) else None, "version": A.__version__, "trusted": False,
                    "description": {"class": "Compose", "transforms": own}, "to_dict": config, "pipeline": None}, ""  # fmt: skip
        why = transforms.get("to_dict_error") or str(exc)
        return None, str(why)[:300]
    desc = describe(pipeline)
    from grader.augment_inspect import flatten

    child_leaves = (
        flatten(transforms.get("description") or {}) if isinstance(transforms.get("description"), dict) else []
    )
    written = [set(c.get("kwargs") or {}) for c in calls if c.get("name") == "CoarseDropout"]
    for index, leaf in enumerate(flatten(desc)):
        if leaf["class"] != "CoarseDropout":
            continue
        theirs = child_leaves[index] if index < len(child_leaves) else {}
        passed = theirs.get("passed_kwargs") if theirs.get("class") == "CoarseDropout" else None
        if isinstance(passed, dict) and set(passed) in written:
            leaf["passed_kwargs"] = passed
        else:
            literal = next((c for c in calls if c.get("name") == "CoarseDropout"), None)
            if literal is not None:
                leaf["passed_kwargs"] = {
                    k: v for k, v in literal["kwargs"].items() if not (isinstance(v, dict) and "expr" in v)
                }
        if not A.__version__.startswith("1."):
            leaf["invalid_args"] = [k for k in leaf.get("passed_kwargs", {}) if k in COARSE_DROPOUT_V1]
    # A transform the source never names was not written by the student (a forged serialisation).
    code = "\n".join(text for _name, text in (sources.texts if sources is not None else []))
    for leaf in flatten(desc):
        if sources is not None and leaf["class"] not in code:
            return None, f"{leaf['class']} is in the serialised pipeline but nowhere in the submission's code"
    site = transforms.get("site")
    return {
        "site": site if isinstance(site, str) else None,
        "version": A.__version__,
        "description": desc,
        "to_dict": config,
        "pipeline": pipeline,
    }, ""


def reanalyze_augmentations(facts: Facts) -> None:
    """The augmentation facts from the stored inputs (again, once the real data's mean is known)."""
    inputs = facts.aug_inputs
    if inputs is None:
        return
    transforms, trusted_probe, texts, calls = inputs
    facts.aug = analyze_augmentations(transforms, trusted_probe, facts.mean, facts.std, texts, calls)


def student_texts(sub: Submission, disc: Discovery) -> list[tuple[str, str]]:
    """Texts of the student's own run: notebook outputs and log files (for warnings they saw)."""
    from grader.evidence.notebooks import NotebookError

    texts = []
    for rel in disc.notebooks:
        try:
            cells = sub.notebook(rel).code_cells
        except NotebookError:
            continue
        texts.append((rel, "\n".join(c.outputs_text for c in cells if c.outputs_text)))
    logs = [rel for rel in sub.files(".log") if "/" not in rel]
    logs += [rel for rel in sub.files(".txt") if rel.rsplit("/", 1)[-1].startswith("log")][:20]
    for rel in logs:
        try:
            texts.append((rel, sub.text(rel)[:2_000_000]))
        except OSError:
            continue
    return texts


def grid_png(grid: np.ndarray) -> str | None:
    """A row of augmented images as a base64 PNG (inlined in the report), upscaled for the eye."""
    from PIL import Image

    if grid.ndim != 4 or grid.shape[-1] not in (1, 3) or grid.shape[0] > 64:
        return None
    grid = np.clip(grid, 0, 255).astype(np.uint8)
    n, h, w, _ = grid.shape
    pad = 2
    canvas = np.full((h, n * (w + pad) - pad, 3), 255, dtype=np.uint8)
    for i in range(n):
        canvas[:, i * (w + pad) : i * (w + pad) + w] = grid[i] if grid.shape[-1] == 3 else grid[i].repeat(3, -1)
    image = Image.fromarray(canvas).resize((canvas.shape[1] * 4, h * 4), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def collect_evidence(facts: Facts, disc: Discovery) -> dict:
    """README, logs and notebooks, with the claims compared to what the grader measured."""
    from grader.evidence import collect

    measured: dict[str, Any] = {}
    if facts.params is not None:
        measured["params"] = facts.params.params
    if facts.rf is not None:
        measured["receptive_field"] = facts.rf.rf
    training = facts.training or {}
    if training.get("best_test_acc") is not None:
        measured["accuracy"] = training["best_test_acc"]
        measured["accuracy_source"] = "checkpoint" if from_checkpoint(training) else "grader"
    folder = facts.submission / disc.assignment_dir if disc.assignment_dir else None
    return collect(disc.submission or facts.submission, folder, measured=measured)
