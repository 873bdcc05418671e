"""``--engine ray`` on a local Ray instance with 2 CPUs: the same result as the local engine."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from batch_helpers import GradedClass, run_batch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed: pip install 's6-grader[ray]'"
)
def test_ray_engine_matches_local(tmp_path: Path, graded_class: GradedClass) -> None:
    out = tmp_path / "out"
    proc = run_batch(graded_class.subs, "--out", out, "--engine", "ray", "--jobs", "2", "--no-train", "--only", "good")
    assert "1 graded now" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    results = json.loads((out / "good" / "results.json").read_text())
    assert results["batch"]["engine"] == "ray"
    assert (out / "good" / "graph.json").is_file() and (out / "good" / "report.html").is_file()
    local = json.loads((graded_class.out / "good" / "results.json").read_text())
    assert results["score"] == local["score"]
    assert [(c["id"], c["status"], c["points"]) for c in results["checks"]] == [
        (c["id"], c["status"], c["points"]) for c in local["checks"]
    ]
    with open(out / "grades.csv", newline="") as f:
        statuses = {r["student"]: r["status"] for r in csv.DictReader(f)}
    assert statuses["good"] == local_status(graded_class.out) and statuses["broken"] == "not_graded"


def local_status(out: Path) -> str:
    with open(out / "grades.csv", newline="") as f:
        return next(r["status"] for r in csv.DictReader(f) if r["student"] == "good")


def test_ray_missing_is_a_clear_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from grader.batch.engines import EngineError, make_engine

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(EngineError, match="pip install"):
        make_engine("ray", 2, [], 1, tmp_path)
