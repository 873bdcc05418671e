"""The probe: runs INSIDE the sandbox, next to the student's code. ``grader.child.main`` with ``probe SPEC``.

Untrusted side (runs inside the sandbox next to the student's code).

It builds the train transforms from their slice, runs the submission's own entry point up to its
first optimizer step (``grader/child/capture.py``: which model reaches the optimizer, with which
arguments, and which pipeline reaches the training images), builds that model (or discovery's
candidates when the capture settled nothing), exports its aten graph and measures CoarseDropout, then
writes only inert files into the spec's ``out`` folder:

- ``probe.json``: what happened at each step (typed errors included), candidates, transform description,
  what the capture run found (``capture``)
- ``graph.json`` + ``graph_train.json`` + ``weights.safetensors``: the graph exported in eval mode (what is
  analysed and evaluated) and in train mode (what the trusted side trains), and the tensors they read
- ``augmented.npy``: a grid of augmented probe images; ``summary.txt``: the torchinfo summary

Every step catches its own failure and records it as a typed failure (``grader/failures.py``:
``{"type", "message", "where"}``), so the trusted side always gets a readable result, even from a
submission that crashes at import.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from grader.boundary import write_output
from grader.child.capture import run_capture
from grader.failures import ErrorKind, Failure

CUDA_MARKERS = (
    "Torch not compiled with CUDA",
    "NVIDIA driver",
    "No CUDA GPUs",
    "CUDA driver",
    "cuda:0",
    "CUDA error",
    "is_available() is False",
)


STAGE_ERRORS = {
    "building the model": ErrorKind.MODEL_BUILD_FAILED,
    "importing the model": ErrorKind.IMPORT_FAILED,
    "building the transforms": ErrorKind.TRANSFORMS_BUILD_FAILED,
    "exporting the graph": ErrorKind.EXPORT_FAILED,
    "training": ErrorKind.TRAINING_FAILED,
}


def typed_error(exc: BaseException, root: Path, stage: str) -> dict:
    """{'type', 'message', 'where'} for an exception raised by student code."""
    text = f"{type(exc).__name__}: {exc}".strip()
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{_rel(exc.filename, root)}:{exc.lineno}"
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(str(root))]
        if frames:
            where = f"{_rel(frames[-1].filename, root)}:{frames[-1].lineno}"
    if isinstance(exc, SyntaxError):
        kind = ErrorKind.SYNTAX_ERROR
    elif isinstance(exc, (ImportError, ModuleNotFoundError)):
        kind = ErrorKind.IMPORT_ERROR
    elif isinstance(exc, SystemExit):
        kind = ErrorKind.EXIT_CALLED
        text = f"the code called exit({exc.code!r}) while {stage}"
    elif isinstance(exc, MemoryError):
        kind = ErrorKind.OUT_OF_MEMORY
    elif any(m in text for m in CUDA_MARKERS) or (
        isinstance(exc, (RuntimeError, AssertionError)) and "cuda" in text.lower()
    ):
        kind = ErrorKind.CUDA_REQUIRED
    else:
        kind = STAGE_ERRORS.get(stage, ErrorKind.CRASH)
    return Failure(kind, text[:1000], where=where, stage=stage).to_dict()


def _rel(path: str, root: Path) -> str:
    return path[len(str(root)) :].lstrip("/") if path.startswith(str(root)) else os.path.basename(path)


def module_name_candidates(file: Path, root: Path) -> list[tuple[str, Path]]:
    """(module name, sys.path entry) to try for ``file``: most qualified first (packages, namespace
    packages, the repo imported by its own name), then the bare file name."""
    rel = file.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    out = []
    for i in range(len(parts)):
        names = parts[i:]
        if all(p.isidentifier() for p in names):
            out.append((".".join(names), root.joinpath(*parts[:i])))
    return out


def import_file(file: Path, root: Path) -> Any:
    last: BaseException | None = None
    for name, base in module_name_candidates(file, root):
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            # Only a failure to import *this* name means "try the next way"; others are real errors.
            if isinstance(exc, ModuleNotFoundError) and exc.name and name.startswith(exc.name):
                last = exc
                for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                    sys.modules.pop(key, None)
                continue
            if "relative import" in str(exc):
                last = exc
                continue
            raise
    raise last or ImportError(f"cannot import {file}")


def build_model(modules: dict[str, Any], spec: dict, root: Path, report: dict) -> Any:
    """Try the candidates (the spec's order: the top file's first); keep the first that maps
    (N, 3, 32, 32) to the class logits. A file other than the top one is imported when reached."""
    import torch

    shape = tuple(spec["input_shape"])
    chosen = None
    for cand in spec["candidates"]:
        file = cand.get("file", spec["file"])
        entry: dict[str, Any] = {
            "file": file,
            "class": cand["class"],
            "args": cand.get("args", []),
            "kwargs": cand.get("kwargs", {}),
            "assumed": cand.get("assumed", []),
        }
        report["candidates"].append(entry)
        try:
            if file not in modules:
                modules[file] = import_file(root / file, root)
        except BaseException as exc:
            entry["error"] = typed_error(exc, root, "importing the model")
            continue
        cls = getattr(modules[file], cand["class"], None)
        if cls is None:
            entry["error"] = Failure(ErrorKind.NOT_FOUND, f"{cand['class']} is not defined in {file}").to_dict()
            continue
        try:
            model = cls(*cand.get("args", []), **cand.get("kwargs", {}))
            model.eval()
            with torch.no_grad():
                out = model(torch.randn(2, *shape))
            out = out[0] if isinstance(out, (tuple, list)) else out
            entry["output_shape"] = list(out.shape)
            entry["ok"] = tuple(out.shape) == (2, spec["num_classes"])
            if not entry["ok"]:
                entry["error"] = Failure(
                    ErrorKind.WRONG_OUTPUT_SHAPE,
                    f"(2, 3, 32, 32) gives {tuple(out.shape)}, expected (2, {spec['num_classes']})",
                ).to_dict()
        except BaseException as exc:
            entry["error"] = typed_error(exc, root, "building the model")
            continue
        if entry["ok"]:
            chosen = (model, entry)
            break
    if chosen is None:
        return None
    chosen[1]["chosen"] = True
    return chosen[0]


def resolve_transforms(spec: dict, root: Path, modules: dict[str, Any]) -> tuple[Any, str]:
    """The train pipeline named by the spec, built from its slice (only what its A.Compose needs);
    from the whole file only when the slice does not build and the file is safe to import."""
    t = spec["transforms"]
    try:
        pipeline, site = _resolve_pipeline(t, root, modules)
    except Exception as first:
        if t.get("fallback_file"):
            with contextlib.suppress(Exception):
                return _resolve_pipeline(t | {"file": t["fallback_file"]}, root, modules)
        raise first  # the slice's error: it names the student's own line
    return pipeline, shown_name(site, t)


def shown_name(text: str, t: dict) -> str:
    """``text`` with the generated slice's file name replaced by the student's (same line numbers)."""
    if t.get("shown_as") and t["file"] != t["shown_as"]:
        return text.replace(t["file"], t["shown_as"])
    return text


def _resolve_pipeline(t: dict, root: Path, modules: dict[str, Any]) -> tuple[Any, str]:
    from grader.child import runtime

    module = modules.get(t["file"])
    if module is None:
        module = import_file(root / t["file"], root)
        modules[t["file"]] = module
    name = t.get("name")
    if name:
        obj: Any = module
        for part in name.split("."):
            obj = getattr(obj, part)
        if _is_pipeline(obj):
            return obj, f"{t['file']}:{name}"
        if isinstance(obj, type) or callable(obj):
            before = len(runtime.CREATED_COMPOSES)
            result = obj(*t.get("args", []), **t.get("kwargs", {}))
            if _is_pipeline(result):
                return result, f"{t['file']}:{name}()"
            inner = _pipeline_inside(result)
            if inner is not None:
                return inner, f"{t['file']}:{name}()"
            fresh = runtime.CREATED_COMPOSES[before:]
            if fresh:
                return fresh[0][0], fresh[0][1]
        raise LookupError(f"{t['file']}:{name} is not an albumentations pipeline ({type(obj).__name__})")
    for obj, site in runtime.CREATED_COMPOSES:
        if site.startswith(t["file"] + ":") and _looks_like_train(obj):
            return obj, site
    raise LookupError(f"no train pipeline found in {t['file']}")


def _is_pipeline(obj: Any) -> bool:
    return type(obj).__name__ in ("Compose", "Sequential", "OneOf") and hasattr(obj, "transforms")


def _pipeline_inside(obj: Any) -> Any:
    for value in getattr(obj, "__dict__", {}).values():
        if _is_pipeline(value):
            return value
    return None


def _looks_like_train(obj: Any) -> bool:
    from grader.augment_inspect import leaves

    names = {type(t).__name__ for t in leaves(obj)}
    return bool(names & {"HorizontalFlip", "ShiftScaleRotate", "CoarseDropout", "Affine"})


# What every probe needs before it reads a line of the submission: a warm child (grader/sandbox/launch.py's
# handoff) loads them while the trusted side is still reading the submission. torch.export brings
# torch._dynamo (a second of imports), which the student's torchvision would bring anyway.
PRELOAD = (
    "numpy",
    "torch",
    "torch.export",
    "albumentations",
    "albumentations.pytorch",
    "torchvision",
    "torchinfo",
    "safetensors.torch",
)


WARM: dict[str, float] = {}  # a warm child's seconds: "preload" (its imports), "waited" (for its spec)


def preload() -> None:
    """Import the libraries of ``PRELOAD`` (none of the submission's code): a warm child's first step."""
    start = time.perf_counter()
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    WARM["preload"] = time.perf_counter() - start


def setup_runtime(spec: dict, root: Path) -> None:
    """Load torch and albumentations, then make the submission importable (stubs, fake data)."""
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    model = spec.get("model") or {}
    sys.argv = [model.get("file", "model.py")]
    import numpy  # noqa: F401
    import torch

    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    with contextlib.suppress(Exception):
        import albumentations
        import albumentations.pytorch  # noqa: F401
    # Other libraries load only when the student's code imports them: the stub finder never stubs a
    # library's own optional imports, so nothing needs importing ahead.
    from grader.child import runtime

    runtime.fake_datasets()
    runtime.record_creation_sites(root)
    runtime.install_stub_finder(root)
    os.chdir(spec.get("cwd") or root)
    for extra in spec.get("sys_path", []):
        sys.path.insert(0, str(root / extra))


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"]).resolve()
    out = Path(spec["out"])
    report: dict[str, Any] = {"steps": {}, "candidates": [], "errors": [], "warnings": []}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def save() -> None:
        report["timings"] = {**{k: round(v, 4) for k, v in WARM.items()}, **timings}
        from grader.child import runtime

        report["stubbed_modules"] = sorted(set(runtime.STUBBED))
        report["datasets_faked"] = sorted(set(runtime.DATASETS_FAKED))
        write_output(out, "probe.json", json.dumps(report, default=repr))

    setup_runtime(spec, root)
    timings["libraries"] = time.perf_counter() - t0
    captured = io.StringIO()

    def save_partial(caught: list) -> None:
        """probe.json after each step: a child killed later still leaves what it found."""
        report["warnings"] = [
            {
                "category": w.category.__name__,
                "message": str(w.message)[:500],
                "where": f"{_rel(w.filename, root)}:{w.lineno}",
            }
            for w in caught[:50]
        ]
        report["captured_output"] = captured.getvalue()[-20000:]
        save()

    modules: dict[str, Any] = {}
    model = None
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        # ---- transforms first: a model that hangs or crashes at import must not cost them ----
        if spec.get("transforms"):
            t1 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                    pipeline, site = resolve_transforms(spec, root, modules)
                report["steps"]["transforms"] = "ok"
                report["transforms"] = describe_pipeline(pipeline, site, out)
            except BaseException as exc:
                report["steps"]["transforms"] = "failed"
                err = typed_error(exc, root, "building the transforms")
                err["where"] = shown_name(err["where"], spec["transforms"])
                err["message"] = shown_name(err["message"], spec["transforms"])
                report["errors"].append(err)
            timings["transforms"] = time.perf_counter() - t1
        save_partial(caught_warnings)
        # ---- capture: the student's own entry point, up to its first optimizer step ----------------
        state = None
        if (spec.get("capture") or {}).get("entries"):
            t1 = time.perf_counter()
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                report["capture"], state = run_capture(capture_spec(spec, t0), root)
            timings["capture"] = time.perf_counter() - t1
            if state is not None:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                    use_captured_pipeline(report, state, spec, out)
        save_partial(caught_warnings)
        # ---- model -------------------------------------------------------------------------------
        model_spec = spec.get("model") or {}
        if state is not None and spec.get("model") and not model_spec.get("pinned"):
            t1 = time.perf_counter()
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                model = build_captured(state, spec, root, report)
            if model is not None:
                report["steps"]["import"] = report["steps"]["build"] = "ok"
            timings["model_captured"] = time.perf_counter() - t1
        if spec.get("model") and model is None and not spec["model"].get("file"):
            report["errors"].append(
                Failure(
                    ErrorKind.MODEL_NOT_FOUND,
                    "no nn.Module subclass in the code, and the training code built no model that reached an optimizer",
                    stage="building the model",
                ).to_dict()
            )
        elif spec.get("model") and model is None:
            t1 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                    modules[spec["model"]["file"]] = import_file(root / spec["model"]["file"], root)
                    report["steps"]["import"] = "ok"
                    model = build_model(modules, spec["model"], root, report)
                if model is None:
                    report["steps"]["build"] = "failed"
                else:
                    report["steps"]["build"] = "ok"
            except BaseException as exc:
                err = typed_error(exc, root, "importing the model")
                report["steps"]["import"] = "failed"
                report["errors"].append(err)
            timings["model"] = time.perf_counter() - t1
    save_partial(caught_warnings)
    # ---- graph (outside catch_warnings: export's own warnings are not the student's) --------------
    if model is not None:
        t1 = time.perf_counter()
        try:
            export_graph(model, spec, root, out, report)
            report["steps"]["export"] = "ok"
        except BaseException as exc:
            report["steps"]["export"] = "failed"
            err = typed_error(exc, root, "exporting the graph")
            if err["type"] != ErrorKind.CUDA_REQUIRED:
                err["type"] = ErrorKind.EXPORT_FAILED.value
            report["errors"].append(err)
        timings["export"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        try:
            write_summary(model, spec, out)
        except Exception as exc:
            report["warnings"].append({"category": "summary", "message": f"torchinfo failed: {exc}"[:300], "where": ""})
        timings["summary"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    save()
    return 0


def capture_spec(spec: dict, t0: float) -> dict:
    """The spec with the capture's time cut to what the probe can spare: the static fallback and the
    export still need their share of the probe's own limit."""
    capture = dict(spec["capture"])
    limit = float(spec.get("probe_seconds") or 60)
    spare = limit - (time.perf_counter() - t0) - max(8.0, 0.3 * limit)
    capture["seconds"] = max(1.0, min(float(capture.get("seconds", 20)), spare))
    return spec | {"capture": capture}


def use_captured_pipeline(report: dict, state: Any, spec: dict, out: Path) -> None:
    """The pipeline the training images went through replaces discovery's when they differ (or when
    discovery's did not build); a pinned pipeline (--transforms, grade.toml) is kept."""
    from grader.child import capture

    cap = report["capture"]
    cap["pipelines_built"] = capture.built_pipelines(state)
    tv = capture.torchvision_applied(state)
    if tv:
        cap["torchvision_applied_at"] = tv
    found = capture.applied_pipeline(state)
    if found is None:
        return
    pipeline, how = found
    cap["pipeline"] = how
    t = spec.get("transforms") or {}
    if t.get("pinned"):
        how["ignored"] = "the pipeline is pinned"
        return
    import albumentations as A

    static = report.get("transforms")
    try:
        config = A.to_dict(pipeline)
    except Exception:
        config = None
    if static is not None and config is not None and static.get("to_dict") == config:
        how["agrees"] = True
        static["captured"] = how
        return
    if static is not None and not how.get("applied_at"):
        # Built by the run but never seen on a training image: no better than the code's own reading.
        how["ignored"] = "not seen applied to a training image: the pipeline read from the code is kept"
        return
    desc = describe_pipeline(pipeline, how.get("site") or how.get("applied_at") or "?", out)
    desc["captured"] = how
    static_error = next((e for e in report["errors"] if e.get("stage") == "building the transforms"), None)
    if static is not None:
        desc["static"] = {"site": static.get("site")}
    elif static_error is not None:
        desc["static"] = {"error": static_error}
        report["errors"].remove(static_error)
    report["transforms"] = desc
    report["steps"]["transforms"] = "ok"


def _structure(model: Any) -> list[tuple[str, tuple]]:
    return [(n, tuple(t.shape)) for n, t in [*model.named_parameters(), *model.named_buffers()]]


def build_captured(state: Any, spec: dict, root: Path, report: dict) -> Any:
    """The model the first optimizer got, built again from its class and the arguments it was built
    with (the instance itself when it was changed after it was built); None when the capture found none."""
    import torch

    from grader.augment_inspect import jsonable
    from grader.child import capture

    shape = tuple(spec["input_shape"])
    optimizer = state.optimizers[0] if state.optimizers else {}
    for instance in capture.trained_modules(state)[:3]:
        cls = type(instance)
        args, kwargs = instance.__dict__.get("_s6_args", ((), {}))
        built_at, entry_at = instance.__dict__.get("_s6_built_at", (None, None))
        entry: dict[str, Any] = {
            # A class of the submission's; else (nn.Sequential built inline) the file that built it.
            "file": capture.class_file(cls, str(root)) or (built_at or "").rpartition(":")[0] or cls.__module__,
            "class": cls.__name__,
            # Layers passed to a container (nn.Sequential(...)) are counted, not printed.
            "args": [f"{len(args)} layers"]
            if args and all(isinstance(a, torch.nn.Module) for a in args)
            else jsonable(list(args)),
            "kwargs": jsonable(dict(kwargs)),
            "assumed": [],
            "captured": True,
            "built_at": built_at,
            "entry_at": entry_at,
            "optimizer": optimizer.get("class"),
            "optimizer_at": optimizer.get("at"),
            "optimizer_entry_at": optimizer.get("entry_at"),
        }
        report["candidates"].append(entry)
        try:
            model = cls(*args, **kwargs)
            if _structure(model) != _structure(instance):
                entry["note"] = "changed after it was built: the instance the optimizer got is exported"
                model = instance
            model.eval()
            with torch.no_grad():
                out = model(torch.randn(2, *shape))
            out = out[0] if isinstance(out, (tuple, list)) else out
            entry["output_shape"] = list(out.shape)
            entry["ok"] = tuple(out.shape) == (2, spec["model"]["num_classes"])
        except BaseException as exc:
            entry["error"] = typed_error(exc, root, "building the model")
            return None  # the trained class does not build here: the same failure as any other build
        if entry["ok"]:
            entry["chosen"] = True
            report["capture"]["model"] = {k: entry[k] for k in entry if k not in ("assumed", "ok", "output_shape")}
            return model
        entry["error"] = Failure(
            ErrorKind.WRONG_OUTPUT_SHAPE,
            f"(2, 3, 32, 32) gives {tuple(out.shape)}, expected (2, {spec['model']['num_classes']})",
        ).to_dict()
    return None


def export_graph(model: Any, spec: dict, root: Path, out: Path, report: dict) -> None:
    """Both exports: eval mode (raises: nothing can be graded without it), then train mode (its
    failure is recorded in ``report["train_export_error"]``: only the accuracy needs it)."""
    from safetensors.torch import save

    from grader.child import runtime
    from grader.child.graph_export import export_model

    shape = tuple(spec["input_shape"])
    graph, tensors = export_model(model, shape, root, "eval")
    graph["module_sites"] = runtime.module_sites(model)
    graph["model_class"] = type(model).__name__
    write_output(out, "graph.json", json.dumps(graph))
    try:
        train_graph, train_tensors = export_model(model, shape, root, "train")
        train_graph["module_sites"] = graph["module_sites"]
        train_graph["model_class"] = graph["model_class"]
        tensors = train_tensors | tensors  # the same names hold the same tensors; constants may differ
        write_output(out, "graph_train.json", json.dumps(train_graph))
        report["steps"]["export_train"] = "ok"
    except BaseException as exc:
        report["steps"]["export_train"] = "failed"
        err = typed_error(exc, root, "exporting the graph")
        err["type"] = ErrorKind.EXPORT_FAILED.value
        report["train_export_error"] = err
    write_output(out, "weights.safetensors", save(tensors))


def write_summary(model: Any, spec: dict, out: Path) -> None:
    import torchinfo

    stats = torchinfo.summary(
        model,
        input_size=(1, *spec["input_shape"]),
        col_names=("kernel_size", "output_size", "num_params"),
        depth=4,
        verbose=0,
        device="cpu",
    )
    write_output(out, "summary.txt", str(stats))


def describe_pipeline(pipeline: Any, site: str, out: Path) -> dict:
    import albumentations as A
    import numpy as np

    from grader.augment_inspect import augmented_grid, describe, probe_coarse_dropout, showcase_image

    result: dict[str, Any] = {"site": site, "description": describe(pipeline), "version": A.__version__}
    try:
        result["to_dict"] = A.to_dict(pipeline)
    except Exception as exc:
        result["to_dict_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        result["coarse_dropout_probe"] = probe_coarse_dropout(pipeline)
    except Exception as exc:
        result["coarse_dropout_probe_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        buf = io.BytesIO()
        np.save(buf, augmented_grid(pipeline, showcase_image()))
        write_output(out, "augmented.npy", buf.getvalue())
    except Exception as exc:
        result["grid_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return result


def run_as_child(entry: Any) -> None:
    """The children's ``__main__``: exit with ``entry``'s status; a grader bug exits 3 with its traceback."""
    try:
        status = entry(sys.argv[1])
    except Exception:
        traceback.print_exc()
        status = 3
    # Every output file is closed by now: skip the interpreter's teardown of torch (tenths of a second).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
