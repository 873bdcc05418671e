"""``--engine ray``: the same grading units as Ray tasks, on a cluster (``--address``) or a local instance.

Trusted side.

Workers need not share a filesystem with the driver: a unit travels as a zip of the submission's code
(the files the grader would copy anyway) and comes back as the grader's output files, which the driver
commits exactly as the local engine does. Trainings ask for ``1/per_gpu`` of a GPU (Ray's fractional
GPUs: several small trainings share one), everything else for one CPU. Every worker needs this package
installed (the same version as the driver): e.g. the same image, or ``pip install s6-grader[ray]``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

from grader.batch.engine_error import EngineError
from grader.batch.unit_process import Unit, UnitOutput, run_unit
from grader.failures import ErrorKind, Failure

_init_lock = threading.Lock()


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None, jobs: int, per_gpu: int = 1, use_gpus: bool = True):
        try:
            import ray
        except ImportError as exc:
            raise EngineError(
                f"--engine ray needs Ray, which is not installed here ({exc}): pip install 's6-grader[ray]'"
            ) from exc
        self._ray = ray
        self._started_here = not ray.is_initialized()
        try:
            with _init_lock:
                if self._started_here:
                    kwargs: dict[str, Any] = {
                        "include_dashboard": False,
                        "log_to_driver": False,
                        "configure_logging": False,
                    }
                    if address:
                        ray.init(address=address, **kwargs)
                    else:
                        ray.init(num_cpus=max(1, jobs), **kwargs)
        except Exception as exc:  # Ray raises many kinds (ConnectionError, RuntimeError, ...)
            raise EngineError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from exc
        resources = ray.cluster_resources()
        self.cpus = max(1, int(resources.get("CPU", 1)))
        self.gpus = float(resources.get("GPU", 0)) if use_gpus else 0.0
        self.per_gpu = max(1, per_gpu)
        self.gpu_slots = int(self.gpus * self.per_gpu)
        self._task = ray.remote(max_retries=0)(_grade_remote)

    def run(self, unit: Unit) -> UnitOutput:
        train_on_gpu = unit.train and self.gpu_slots > 0
        options: dict[str, Any] = {"num_cpus": 1}
        if train_on_gpu:
            options["num_gpus"] = 1.0 / self.per_gpu
        spec = dataclasses.replace(unit, source=Path(unit.source.name), gpu="inherit" if train_on_gpu else None)
        ref = self._task.options(**options).remote(spec, pack(unit.source))
        try:
            return self._ray.get(ref)
        except Exception as exc:  # the worker died (node lost, OOM-killed by Ray): this unit only
            return UnitOutput(
                {},
                None,
                0.0,
                f"ray task failed: {exc}",
                Failure(ErrorKind.CRASH, f"the Ray task failed: {type(exc).__name__}: {str(exc)[:300]}").to_dict(),
            )

    def concurrency(self) -> int:
        return self.cpus + self.gpu_slots

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def pack(source: Path) -> bytes:
    """The submission's code as a zip under one top folder named like the submission (for the report)."""
    from grader.submission import Submission

    buffer = io.BytesIO()
    index = Submission.scan(source)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for rel in index.files():
            try:
                archive.writestr(f"{source.name}/{rel}", index.read_bytes(rel))
            except OSError:
                continue  # swapped for a link since the walk: left out, as the snapshot does
    return buffer.getvalue()


def _grade_remote(spec: Unit, blob: bytes) -> UnitOutput:
    """On a Ray worker: unpack, grade in a subprocess like the local engine, clean up."""
    from grader.batch.unzip import safe_unzip

    work = Path(tempfile.mkdtemp(prefix="s6-batch-ray-"))
    try:
        archive = work / "submission.zip"
        archive.write_bytes(blob)
        unpacked, _ = safe_unzip(archive, work / "src", unwrap=False)
        root = unpacked / spec.source.name
        archive.unlink()
        root.mkdir(exist_ok=True)  # a submission with no code at all: an empty folder, graded as such
        unit = dataclasses.replace(spec, source=root, hide=[p for p in spec.hide if os.path.exists(p)])
        return run_unit(unit, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
