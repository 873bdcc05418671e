"""Fixture submissions graded end to end through the `grade` CLI (sandboxed probe included).

The base passes every rule it can without training; each mutation fails exactly its own rule with a
message that names the layer or the line; broken submissions give a typed error and never crash or
hang the grader.
"""

from __future__ import annotations

import json
import shutil

import pytest
from fixtures.submissions import LAYOUTS, MUTATIONS
from grading import by_id, run_grade

RULES_FAILING = {name: m for name, m in MUTATIONS.items() if m.fails}
BROKEN = {name: m for name, m in MUTATIONS.items() if m.error}
DECIDED_WITHOUT_TRAINING = {
    "no_maxpool",
    "architecture",
    "receptive_field",
    "depthwise_separable",
    "dilated",
    "gap",
    "gpu",
    "params",
    "augmentations",
    "training_log",
    "readme",
}


@pytest.fixture(scope="module", autouse=True)
def _start_all(graded):
    graded.submit("base", *MUTATIONS, *LAYOUTS)


def test_base_passes_every_rule_decided_without_training(graded):
    code, results, out = graded["base"]
    checks = by_id(results)
    assert {r for r, c in checks.items() if c["status"] == "passed"} == DECIDED_WITHOUT_TRAINING, out
    assert checks["accuracy"]["status"] == "skipped"
    assert checks["bonus"]["status"] == "failed"  # strided transitions: no bonus, and that is no failure
    assert code == 0, out
    assert results["schema"] == "s6-grader/results/1"
    assert results["error"] is None
    assert results["facts"]["params"] == 109_370
    assert results["facts"]["receptive_field"] == 55
    assert results["facts"]["measured_receptive_field"]["measured"] == 55


@pytest.mark.parametrize("name", sorted(RULES_FAILING))
def test_each_mutation_fails_exactly_its_rule(graded, name):
    mutation = RULES_FAILING[name]
    code, results, out = graded[name]
    checks = by_id(results)
    failed = {r for r, c in checks.items() if c["status"] in ("failed", "error") and r != "bonus"}
    assert failed == {mutation.fails}, out
    assert code == 1
    assert mutation.message in checks[mutation.fails]["message"], checks[mutation.fails]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_submissions_get_a_typed_error(graded, name):
    mutation = BROKEN[name]
    code, results, out = graded[name]
    assert code == 1, out
    assert results["error"]["type"] == mutation.error, results["error"]
    if mutation.message:
        assert mutation.message in results["error"]["where"] + results["error"]["message"]
    checks = by_id(results)
    assert checks["params"]["status"] == "error"
    assert mutation.error in checks["params"]["message"]
    # Rules that do not need the model are still decided.
    assert checks["gpu"]["status"] == "passed"
    assert checks["augmentations"]["status"] == "passed"


@pytest.mark.parametrize("name", sorted(n for n, layout in LAYOUTS.items() if not layout.error))
def test_layouts_are_discovered(graded, name):
    layout = LAYOUTS[name]
    _code, results, out = graded[name]
    checks = by_id(results)
    assert results["error"] is None, results["error"]
    assert results["facts"]["model"]["class"] == layout.model_class, out
    for rule in ("no_maxpool", "architecture", "params", "augmentations", "receptive_field"):
        assert checks[rule]["status"] == "passed", (rule, checks[rule]["message"])


def test_several_models_grades_the_trained_one_and_names_the_others(graded):
    _, results, _ = graded["several_models"]
    candidates = results["facts"]["model"]["candidates"]
    assert [c["class"] for c in candidates if c.get("chosen")] == ["Net"]
    ranked = [c.cls if hasattr(c, "cls") else c["cls"] for c in results["facts"]["discovery"]["models"]]
    assert ranked[0] == "Net" and {"OldNet", "Block", "Wrapper"} <= set(ranked)


def test_multi_session_repo_is_graded_in_its_assignment_folder(graded):
    _, results, _ = graded["multi_session"]
    assert results["facts"]["discovery"]["assignment_dir"] == "S6"
    assert results["facts"]["model"]["file"] == "S6/model.py"


def test_constructor_arguments_come_from_the_call_site(graded):
    _, results, _ = graded["constructor_args"]
    chosen = next(c for c in results["facts"]["model"]["candidates"] if c.get("chosen"))
    assert chosen["args"] == [10]


def test_notebook_training_cells_never_run(graded):
    for name in ("notebook_only", "notebook_beside_model"):
        _, results, _ = graded[name]
        assert "training must never run" not in results["output"]
        # Located in the notebook, as the student sees it, never in the module the grader generated.
        site = results["facts"]["transforms"]["site"]
        assert site.split(":")[0].endswith(".ipynb") or ".ipynb cell " in site, site
        assert "_s6_" not in json.dumps(results["checks"]) + json.dumps(results["warnings"])


