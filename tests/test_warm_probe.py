"""The probe child starts before the submission is read, and ends unused when there is nothing to probe."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import grader.pipeline as pipeline
from grader.discover import DiscoveryError
from grader.pipeline import GradeOptions, grade
from grader.rubric import load_rubric

REPO = Path(__file__).resolve().parent.parent
WARM_ARGV = b"\x00probe\x00-"  # child_command("probe", None): the warm probe's command line


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _mine(pid: int) -> bool:
    """A descendant of this test process (other tests may grade at the same time)."""
    while pid > 1:
        pid = _parent(pid)
        if pid == os.getpid():
            return True
    return False


def warm_probes() -> list[int]:
    """This process's warm probe children, by their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().endswith(WARM_ARGV + b"\x00") and _mine(int(entry.name)):
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def wait_for_warm_probe(timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if warm_probes():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_the_probe_child_runs_while_the_submission_is_still_being_read(tmp_path, monkeypatch):
    real = pipeline.discover
    seen = {}

    def discover(*args, **kwargs):
        seen["probe_running"] = wait_for_warm_probe()
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "discover", discover)
    results = grade(REPO / "reference_solution", GradeOptions(rubric=load_rubric(), out_dir=tmp_path / "out"))
    assert seen["probe_running"]
    assert results["error"] is None
    assert results["score"] == 600


def test_a_probe_not_needed_ends_unused(tmp_path, monkeypatch):
    def discover(*args, **kwargs):
        assert wait_for_warm_probe()
        raise DiscoveryError("nothing to grade here")

    monkeypatch.setattr(pipeline, "discover", discover)
    results = grade(REPO / "reference_solution", GradeOptions(rubric=load_rubric(), out_dir=tmp_path / "out"))
    assert results["error"]["type"] == "discovery_failed"
    assert warm_probes() == []  # the child ended with the grading
