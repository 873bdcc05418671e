"""A whole class through ``grade batch``: good, failing, broken, hanging and zip submissions; outputs; re-runs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from batch_helpers import GradedClass, run_batch, zip_folder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STUDENTS = ["bomb", "broken", "good", "hanging", "maxpool"]


def rows(out: Path) -> dict[str, dict]:
    with open(out / "grades.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def test_batch_exit_status_and_summary(graded_class: GradedClass) -> None:
    proc = graded_class.proc
    assert proc.returncode == 1, proc.stdout + proc.stderr  # some students failed or broke
    assert "5 students" in proc.stdout and "5 graded now, 0 unchanged" in proc.stdout
    assert "graded 5" in proc.stderr and "ETA" in proc.stderr  # class progress


def test_every_student_gets_a_complete_folder(graded_class: GradedClass) -> None:
    out = graded_class.out
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) == STUDENTS
    for student in STUDENTS:
        folder = out / student
        for name in ("results.json", "report.html", "log.txt", "done.json"):
            assert (folder / name).is_file(), f"{student}/{name}"
        results = json.loads((folder / "results.json").read_text())
        assert results["batch"]["student"] == student
        marker = json.loads((folder / "done.json").read_text())
        assert marker["student"] == student and marker["mode"] == "no-train"
    assert not (out / ".staging").exists() and not (out / ".work").exists()


def test_gradebook_rows(graded_class: GradedClass) -> None:
    table = rows(graded_class.out)
    assert list(table) == STUDENTS  # input order: sorted folder listing
    good, maxpool = table["good"], table["maxpool"]
    assert good["rule:no_maxpool"] == "15" and good["rule:params"] == "125" and good["error_type"] == ""
    assert maxpool["status"] == "failed" and maxpool["rule:no_maxpool"] == "0" and maxpool["error_type"] == ""
    assert float(good["total"]) == float(good["score"]) + float(good["bonus"])
    assert table["broken"]["status"] == "error" and table["broken"]["error_type"] == "syntax_error"
    assert table["hanging"]["status"] == "error" and table["hanging"]["error_type"] == "timeout"
    assert table["bomb"]["error_type"] == "unzip_failed" and table["bomb"]["score"] == "0"
    assert maxpool["source"].endswith("maxpool.zip")
    header = (graded_class.out / "grades.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["student", "status", "score", "max_score", "bonus", "total", "error_type"]
    assert {"rule:no_maxpool", "rule:receptive_field", "rule:augmentations", "rule:bonus"} <= set(header)
    assert len(header) == len(set(header))


def test_the_gradebook_tells_not_run_from_failed_from_broken(graded_class: GradedClass) -> None:
    """Per rule a status beside the points; undecided rules blank; mode, decided maximum, questions, problems."""
    table = rows(graded_class.out)
    good, maxpool, broken = table["good"], table["maxpool"], table["broken"]
    assert good["status:accuracy"] == "skipped" and good["rule:accuracy"] == ""  # --no-train: not 0
    assert good["mode"] == "no-train" and good["decided_max"] == str(700 - 100)
    assert maxpool["status:no_maxpool"] == "failed" and maxpool["rule:no_maxpool"] == "0"
    assert maxpool["problems"].startswith("no_maxpool: ")
    assert broken["status:architecture"] == "error"
    assert good["q:model code"] == "125" and good["q:albumentations code"] == "125"
    assert good["problems"] == ""


def test_typed_errors_and_logs(graded_class: GradedClass) -> None:
    out = graded_class.out
    hanging = json.loads((out / "hanging" / "results.json").read_text())
    assert hanging["error"]["type"] == "timeout" and "killed" in hanging["error"]["message"]
    assert "Submission error" in (out / "hanging" / "report.html").read_text()
    bomb = json.loads((out / "bomb" / "results.json").read_text())
    assert "bytes" in bomb["error"]["message"]
    assert "--no-train" in (out / "good" / "log.txt").read_text()
    for student in ("good", "broken", "hanging", "maxpool"):  # each started ahead (--ahead 1), then its turn
        assert " s before its turn" in (out / student / "log.txt").read_text(), student
    # The zip was unwrapped: its single top folder is what was graded.
    maxpool = json.loads((out / "maxpool" / "results.json").read_text())
    assert maxpool["submission"]["name"] == "S6-main"


def test_class_results_json_and_same_architecture(graded_class: GradedClass) -> None:
    data = json.loads((graded_class.out / "results.json").read_text())
    assert data["schema"] == "s6-grader/batch/1"
    assert [s["student"] for s in data["students"]] == STUDENTS
    assert data["counts"]["students"] == 5 and data["counts"]["error"] == 3
    good = next(s for s in data["students"] if s["student"] == "good")
    assert good["results"]["checks"] and good["report"] == "good/report.html"
    # good and maxpool differ by one MaxPool layer, same transforms: flagged near-identical.
    groups = data["similar_groups"]
    assert [g["students"] for g in groups] == [["good", "maxpool"]]
    assert groups[0]["kind"] == "near-identical" and groups[0]["max_edits"] == 1
    rules = {r["id"]: r for r in data["rules"]}
    assert rules["no_maxpool"]["passed"] == 1 and rules["no_maxpool"]["failed"] == 1


def test_index_page_contents(graded_class: GradedClass) -> None:
    html = (graded_class.out / "index.html").read_text()
    for student in STUDENTS:
        assert f'<tr data-student="{student}">' in html
        assert f'href="{student}/report.html"' in html
    assert 'id="histogram"' in html and 'id="rules"' in html and 'id="group-A"' in html
    assert "never a verdict" in html
    assert "http://" not in html and "https://" not in html  # self-contained: opens offline


def test_gradescope_files(graded_class: GradedClass) -> None:
    data = json.loads((graded_class.out / "good" / "gradescope" / "results.json").read_text())
    assert set(data) >= {"score", "tests"}
    assert all(set(t) >= {"name", "score", "max_score", "output", "status"} for t in data["tests"])
    assert {t["status"] for t in data["tests"]} <= {"passed", "failed"}
    broken = json.loads((graded_class.out / "broken" / "gradescope" / "results.json").read_text())
    assert "syntax_error" in broken["output"]


def markers(out: Path) -> dict[str, tuple[int, str]]:
    return {
        p.parent.name: (p.stat().st_mtime_ns, json.loads(p.read_text())["graded_at"]) for p in out.glob("*/done.json")
    }


def test_rerun_skips_then_detects_change_then_force(graded_class: GradedClass, tmp_path: Path) -> None:
    """Resume: nothing unchanged is redone; a changed submission is; --force redoes what it names."""
    # On a copy (times kept): the graded class is shared by every test, in every worker.
    subs = shutil.copytree(graded_class.subs, tmp_path / "class" / "subs", symlinks=True)
    out = shutil.copytree(graded_class.out, tmp_path / "class" / "out", symlinks=True)
    before = markers(out)
    again = run_batch(subs, "--out", out, "--jobs", "2", "--no-train", "--format", "gradescope")
    assert "0 graded now, 5 unchanged" in again.stdout, again.stdout + again.stderr
    assert markers(out) == before
    # A changed zip (cheap: rejected again, now for a '..' path) is re-processed; the others are not.
    bad = tmp_path / "evil"
    bad.mkdir()
    (bad / "model.py").write_text("x = 1\n")
    zip_folder(bad, subs / "bomb.zip", top="../escape")
    changed = run_batch(subs, "--out", out, "--jobs", "2", "--no-train")
    assert "1 graded now, 4 unchanged" in changed.stdout, changed.stdout + changed.stderr
    after = markers(out)
    assert {s for s in after if after[s] != before[s]} == {"bomb"}
    assert "'..'" in json.loads((out / "bomb" / "results.json").read_text())["error"]["message"]
    assert not (tmp_path / "escape").exists()
    # --force with --only: exactly that student again.
    forced = run_batch(subs, "--out", out, "--no-train", "--force", "--only", "broken", "--timeout", "120")
    assert "1 students" in forced.stdout and "1 graded now" in forced.stdout, forced.stdout + forced.stderr
    final = markers(out)
    assert {s for s in final if final[s] != after[s]} == {"broken"}
    assert list(rows(out)) == STUDENTS  # the class outputs still list everybody


def test_usage_errors(tmp_path: Path, class_folder: Path) -> None:
    missing = run_batch(tmp_path / "nope", "--out", tmp_path / "o")
    assert missing.returncode == 2 and "neither a folder" in missing.stderr
    unknown = run_batch(class_folder, "--out", tmp_path / "o", "--only", "zed")
    assert unknown.returncode == 2 and "zed" in unknown.stderr