def test_missing_model_says_how_to_point_at_it(graded):
    code, results, _ = graded["no_model"]
    assert code == 2  # nothing to grade: a one-line error, and a results file for the gradebook
    assert results["error"]["type"] == "model_not_found"
    assert "--model" in results["error"]["message"]


def test_hanging_import_is_killed_at_the_probe_limit(graded):
    _, results, _ = graded["hanging_import"]
    assert results["timings"]["probe_s"] < 60


def test_a_notebook_run_out_of_order_is_said(tmp_path):
    import json
    import shutil

    from fixtures.submissions import BASE
    from grading import run_grade

    sub = tmp_path / "sub"
    shutil.copytree(BASE, sub)
    cells = [("x = 1", 5), ("y = 2", 2)]
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": src, "outputs": [], "execution_count": n}
            for src, n in cells
        ],
    }
    (sub / "S6.ipynb").write_text(json.dumps(nb))
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train")
    assert any("S6.ipynb" in w and "cell 2 ran before cell 1" in w for w in results["warnings"]), results["warnings"]


def _chosen(results: dict) -> dict:
    return next(c for c in results["facts"]["model"]["candidates"] if c.get("chosen"))


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("call_site_variable", [10], {}),
        ("config_dict", [10], {"dropout": 0.05}),
        ("argparse_default", [10], {}),
    ],
)
def test_constructor_values_are_resolved_through_the_source(graded, name, args, kwargs):
    _, results, _ = graded[name]
    chosen = _chosen(results)
    assert (chosen["args"], chosen["kwargs"]) == (args, kwargs)
    assert results["facts"]["model"]["assumed"] == []  # taken from the code, not assumed


@pytest.mark.parametrize(
    ("name", "kwargs", "why"),
    [
        ("unused_required_arg", {"norm_type": "BN"}, "listed in its annotation"),
        ("literal_compared_arg", {"norm": "bn"}, "compared at line 10"),
    ],
)
def test_a_required_argument_nobody_passes_is_assumed_and_said(graded, name, kwargs, why):
    _, results, out = graded[name]
    assert _chosen(results)["kwargs"] == kwargs
    assumed = results["facts"]["model"]["assumed"]
    assert len(assumed) == 1 and why in assumed[0], assumed
    assert why in out  # the terminal says what was assumed


def test_model_kwargs_apply_to_the_discovered_class_without_model(tmp_path):
    from fixtures.submissions import build

    sub = build("unused_required_arg", tmp_path / "sub")
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train", "--model-kwargs", '{"norm_type": "LN"}')
    assert _chosen(results)["kwargs"] == {"norm_type": "LN"}
    assert results["facts"]["model"]["assumed"] == []


def test_a_model_in_the_second_file_is_found_and_the_first_file_named(graded):
    _, results, _ = graded["model_in_second_file"]
    assert results["facts"]["model"]["file"] == "network/s6.py"
    tried = {c["class"]: c for c in results["facts"]["model"]["candidates"]}
    assert tried["OldNet"].get("error") and tried["OldNet"]["file"] == "model.py"


def test_a_pipeline_in_a_class_with_arguments_is_built_as_the_training_code_does(graded):
    _, results, _ = graded["pipeline_class_with_args"]
    assert results["facts"]["transforms"]["site"] == "transforms.py:Transforms()"
    assert by_id(results)["augmentations"]["status"] == "passed"


def test_a_pipeline_at_the_top_of_a_script_is_built_without_running_the_script(graded):
    _, results, _ = graded["pipeline_in_script"]
    assert by_id(results)["augmentations"]["status"] == "passed", by_id(results)["augmentations"]["message"]
    assert results["facts"]["transforms"]["site"] == "train.py:train_transforms"
    assert "training must never run" not in results["output"]
    assert "OneCycleLR" not in results["output"]


def test_two_session_folders_take_every_piece_from_this_assignment(graded):
    _, results, out = graded["two_sessions"]
    facts = results["facts"]
    assert facts["discovery"]["assignment_dir"] == "S6"
    assert facts["model"]["file"] == "S6/model.py" and facts["model"]["class"] == "Net"
    assert facts["transforms"]["site"].startswith("S6/")
    assert by_id(results)["readme"]["status"] == "passed", by_id(results)["readme"]["message"]
    assert "graded: S6/" in out


def test_a_torchvision_pipeline_is_named_as_such(tmp_path):
    from fixtures.submissions import build

    sub = build("torchvision_pipeline", tmp_path / "sub")
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train")
    aug = by_id(results)["augmentations"]
    assert aug["status"] == "error" and "torchvision" in aug["message"]
    assert by_id(results)["architecture"]["status"] == "passed"


