"""The probe child starts before the submission is read, and ends unused when there is nothing to probe."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import grader.cli as cli
import grader.pipeline as pipeline
from grader.discover import DiscoveryError
from grader.pipeline import GradeOptions, grade
from grader.rubric import load_rubric

REPO = Path(__file__).resolve().parent.parent
real_start = pipeline.start_probe
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


@pytest.mark.slow
def test_the_cli_starts_the_probe_before_its_own_checks(tmp_path, monkeypatch):
    """`grade` starts the child before its precheck (discovery of what can be graded at all) and hands
    that child to the grading: one probe, running while the precheck reads the submission."""
    real = cli._precheck
    seen = {}

    def precheck(*args, **kwargs):
        seen["probe_running"] = wait_for_warm_probe()
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "_precheck", precheck)
    started = []
    monkeypatch.setattr(pipeline, "start_probe", lambda opts: started.append(opts) or real_start(opts))
    code = cli.main([str(REPO / "reference_solution"), "--no-train", "--out", str(tmp_path / "out"), "-q"])
    assert seen["probe_running"] and len(started) == 1
    assert code == 0 and json.loads((tmp_path / "out" / "results.json").read_text())["score"] == 600


def test_a_submission_refused_by_the_precheck_ends_the_started_probe(tmp_path, capsys):
    """Nothing to grade: the one line and exit 2 at once, and the child started for it ends unused."""
    empty = tmp_path / "sub"
    empty.mkdir()
    (empty / "README.md").write_text("no code here\n")
    code = cli.main([str(empty), "--no-train", "--out", str(tmp_path / "out")])
    assert code == 2 and "no Python file" in capsys.readouterr().err
    deadline = time.monotonic() + 60
    while warm_probes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert warm_probes() == []
