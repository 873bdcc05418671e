"""The HTML report rendered from hand-made results: the training facts, the checkpoint's consistency figures,
the tensors the forward reads besides its parameters, and the lines that stop the model rules."""

from __future__ import annotations

import copy
import html as entities
import re

import pytest

from grader.report.html import render_report, role_counts
from grader.report.sections import extra_sections

ROLES = (
    {f"conv{i}.weight": "conv weight" for i in range(17)}
    | {f"bn{i}.weight": "norm weight" for i in range(17)}
    | {f"bn{i}.bias": "norm bias" for i in range(17)}
    | {"fc.weight": "linear weight", "fc.bias": "linear bias"}
)
TRAINED = {
    "source": "reproduced by the grader",
    "target": 85.0,
    "device": "cpu",
    "data": "CIFAR-10",
    "best_test_acc": 86.1,
    "best_epoch": 24,
    "epochs_run": 24,
    "epochs": [],
    "attempts": [{"epochs_planned": 20, "epochs_run": 20, "why": "the planned schedule", "wall_s": 250.0}],
    "compute_s": 312.4,
    "compute": {"epochs": 24, "images": 1_200_000, "seconds": 312.4},
    "hyp": {"epochs": 20, "seed": 0},
    "notes": [],
    "initialised": ROLES,
    "pipeline_note": "the train pipeline could not be rebuilt here (Lambda): the model was trained with the "
    "assignment's canonical pipeline",
    "error": None,
}
CONSISTENCY = {
    "test": 99.5,
    "flipped": 41.2,
    "shifted": 38.7,
    "train": 40.1,
    "margin": 3.0,
    "suspected": True,
    "summary": "test accuracy 99.50% against 38.70% on test images shifted by 2 px (margin 3 points)",
}
CHECKPOINT = {
    "source": "checkpoint accuracy",
    "target": 85.0,
    "device": "cpu",
    "data": "CIFAR-10",
    "best_test_acc": 99.5,
    "test_loss": 0.01,
    "epochs_run": 0,
    "epochs": [],
    "consistency": CONSISTENCY,
}
HIDDEN = [
    {
        "name": "memory",
        "kind": "buffer",
        "shape": [3, 32, 32],
        "dtype": "float32",
        "numel": 3072,
        "line": "model.py:14: self.register_buffer('memory', torch.zeros(3, 32, 32))",
    },
    {"name": "scale", "kind": "constant", "shape": [], "dtype": "float32", "numel": 1, "line": ""},
]


def _results(facts: dict | None = None, checks: list[dict] | None = None) -> dict:
    return {
        "submission": {"name": "ann", "path": "/x/ann", "hash": "h1"},
        "rubric": "ERA S6",
        "generated_at": "2025-01-01T00:00:00+00:00",
        "grader_version": "0",
        "score": 0,
        "max_score": 700,
        "bonus": 0,
        "checks": checks or [],
        "facts": facts or {},
        "warnings": [],
        "error": None,
        "output": "",
        "timings": {},
    }


def _params_check(hidden: list[dict], total: int, visibility: str = "visible") -> dict:
    return {
        "id": "params",
        "title": "Fewer than 200,000 parameters",
        "status": "passed",
        "points": 125.0,
        "max_points": 125,
        "message": "ok",
        "warnings": [],
        "visibility": visibility,
        "evidence": {
            "params": 190_000 + total,
            "trainable": 190_000,
            "hidden": hidden,
            "hidden_total": total,
            "budget": 1024,
        },
    }


def _html(results: dict) -> str:
    return render_report(results, *extra_sections(results))


def _text(html: str) -> str:
    """The report's words, tags left out and whitespace collapsed."""
    return re.sub(r"\s+", " ", entities.unescape(re.sub(r"<[^>]+>", " ", html)))


def test_role_counts_are_counted_per_role_in_a_fixed_order_and_plural() -> None:
    assert role_counts(ROLES) == "17 conv weights, 1 linear weight, 1 linear bias, 17 norm weights, 17 norm biases"
    assert role_counts({"a": "other offset", "b": "other offset", "c": "new role"}) == "2 other offsets, 1 new role"
    assert role_counts(None) == "" and role_counts({}) == ""


def test_the_training_section_shows_compute_initialisation_and_the_pipeline_note() -> None:
    text = _text(_html(_results({"training": TRAINED})))
    assert "Compute for this submission: 24 epochs, 1,200,000 training images, 312 s." in text
    assert (
        "Initialised by the grader: 17 conv weights, 1 linear weight, 1 linear bias, 17 norm weights, "
        "17 norm biases, from the course seed (seed=0); the submission's own initial values are not used." in text
    )
    assert "fc.bias linear bias" in text  # every tensor, under the summary line
    assert "Train pipeline: the train pipeline could not be rebuilt here (Lambda)" in text
    assert "Is this accuracy the model's?" not in text  # a training, not a checkpoint
    assert "training and evaluation: the grader's own process, where none of the submission's code runs" in text


