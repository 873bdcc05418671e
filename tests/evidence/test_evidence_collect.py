"""collect(): one JSON-serializable dict of everything a submission shows; never raises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from grader.checks_runner import run_checks
from grader.evidence import collect
from grader.facts import Facts
from grader.rubric import load_rubric

SUBMISSION = Path(__file__).parent / "fixtures" / "submission"


def test_collect_submission_layout_and_json() -> None:
    result = collect(SUBMISSION)
    json.dumps(result)  # must serialize as is
    assert set(result) == {"readme", "logs", "chosen_log", "claims", "notebooks", "notes"}
    assert result["readme"]["path"] == "README.md"
    assert result["readme"]["parts"]["model_code"]["evidence"] == "link to S6.ipynb, which is in the repository"
    assert [i["exists"] for i in result["readme"]["images"]] == [False]

    sources = {p["source"]: p for p in result["logs"]}
    assert set(sources) == {"README.md", "S6.ipynb cell 12", "logs/metrics.csv"}
    assert sources["S6.ipynb cell 12"]["epochs"] == [
        {"epoch": 1, "test_acc": 70.12, "line": 4},
        {"epoch": 2, "test_acc": 78.9, "line": 9},
        {"epoch": 3, "test_acc": 86.08, "line": 14},
    ]
    assert sources["logs/metrics.csv"]["epochs"][-1]["test_acc"] == 70.0

    log = result["chosen_log"]
    facts = Facts(submission=SUBMISSION, rubric=load_rubric())
    facts.evidence = result
    check = next(r for r in run_checks(facts, facts.rubric) if r.id == "training_log")
    assert check.status == "passed", check.message
    assert log["source"] == "S6.ipynb cell 12"  # ties with README.md at 3 epochs: the notebook wins
    assert "preferred as notebook over README.md" in log["choice"]

    notebooks = {n["path"]: n for n in result["notebooks"]}
    assert notebooks["S6.ipynb"]["code_cells"] == 16 and notebooks["S6.ipynb"]["out_of_order"] is False
    assert notebooks["broken.ipynb"]["error"].startswith("broken.ipynb: not valid JSON")
    assert any(n.startswith("broken.ipynb: not valid JSON") for n in result["notes"])


def test_collect_compares_claims_with_measured() -> None:
    result = collect(SUBMISSION, measured={"params": 195794, "receptive_field": 133, "accuracy": 84.2})
    json.dumps(result)
    flags = {(c["name"], c["source"]): c for c in result["comparisons"]}
    # "~195K params" is within 2% of 195,794; the summary printed in the notebook (181,942) is another model
    assert flags[("params", "README.md")]["flag"] is False
    summary = flags[("summary_params", "S6.ipynb cell 10 output")]
    assert summary["flag"] and summary["difference"] == 195794 - 181942
    rf = flags[("receptive_field", "README.md")]
    assert rf["flag"] and rf["note"] == "README.md line 3 claims RF 52 but the graph gives 133 (+81)"
    # "Best test accuracy: 86.50%" is in no log; the logs show 86.08 at best
    in_log = flags[("accuracy_in_log", "README.md")]
    assert in_log["flag"] and in_log["claimed"] == 86.5


def test_collect_assignment_folder(tmp_path: Path) -> None:
    shutil.copytree(SUBMISSION, tmp_path / "S6")
    (tmp_path / "S5").mkdir()
    (tmp_path / "S5" / "train.log").write_text("Val Acc: 10%\nVal Acc: 20%\nVal Acc: 30%\nVal Acc: 40%\n")
    result = collect(tmp_path, "S6")
    assert result["readme"]["path"] == "S6/README.md"
    assert {p["source"] for p in result["logs"]} == {"S6/README.md", "S6/S6.ipynb cell 12", "S6/logs/metrics.csv"}
    assert result["chosen_log"]["source"] == "S6/S6.ipynb cell 12"  # S5's longer log is another assignment's


def test_collect_reads_only_comments_of_code_cells(tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("Receptive field: 45"),
        new_code_cell("rf = 1\nrf = rf + 2  # RF: 47\nx = 3"),
    ]
    nbformat.write(nb, tmp_path / "S6.ipynb")
    rf = collect(tmp_path)["claims"]["receptive_field"]
    assert [(c["value"], c["source"], c["line"]) for c in rf] == [
        (45, "S6.ipynb cell 1", 1),
        (47, "S6.ipynb cell 2", 2),
    ]


def test_collect_never_raises_on_bad_input(tmp_path: Path) -> None:
    result = collect(tmp_path / "does-not-exist")
    json.dumps(result)
    assert result["readme"]["path"] is None
    assert result["logs"] == [] and result["chosen_log"]["found"] is False
    (tmp_path / "README.md").write_bytes(b"\xff\xfe\x00 binary \x00 Total params: 1,234,567\n")
    (tmp_path / "x.ipynb").write_bytes(b"\x89PNG not a notebook")
    (tmp_path / "train.log").write_bytes(b"\x00\x01\x02")
    result = collect(tmp_path)
    json.dumps(result)
    assert result["notebooks"][0]["error"].startswith("x.ipynb:")
    assert result["claims"]["params"][0]["value"] == 1234567
