"""The capture run: the model the student's own training code trains and the pipeline applied to its
training images are what is graded (grader/child/capture.py), through the `grade` CLI.

Every fixture here (tests/fixtures/submissions.py ``CAPTURED``) is a shape that reading the code alone
got wrong: a wrapper class holding the A.Compose, mean/std computed at run time (named mu/sigma, or
turned into lists with ``.tolist()``), an image size tuple, a config dict, a method of a data class, a
dataset subclass building its pipeline in ``__init__``, a pipeline discovery missed, a Colab notebook
that clones its own repository, a script that trains on import, a model reached through a factory,
two notebooks of which one trains. The capture stops at the first backward: no training step runs.
"""

from __future__ import annotations

import json
import re

import pytest
from fixtures.submissions import CAPTURED, TRAINING_MARK
from grading import TEST_RUBRIC, by_id, run_grade

MODEL_RULES = ("no_maxpool", "architecture", "receptive_field", "depthwise_separable", "dilated", "gap", "params")
SETTLED = sorted(name for name, c in CAPTURED.items() if c.stopped)
FALLBACK = sorted(name for name, c in CAPTURED.items() if not c.stopped and c.decided)


def _first_line(out: str) -> str:
    """The terminal's first line (what was graded), unwrapped: up to the table's header."""
    lines = out.splitlines()[1:]
    end = next((i for i, line in enumerate(lines) if line.split()[:2] == ["rule", "points"]), len(lines))
    return " ".join(" ".join(lines[:end]).split())


@pytest.fixture(scope="module", autouse=True)
def _start_all(graded):
    graded.submit(*CAPTURED, "notebook_only")


@pytest.mark.parametrize("name", SETTLED)
def test_what_the_training_code_builds_is_graded(graded, name):
    expected = CAPTURED[name]
    _code, results, out = graded[name]
    assert results["error"] is None, (results["error"], out)
    model = results["facts"]["model"]
    assert (model["file"], model["class"]) == (expected.model_file, expected.model_class), out
    checks = by_id(results)
    for rule in (*MODEL_RULES, "augmentations", "gpu"):
        assert checks[rule]["status"] == "passed", (rule, checks[rule]["message"])
    capture = results["facts"]["capture"]
    assert capture["entry"] == expected.entry
    assert capture["stopped"] == "backward()"
    assert TRAINING_MARK not in results["output"] + out  # stopped before the first training step


def test_the_model_reached_through_a_factory_is_the_trained_one_with_its_arguments(graded):
    _code, results, out = graded["model_factory"]
    captured = results["facts"]["model"]["captured"]
    assert captured["arguments"] == "(dropout=0.05)" and captured["optimizer"] == "SGD"
    assert (captured["entry_at"], captured["built_at"]) == ("train.py:26", "models/__init__.py:8")
    chosen = next(c for c in results["facts"]["model"]["candidates"] if c.get("chosen"))
    assert chosen["kwargs"] == {"dropout": 0.05}
    # Capture and the code alone disagree: capture wins, and both are said, in the first line too.
    assert results["facts"]["capture"]["disagreements"] == [
        "the training code trains models/s6.py:S6Net (built at train.py:26 via models/__init__.py:8); "
        "the code alone pointed at model.py:Net"
    ]
    first = _first_line(out)
    assert (
        "model models/s6.py:S6Net(dropout=0.05) (built by the training code at train.py:26 via models/__init__.py:8)"
        in first
    )
    assert "captured train.py run to its first backward() (train.py:16)" in first
    assert "code alone model model.py:Net isolation" in first  # only the piece that differs


def test_the_report_says_what_was_captured_and_what_the_code_alone_found(graded):
    _code, _results, _out = graded["model_factory"]
    html = (graded.root / "out" / "model_factory" / "report.html").read_text()
    assert "train.py run to its first backward() (train.py:16)" in html
    assert "model.py:Net" in html and "models/s6.py:S6Net" in html


def test_the_pipeline_applied_to_the_training_images_wins_over_the_guess(graded):
    _code, results, out = graded["mu_sigma"]
    transforms = results["facts"]["transforms"]
    assert transforms["site"] == "transforms.py:8"
    pipeline = results["facts"]["capture"]["pipeline"]
    assert pipeline["how"] == "applied to the training batch" and pipeline["applied_at"] == "data.py:16"
    assert results["facts"]["capture"]["pipelines_built"] == ["transforms.py:8"]  # every one, by its line
    assert "pipeline transforms.py:8 (applied to the training images at data.py:16)" in _first_line(out)
    [disagreement] = results["facts"]["capture"]["disagreements"]
    assert disagreement.startswith("the training images go through the pipeline built at transforms.py:8")