def test_the_training_section_without_the_new_facts_shows_none_of_them() -> None:
    old = {k: v for k, v in TRAINED.items() if k not in ("compute", "initialised", "pipeline_note")}
    text = _text(_html(_results({"training": old})))
    assert "Training job" in text
    for absent in ("training images", "Initialised by the grader", "Train pipeline:", "Memorisation", "Consistent"):
        assert absent not in text
    single = _text(_html(_results({"training": old | {"attempts": old["attempts"] * 2}})))
    assert "Compute for this submission: 312 s." in single  # an older results.json: its seconds, as before


def test_a_checkpoint_shows_its_consistency_figures_and_marks_memorisation() -> None:
    html = _html(_results({"training": CHECKPOINT}))
    text = _text(html)
    assert "Is this accuracy the model's?" in text
    assert "the test images 99.50%" in text
    assert "the test images flipped left to right 41.20% ⚠ 58.30 points" in text
    assert "the test images shifted by 2 px 38.70% ⚠ 60.80 points" in text
    assert "clean training images (a seeded sample of up to 10,000) 40.10% ⚠ 59.40 points" in text
    assert "margin 3 points" in text
    assert "⚠ Memorisation suspected : " + CONSISTENCY["summary"] in text
    assert html.count('style="background:#fdecea"') == 3
    assert "Compute for this submission" not in text and "Initialised by the grader" not in text


def test_a_consistent_checkpoint_is_not_marked() -> None:
    fine = CONSISTENCY | {"flipped": 98.9, "shifted": 97.1, "train": 99.8, "suspected": False, "test": 99.5}
    text = _text(_html(_results({"training": CHECKPOINT | {"consistency": fine}})))
    assert "the test images shifted by 2 px 97.10% 2.40 points" in text
    assert "clean training images (a seeded sample of up to 10,000) 99.80% -0.30 points" in text
    assert "Memorisation suspected" not in text and "⚠" not in text
    assert "Consistent: no figure is more than 3 points below the test accuracy." in text


def test_the_params_rules_hidden_tensors_are_a_table() -> None:
    html = _html(_results(checks=[_params_check(HIDDEN, 3073)]))
    text = _text(html)
    assert "Numbers the forward reads besides its parameters" in text
    assert "Besides 190,000 trainable parameters the forward reads 3,073 numbers in 2 tensors" in text
    assert "(1,024 allowed: hidden data" in text
    assert "memory buffer float32 3 x 32 x 32 3,072 model.py:14: self.register_buffer(" in text
    assert "scale constant float32 scalar 1 -" in text
    within = _text(_html(_results(checks=[_params_check(HIDDEN[1:], 1)])))
    assert "in 1 tensor that" in within and "(1,024 allowed)" in within and "hidden data" not in within


@pytest.mark.parametrize(
    "checks",
    [[], [_params_check([], 0)], [_params_check(HIDDEN, 3073, visibility="hidden")]],
    ids=["no-params-rule", "nothing-hidden", "rule-hidden-from-students"],
)
def test_no_hidden_tensor_table_without_hidden_tensors_in_a_visible_params_rule(checks: list[dict]) -> None:
    text = _text(_html(_results(checks=copy.deepcopy(checks))))
    assert "Numbers the forward reads besides its parameters" not in text and "register_buffer" not in text


def test_lines_that_watch_the_grader_or_mix_a_batch_are_shown_near_the_model_facts() -> None:
    facts = {
        "model": {"file": "model.py", "class": "Net"},
        "watches_grader": ["model.py:12: if torch.compiler.is_exporting():"],
        "batch_mixing": ["BatchNorm normalises with the batch's own statistics in eval mode at model.py:20"],
    }
    html = _html(_results(facts))
    text = _text(html)
    assert "asks whether it is being exported, traced or graded" in text
    assert "model.py:12: if torch.compiler.is_exporting():" in text
    assert "mixes the images of a batch" in text
    assert "BatchNorm normalises with the batch's own statistics in eval mode at model.py:20" in text
    assert html.index("model.py:12:") < html.index("<h2>Rules</h2>")  # at the top, beside "what was graded"
    many = _text(_html(_results(facts | {"watches_grader": [f"model.py:{i}: x" for i in range(25)]})))
    assert "model.py:19: x" in many and "model.py:20: x" not in many and "and 5 more" in many
    quiet = _text(_html(_results(facts | {"watches_grader": [], "batch_mixing": []})))
    assert "exported, traced or graded" not in quiet and "mixes the images" not in quiet
    older = _text(_html(_results({"model": facts["model"]})))
    assert "exported, traced or graded" not in older and "mixes the images" not in older


def test_the_report_templates_compile_once_per_process_and_before_the_batch_forks():
    """One Jinja environment per process; the batch's fork server compiles the report's templates,
    so no grading forked from it compiles them again."""
    from grader.batch import warm
    from grader.report.html import environment

    assert environment() is environment()
    environment().cache.clear()
    warm.preload()
    compiled = {key[1] for key in environment().cache}
    assert {"report.html.j2", "_training.html.j2", "_evidence.html.j2"} <= compiled