def test_a_pipeline_the_grader_cannot_build_is_its_limitation_with_the_pin(tmp_path):
    from fixtures.submissions import BASE

    sub = tmp_path / "sub"
    shutil.copytree(BASE, sub)
    text = (
        (sub / "transforms.py")
        .read_text()
        .replace("train_transforms = A.Compose(", "def get_train(size):\n    return A.Compose(")
    )
    text = text.replace(
        "        A.HorizontalFlip(),", "        A.Resize(size[0], size[1]),\n        A.HorizontalFlip(),"
    )
    (sub / "transforms.py").write_text(text.replace("\n    ]\n)", "\n    ]\n    )"))
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train")
    aug = by_id(results)["augmentations"]
    assert aug["status"] == "error", aug
    assert "--transforms transforms.py:get_train --transforms-kwargs" in aug["message"]
    assert "transforms.py:" in aug["message"] and "_s6_pipeline_" not in aug["message"]


def test_the_terminal_says_what_was_graded_what_to_fix_first_in_whole_points(graded):
    _, _, out = graded["too_many_params"]
    assert out.splitlines()[1].startswith("graded: ./") and "model.py:Net" in out.splitlines()[1]
    assert "✓ passed  ✗ failed" in out  # the legend
    assert "fix these first: params (125 points)" in out
    assert "score 475/700" in out and ".0/" not in out


def test_the_mean_in_unit_range_fails_by_default_and_a_rubric_may_give_partial_credit(graded, tmp_path):
    _, results, _ = graded["fill_in_unit_range"]
    assert by_id(results)["augmentations"]["status"] == "failed" and by_id(results)["augmentations"]["points"] == 0
    from fixtures.submissions import build

    sub = build("fill_in_unit_range", tmp_path / "sub")
    rubric = tmp_path / "r.toml"
    rubric.write_text("[rules.augmentations]\nunit_mistake_credit = 0.5\n")
    _, again, _ = run_grade(sub, tmp_path / "out", "--no-train", "--rubric", str(rubric))
    check = by_id(again)["augmentations"]
    assert check["status"] == "failed" and check["points"] == 62.5
    assert any("partial credit" in w for w in check["warnings"])


def test_a_home_made_class_named_like_an_albumentations_transform_is_named_as_such(tmp_path):
    from fixtures.submissions import BASE

    sub = tmp_path / "sub"
    shutil.copytree(BASE, sub)
    fake = "class CoarseDropout(A.ImageOnlyTransform):\n    def apply(self, img, **params):\n        return img\n\n\n"
    text = (sub / "transforms.py").read_text()
    start, end = text.index("        A.CoarseDropout("), text.index("        A.Normalize(")
    text = text[:start] + "        CoarseDropout(p=1.0),\n" + text[end:]
    (sub / "transforms.py").write_text(text.replace("mean = (", fake + "mean = (", 1))
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train")
    check = by_id(results)["augmentations"]
    assert check["status"] == "failed" and "own class" in check["message"] and "not albumentations" in check["message"]


def test_every_rule_not_passed_carries_a_hint_about_its_own_problem(graded, tmp_path):
    _, results, _ = graded["syntax_error"]
    errors = [c for c in results["checks"] if c["status"] == "error"]
    assert errors and all(c["hint"] for c in errors)
    from fixtures.submissions import BASE

    sub = tmp_path / "sub"
    shutil.copytree(BASE, sub)
    (sub / "transforms.py").write_text(
        (sub / "transforms.py").read_text().replace("        A.ShiftScaleRotate(),\n", "")
    )
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train")
    check = by_id(results)["augmentations"]
    assert check["status"] == "failed" and "ShiftScaleRotate is missing" in check["message"]
    assert "A.ShiftScaleRotate(" in check["hint"] and "CoarseDropout" not in check["hint"]


def test_every_false_claim_is_shown_the_most_certain_first(tmp_path):
    from fixtures.submissions import BASE

    sub = tmp_path / "sub"
    shutil.copytree(BASE, sub)
    readme = sub / "README.md"
    text = readme.read_text().replace("Receptive field: 55", "Receptive field: 45")
    readme.write_text(text + "\n\nThe C2 block has 4,640 parameters.\nTotal parameters: 150,000\n")
    _, results, out = run_grade(sub, tmp_path / "out", "--no-train")
    notes = by_id(results)["readme"]["warnings"]
    assert len(notes) == 2 and "claims RF 45 but the graph gives 55" in notes[0], notes
    assert "150,000" in notes[1] and not any("4,640" in n for n in notes)
    assert all(n.split(" (")[0][:30] in out.replace("\n", " ") for n in notes)  # every note in the terminal
