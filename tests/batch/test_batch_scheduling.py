"""GPU-aware placement and the probe-then-train flow, with a fake grader (no GPU or torch needed)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from grader.batch import engines
from grader.batch.class_session import Batch, BatchOptions
from grader.batch.engines import EngineError, LocalEngine, parse_gpus
from grader.batch.inputs import Entry
from grader.batch.store import Store
from grader.batch.unit_process import Unit, UnitOutput
from grader.rubric import load_rubric


def test_local_engine_places_trainings_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = threading.Lock()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    seen = []

    def fake_run(unit: Unit, scratch: Path | None = None) -> UnitOutput:
        slot = unit.gpu or "cpu"
        with lock:
            running[slot] += 1
            peak[slot] = max(peak[slot], running[slot])
            seen.append((unit.student, unit.train, unit.gpu))
        time.sleep(0.05)
        with lock:
            running[slot] -= 1
        return UnitOutput({}, 0, 0.05, "")

    monkeypatch.setattr(engines, "run_unit", fake_run)
    engine = LocalEngine(jobs=1, gpus=["0", "1"], per_gpu=2)
    assert engine.gpu_slots == 4 and engine.concurrency() == 5
    units = [Unit(f"t{i}", Path("."), train=True) for i in range(12)] + [Unit(f"p{i}", Path(".")) for i in range(4)]
    threads = [threading.Thread(target=engine.run, args=(u,)) for u in units]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak["0"] == 2 and peak["1"] == 2 and peak["cpu"] == 1  # K per GPU, --jobs on the CPUs
    assert {gpu for _, train, gpu in seen if train} == {"0", "1"}
    assert all(gpu is None for _, train, gpu in seen if not train)


def test_parse_gpus() -> None:
    assert parse_gpus(None) == [] and parse_gpus("none") == [] and parse_gpus("0, 2") == ["0", "2"]
    with pytest.raises(EngineError):
        parse_gpus("cuda:0")


def test_unit_command_and_environment() -> None:
    from grader.batch.unit_process import _env

    train = Unit("s", Path("/sub"), train=True, gpu="1", threads=2, hide=["/class"])
    assert train.command(Path("/o"))[-3:] == ["--train", "--device", "cuda"]
    env = _env(train)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "2" and env["S6_GRADER_HIDE"] == "/class"
    probe = Unit("s", Path("/sub"), state_dir=Path("/state"))
    assert "--no-train" in probe.command(Path("/o")) and _env(probe)["CUDA_VISIBLE_DEVICES"] == ""
    assert "--state-dir" not in probe.command(Path("/o"))  # nothing to keep without training
    kept = Unit("s", Path("/sub"), train=True, state_dir=Path("/state/s")).command(Path("/o"))
    assert kept[kept.index("--state-dir") + 1] == "/state/s"


class FakeEngine:
    """Answers probe and train units from a script, records what ran."""

    name = "fake"

    def __init__(self, gpu_slots: int, probe_error: str | None, train_error: dict | None):
        self.gpu_slots = gpu_slots
        self.probe_error, self.train_error = probe_error, train_error
        self.ran: list[bool] = []
        self.state_dirs: list[Path | None] = []

    def run(self, unit: Unit) -> UnitOutput:
        self.ran.append(unit.train)
        self.state_dirs.append(unit.state_dir)
        if unit.train and self.train_error:
            return UnitOutput({}, -9, 1.0, "killed", dict(self.train_error))
        checks = [
            {
                "id": "accuracy",
                "status": "passed" if unit.train else "skipped",
                "points": 100.0 if unit.train else 0.0,
                "max_points": 100,
                "required": True,
                "extra": False,
                "title": "acc",
                "message": "",
            }
        ]
        error = {"type": self.probe_error, "message": "bad"} if self.probe_error and not unit.train else None
        results = {
            "score": checks[0]["points"],
            "max_score": 700,
            "bonus": 0,
            "checks": checks,
            "error": error,
            "facts": {},
            "submission": {},
        }
        return UnitOutput({"results.json": json.dumps(results).encode()}, 0, 1.0, "ok")

    def concurrency(self) -> int:
        return 1

    def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("gpu_slots", "probe_error", "train_error", "ran", "accuracy", "error_type"),
    [
        (0, None, None, [True], "passed", ""),  # no GPU: one training run on a CPU slot
        (1, None, None, [False, True], "passed", ""),  # GPU: probe on a CPU first, then train
        (1, "syntax_error", None, [False], "skipped", "syntax_error"),  # broken: never takes the GPU
        (1, None, {"type": "timeout", "message": "too slow"}, [False, True], "error", "timeout"),
    ],
)
def test_probe_then_train(
    tmp_path: Path,
    gpu_slots: int,
    probe_error: str | None,
    train_error: dict | None,
    ran: list[bool],
    accuracy: str,
    error_type: str,
) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "model.py").write_text("x = 1\n")
    engine = FakeEngine(gpu_slots, probe_error, train_error)
    store = Store(tmp_path / "out")
    batch = Batch(BatchOptions(out=store.root, train=True), load_rubric(), store, engine)
    store.root.mkdir()
    outcome = batch.grade_student(Entry("ann", "folder", str(sub)))
    assert engine.ran == ran
    # Only the training gets a folder for its state, one of the student's own that survives a crash.
    assert [d for d, train in zip(engine.state_dirs, ran, strict=True) if train] == [
        store.root / ".training_state" / "ann"
    ] * sum(ran)
    kept = store.training_state("ann")
    kept.mkdir(parents=True)
    store.recover()  # what a batch run does first after a crash: the kept training survives it
    assert kept.is_dir()
    results = store.results("ann")
    assert next(c for c in results["checks"] if c["id"] == "accuracy")["status"] == accuracy
    assert (results["error"] or {}).get("type", "") == error_type == outcome.error_type
    assert (store.root / "ann" / "report.html").is_file() and store.marker("ann")["mode"] == "train"


@pytest.mark.parametrize("launch", ["exec", "fork"])
def test_a_grader_that_writes_no_results_is_a_typed_crash(tmp_path: Path, launch: str) -> None:
    """Both ways of starting a grading: its exit status and output come back, with a typed error."""
    from grader.batch.unit_process import run_unit

    output = run_unit(Unit("ann", tmp_path / "missing", timeout_s=120, launch=launch), tmp_path)
    assert output.returncode == 2 and output.files == {}
    assert output.error["type"] == "crash" and "does not exist" in output.log
    assert f"started by {launch}" in output.log
    assert list(tmp_path.iterdir()) == []  # its scratch folder is gone
