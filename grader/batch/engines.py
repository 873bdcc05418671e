"""Where grading units run: a local pool of CPU and GPU slots, or a Ray cluster (see ray_engine).

Trusted side.

An engine runs one unit at a time per caller and blocks until it is done; the batch calls it from
as many threads as ``concurrency()`` says, so both kinds of slot stay busy: trainings hold GPU slots
(``per_gpu`` of them on each GPU) while probes of other submissions use the CPU slots meanwhile.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Protocol

from grader.batch import forkrun
from grader.batch.engine_error import EngineError
from grader.batch.unit_process import Unit, UnitOutput, run_unit, start_unit


class Engine(Protocol):
    name: str
    gpu_slots: int

    def run(self, unit: Unit) -> UnitOutput: ...

    def concurrency(self) -> int: ...

    def close(self) -> None: ...


class LocalEngine:
    """``jobs`` CPU slots, and ``per_gpu`` training slots on each GPU of ``gpus``.

    ``ahead``: up to that many more CPU gradings are started before a slot is free. Each is its own
    student's grading process, forked as always; it starts its sandboxed probe child, which loads torch
    while the slots are busy, and waits for its turn before it reads the submission. No process or
    child ever serves two students: what is started ahead is only the import, not a shared warm state.
    """

    name = "local"

    def __init__(self, jobs: int, gpus: list[str], per_gpu: int = 1, scratch: Path | None = None, ahead: int = 0):
        self.jobs = max(1, jobs)
        self.ahead = max(0, ahead)
        self._cpu = threading.BoundedSemaphore(self.jobs)
        self._started = threading.BoundedSemaphore(self.jobs + self.ahead)  # gradings alive on the CPUs
        self._gpus: queue.Queue[str] = queue.Queue()
        # Round-robin order (0, 1, 0, 1, ...): with fewer trainings than slots, they spread over GPUs first.
        for _ in range(max(1, per_gpu)):
            for gpu in gpus:
                self._gpus.put(gpu)
        self.gpu_slots = self._gpus.qsize()
        self.scratch = scratch

    def run(self, unit: Unit) -> UnitOutput:
        if unit.train and self.gpu_slots:
            gpu = self._gpus.get()
            try:
                unit.gpu = gpu
                return run_unit(unit, self.scratch)
            finally:
                self._gpus.put(gpu)
        unit.gpu = None
        if self.ahead and unit.launch == "fork" and forkrun.available():
            with self._started:
                started = start_unit(unit, self.scratch, ahead=True)
                with self._cpu:
                    return started.finish()
        with self._cpu:
            return run_unit(unit, self.scratch)

    def concurrency(self) -> int:
        return self.jobs + self.ahead + self.gpu_slots

    def close(self) -> None:
        return None


def parse_gpus(spec: str | None) -> list[str]:
    """``--gpus``: "0,1" (CUDA indices), "all" (every GPU nvidia-smi lists), "none"; None = none."""
    if spec is None or spec.strip().lower() in ("", "none", "no", "cpu"):
        return []
    if spec.strip().lower() == "all":
        return detect_gpus()
    gpus = [g.strip() for g in spec.split(",") if g.strip()]
    for gpu in gpus:
        if not (gpu.isdigit() or gpu.startswith(("GPU-", "MIG-"))):
            raise EngineError(f"--gpus takes CUDA indices or UUIDs (e.g. 0,1), not {gpu!r}")
    return gpus


def detect_gpus() -> list[str]:
    """CUDA indices from ``nvidia-smi`` (no torch import: the batch process stays light)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        r = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    found = [line.strip() for line in r.stdout.splitlines() if line.strip().isdigit()] if r.returncode == 0 else []
    if visible is not None:
        allowed = [v.strip() for v in visible.split(",") if v.strip()]
        return [g for g in found if g in allowed]
    return found


def make_engine(
    name: str,
    jobs: int,
    gpus: list[str],
    per_gpu: int,
    scratch: Path | None,
    address: str | None = None,
    ahead: int = 0,
) -> Engine:
    if name == "local":
        return LocalEngine(jobs, gpus, per_gpu, scratch, ahead)
    if name == "ray":
        from grader.batch.ray_engine import RayEngine

        return RayEngine(address=address, jobs=jobs, per_gpu=per_gpu, use_gpus=bool(gpus) or address is not None)
    raise EngineError(f"unknown engine {name!r} (local or ray)")
