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


def seen_while_called(monkeypatch, module, name: str) -> dict:
    """Wrap ``module.name``: each call first records, as ``seen["probe_running"]``, whether this
    process's warm probe child is running, then calls the real function."""
    real = getattr(module, name)
    seen: dict = {}

    def spy(*args, **kwargs):
        seen["probe_running"] = wait_for_warm_probe()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


@pytest.mark.slow
def test_the_probe_child_runs_while_the_submission_is_still_being_read(tmp_path, monkeypatch):
    seen = seen_while_called(monkeypatch, pipeline, "discover")
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
    seen = seen_while_called(monkeypatch, cli, "_precheck")
    started = []
    monkeypatch.setattr(pipeline, "start_probe", lambda opts: started.append(opts) or real_start(opts))
    code = cli.main([str(REPO / "reference_solution"), "--no-train", "--out", str(tmp_path / "out"), "-q"])
    assert seen["probe_running"] and len(started) == 1
    assert code == 0 and json.loads((tmp_path / "out" / "results.json").read_text())["score"] == 600


def _refused_submission(tmp_path: Path) -> Path:
    empty = tmp_path / "sub"
    empty.mkdir()
    (empty / "README.md").write_text("no code here\n")
    return empty


def test_a_submission_refused_by_the_precheck_ends_the_started_probe(tmp_path, capsys):
    """Nothing to grade: the one line and exit 2 at once, and the child started for it ends unused."""
    code = cli.main([str(_refused_submission(tmp_path)), "--no-train", "--out", str(tmp_path / "out")])
    assert code == 2 and "no Python file" in capsys.readouterr().err
    deadline = time.monotonic() + 60
    while warm_probes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert warm_probes() == []


def test_a_grading_started_ahead_reads_nothing_before_its_turn(tmp_path, monkeypatch, capsys):
    """A batch's grading started ahead (``wait_turn``): its probe child loads while it waits, and the
    submission is read only once the turn has come."""
    turn = []
    reads = []
    real = cli._precheck
    monkeypatch.setattr(cli, "_precheck", lambda *args: reads.append(list(turn)) or real(*args))

    def wait_turn(timeout):
        assert reads == [] and wait_for_warm_probe()  # nothing read yet, the probe loading
        turn.append(timeout)
        return True

    code = cli.main(
        [str(_refused_submission(tmp_path)), "--no-train", "--out", str(tmp_path / "out")], wait_turn=wait_turn
    )
    assert code == 2 and "no Python file" in capsys.readouterr().err
    assert turn == [pipeline.TURN_WAIT_S] and reads == [turn]


def test_a_turn_that_comes_late_gets_a_fresh_probe(tmp_path, monkeypatch, capsys):
    """Past ``TURN_WAIT_S`` the waiting child would stop waiting for its spec: it ends unused, and the
    grading starts a fresh one once its turn comes."""
    started = []
    monkeypatch.setattr(pipeline, "start_probe", lambda opts: started.append(opts) or real_start(opts))
    calls = []

    def wait_turn(timeout):
        calls.append(timeout)
        return timeout is None  # not within TURN_WAIT_S; then the turn, waited for without a limit

    code = cli.main(
        [str(_refused_submission(tmp_path)), "--no-train", "--out", str(tmp_path / "out")], wait_turn=wait_turn
    )
    assert code == 2 and "no Python file" in capsys.readouterr().err
    assert calls == [pipeline.TURN_WAIT_S, None] and len(started) == 2
    deadline = time.monotonic() + 60
    while warm_probes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert warm_probes() == []  # both ended: the first unused at the long wait, the second after the refusal
