"""Gradings started ahead of their turn (``--ahead``): they load their probe while the CPU slots are busy,
read nothing of their submission before their turn, and never make more than ``--jobs`` work at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from grader.batch import engines, forkrun
from grader.batch.engines import LocalEngine
from grader.batch.unit_process import Unit, UnitOutput, descendants, start_unit

pytestmark = pytest.mark.skipif(not forkrun.available(), reason="no fork server on this platform")


def test_the_engine_starts_ahead_but_lets_only_jobs_work(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = threading.Lock()
    alive = working = 0
    peak = {"alive": 0, "working": 0}
    order = []

    class FakeStarted:
        def __init__(self, unit: Unit) -> None:
            self.unit = unit

        def finish(self) -> UnitOutput:
            nonlocal alive, working
            with lock:
                working += 1
                peak["working"] = max(peak["working"], working)
                order.append(self.unit.student)
            time.sleep(0.05)
            with lock:
                working -= 1
                alive -= 1
            return UnitOutput({}, 0, 0.05, "")

    def fake_start(unit: Unit, scratch: Path | None = None, ahead: bool = False) -> FakeStarted:
        nonlocal alive
        assert ahead
        with lock:
            alive += 1
            peak["alive"] = max(peak["alive"], alive)
        return FakeStarted(unit)

    monkeypatch.setattr(engines, "start_unit", fake_start)
    engine = LocalEngine(jobs=2, gpus=[], ahead=1)
    assert engine.concurrency() == 3  # the batch keeps a thread for the one waiting its turn
    threads = [threading.Thread(target=engine.run, args=(Unit(f"s{i}", Path(".")),)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == {"alive": 3, "working": 2} and len(order) == 9


def test_a_grading_started_ahead_waits_for_its_turn(tmp_path: Path) -> None:
    """A real forked grading: its sandboxed probe child starts at once, the grading stays alive without
    reading its submission (here one it would refuse at once) until ``finish`` gives it its turn."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "README.md").write_text("no code here\n")
    unit = Unit("ann", sub, timeout_s=120, memory_mb=None)
    started = start_unit(unit, tmp_path, ahead=True)
    assert started.handle is not None
    deadline = time.monotonic() + 60
    while not descendants(started.handle.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert descendants(started.handle.pid), "no probe child was started ahead"
    time.sleep(1.0)
    assert not started.handle.wait(0)  # still alive: it waits for its turn
    assert "no Python file" not in started.log_path.read_text()
    output = started.finish()
    assert output.returncode == 2 and "no Python file" in output.log
    assert " s before its turn" in output.log.splitlines()[1]
    assert (output.results() or {})["error"]["type"] == "model_not_found"
    assert not started.tmp.exists()  # its folder cleared, as for any unit
