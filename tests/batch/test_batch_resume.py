"""A CSV of file:// repos, killed with ``kill -9`` mid-run and run again: nothing lost, nothing redone."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_helpers import GradedClass, git_commit_all, git_repo, make_submission, run_batch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
COMPARED = ["status", "score", "max_score", "bonus", "total", "error_type", "content_hash"]


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "grades.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                pids.append(int(entry))
    return pids


PF_EXITING = 0x4  # /proc/PID/stat flags: the process is exiting


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == ancestor:
            return True
    return False


def _graders(batch: int | None = None) -> list[int]:
    """Grading processes started by a batch (they name themselves, see grader.batch.forkrun); with
    ``batch``, only that batch's (other tests may grade at the same time)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or Path(f"/proc/{entry}/comm").read_text().strip() != "s6-batch-grade":
                continue
            if batch is not None and not _descends_from(int(entry), batch):
                continue
            # A killed orphan stays a zombie until init reaps it, and one that got its SIGKILL may take a
            # while to free its memory on a busy machine (the kernel marks it PF_EXITING): dead all the same.
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            state, flags = fields[0], int(fields[6])
            if state != "Z" and not flags & PF_EXITING:
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_csv_of_repos_killed_and_resumed(tmp_path: Path, graded_class: GradedClass) -> None:
    repos = tmp_path / "repos"
    repos.mkdir()
    broken_url, _ = git_repo(make_submission(repos / "broken", "broken"))
    good = make_submission(repos / "good", "good")
    good_url, good_commit = git_repo(good)
    (good / "model.py").write_text("raise SystemExit('a later commit that must not be graded')\n")
    git_commit_all(good, "break it after the deadline")
    table = tmp_path / "class.csv"
    missing = (repos / "nobody").as_uri()
    table.write_text(f"student,git_url,commit\nbroken,{broken_url}\ngood,{good_url},{good_commit}\nghost,{missing}\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader", "batch", str(table), "--out", str(out), "--jobs", "1", "--no-train"]

    batch = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    graded = ("broken", "good")
    # Kill once one student is committed and the next one is being graded.
    while not (any((out / s / "done.json").is_file() for s in graded) and (graders := _graders(batch.pid))):
        assert batch.poll() is None, "the batch ended before it could be killed"
        assert time.monotonic() < deadline, "no student finished in time"
        time.sleep(0.1)
    os.killpg(batch.pid, signal.SIGKILL)  # the batch's whole process group, as a TA's kill -9 or a power cut
    batch.wait()
    done = [s for s in graded if (out / s / "done.json").is_file()]
    assert len(done) == 1, "both finished: the kill came too late to test anything"
    finished, pending = done[0], next(s for s in graded if s not in done)
    marker = out / finished / "done.json"
    first = marker.stat().st_mtime_ns, json.loads(marker.read_text())
    # The graders (forked from the batch's fork server, in sessions of their own) die with the batch:
    # the kernel kills them when the fork server dies (PR_SET_PDEATHSIG), which takes scheduling.
    settle = time.monotonic() + 5
    while set(_graders()) & set(graders) and time.monotonic() < settle:
        time.sleep(0.1)
    assert _processes_mentioning(str(out)) == [] and not (set(_graders()) & set(graders))

    again = run_batch(table, "--out", out, "--jobs", "1", "--no-train")
    assert "3 students" in again.stdout and "1 unchanged" in again.stdout, again.stdout + again.stderr
    # The finished one is not redone; the pending one is graded once; ghost's failed clone is retried.
    assert marker.stat().st_mtime_ns == first[0] and json.loads(marker.read_text()) == first[1]
    log = (out / "batch.log").read_text()
    assert log.count(f" {finished}: ") == 1 and log.count(f" {pending}: ") == 1
    assert log.count(" ghost: ") in (1, 2)  # once in each run that reached it
    assert not (out / ".staging").exists() and not (out / ".trash").exists()

    rows = _rows(out)
    assert list(rows) == ["broken", "good", "ghost"]
    assert rows["ghost"]["status"] == "error" and rows["ghost"]["error_type"] == "clone_failed"
    good_results = json.loads((out / "good" / "results.json").read_text())
    assert good_results["batch"]["commit"] == good_commit  # the pinned commit, not the later one
    # The same submissions graded in one uninterrupted run (the session's class) give the same rows.
    reference = _rows(graded_class.out)
    for student in ("broken", "good"):
        assert {k: rows[student][k] for k in COMPARED} == {k: reference[student][k] for k in COMPARED}