def test_a_colab_notebook_runs_with_its_shims_and_its_own_clone(graded):
    _code, results, _out = graded["colab_notebook"]
    capture = results["facts"]["capture"]
    shims = "\n".join(capture["shims"])
    for expected in (
        "!pip install -q albumentations torchsummary skipped",
        "drive.mount('/content/drive') skipped",
        "!git clone https://github.com/student/era-s6: the submission itself stands for the clone",
        "torch.cuda queries answered without a GPU",
    ):
        assert expected in shims, shims
    # %cd era-s6/src reached the submission's src/ (the model is imported from there), and every line
    # is the notebook's own.
    assert capture["stopped_entry_at"].startswith("notebooks/S6.ipynb cell 7 line ")
    assert results["facts"]["transforms"]["site"] == "notebooks/S6.ipynb cell 6 line 9"
    assert "_s6_" not in json.dumps(results["facts"]["capture"]) + json.dumps(results["checks"])


def test_of_two_notebooks_the_one_that_trains_is_graded(graded):
    _code, results, _out = graded["two_notebooks"]
    assert results["facts"]["capture"]["entry"] == "S6_final.ipynb"
    assert by_id(results)["dilated"]["status"] == "passed"  # the older notebook's Net has no dilation
    assert results["facts"]["qa"]["model_code"]["file"] == "S6_final.ipynb"
    assert results["facts"]["qa"]["model_code"]["text"].startswith("class Net(nn.Module):")


@pytest.mark.parametrize("name", FALLBACK)
def test_an_entry_point_that_hangs_or_exits_leaves_it_to_the_code_alone(graded, name):
    _code, results, out = graded[name]
    assert results["error"] is None, results["error"]
    checks = by_id(results)
    for rule in (*MODEL_RULES, "augmentations"):
        assert checks[rule]["status"] == "passed", (rule, checks[rule]["message"])
    [tried] = results["facts"]["capture"]["tried"]
    assert tried["status"] == {"hanging_entry": "timeout", "exiting_entry": "exit"}[name]
    assert "model" not in results["facts"]["model"].get("captured", {})
    probe_seconds = float(re.search(r"probe_seconds = (\d+)", TEST_RUBRIC).group(1))
    assert results["timings"]["probe_s"] < probe_seconds  # within the probe's own limit
    line = _first_line(out)
    assert {"hanging_entry": "train.py reached no training step in time", "exiting_entry": "train.py stopped at train.py:"}[name] in line  # fmt: skip


def test_an_undecided_pipeline_names_what_is_missing_in_one_line(graded):
    _code, results, _out = graded["dead_drive_path"]
    check = by_id(results)["augmentations"]
    assert check["status"] == "error"
    message = check["message"]
    assert "\n" not in message
    assert "the train pipeline at transforms.py:12 could not be built: it needs mu and sigma" in message
    assert "train.py stopped at train.py:25, FileNotFoundError" in message and "cifar_stats.npy" in message
    assert '--transforms transforms.py:get_transforms --transforms-kwargs \'{"mu": ..., "sigma": ...}\'' in message


def test_a_pinned_pipeline_is_kept_over_the_captured_one(tmp_path):
    from fixtures.submissions import build

    sub = build("mu_sigma", tmp_path / "sub")
    stats = '{"mu": [0.4914, 0.4822, 0.4465], "sigma": [0.247, 0.2435, 0.2616]}'
    _, results, out = run_grade(
        sub,
        tmp_path / "out",
        "--no-train",
        "--transforms",
        "transforms.py:get_transforms",
        "--transforms-kwargs",
        stats,
    )
    assert results["facts"]["transforms"]["site"] == "transforms.py:get_transforms()"
    assert results["facts"]["capture"]["pipeline"]["ignored"] == "the pipeline is pinned"
    assert results["facts"]["capture"]["disagreements"] == []
    assert by_id(results)["augmentations"]["status"] == "passed", out


def test_no_message_or_code_entry_names_a_module_the_grader_generated(graded):
    _code, results, _out = graded["notebook_only"]
    qa = results["facts"]["qa"]
    assert qa["model_code"]["file"] == "Session6.ipynb"
    wheres = [c["where"] for c in qa["augmentation_code"]]
    assert wheres and all(w.startswith("Session6.ipynb cell ") for w in wheres), wheres
    assert len({c["text"] for c in qa["augmentation_code"]}) == len(qa["augmentation_code"])  # each call once
    assert "_s6_" not in json.dumps(qa)
