"""The rubric is the one source of the thresholds: every one a check reads is there, or loading fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

import grader.rubric
from grader.rubric import REQUIRED_KEYS, RubricError, load_rubric


def _table(rubric: dict, name: str) -> dict:
    for part in name.split("."):
        rubric = rubric[part]
    return rubric


def test_the_default_rubric_holds_every_threshold_the_checks_read() -> None:
    rubric = load_rubric()
    for table, keys in REQUIRED_KEYS.items():
        assert set(keys) <= set(_table(rubric, table)), table
    assert rubric["rules"]["accuracy"]["target"] == rubric["rules"]["training_log"]["target"] == 85.0
    assert (
        rubric["rules"]["params"]["less_than"] == 200_000 and rubric["rules"]["receptive_field"]["greater_than"] == 44
    )


def test_a_course_rubric_changes_a_threshold(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[rules.accuracy]\ntarget = 90.0\n")
    rubric = load_rubric(path)
    assert rubric["rules"]["accuracy"]["target"] == 90.0
    assert rubric["rules"]["training_log"]["target"] == 85.0  # the keys it leaves out keep the default's


@pytest.mark.parametrize(
    ("text", "table"),
    [
        ("[rules.augmentations]\ncoarse_dropout = 1\n", "[rules.augmentations.coarse_dropout]"),
        ("[rules]\nparams = 5\n", "[rules.params]"),
    ],
)
def test_a_threshold_table_replaced_by_a_value_is_a_one_line_error(tmp_path: Path, text: str, table: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(RubricError) as err:
        load_rubric(path)
    assert table in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_default_rubric_without_a_threshold_fails_instead_of_defaulting(monkeypatch: pytest.MonkeyPatch) -> None:
    text = grader.rubric.default_rubric_text()
    start = text.index("[rules.accuracy]")
    without = text[:start] + text[start:].replace("target = 85.0\n", "", 1)
    monkeypatch.setattr(grader.rubric, "default_rubric_text", lambda: without)
    with pytest.raises(RubricError, match=r"the default rubric: \[rules.accuracy\] has no target"):
        load_rubric()


# ---- [training]: caps and overrides only; the defaults are the recipe's ------------------------------------


def test_the_recipe_holds_the_training_defaults_and_the_rubric_only_caps() -> None:
    from grader.rubric import TRAINING_OVERRIDES
    from grader.training import recipe
    from grader.training.hyperparameters import resolve_hyp

    training = load_rubric()["training"]
    assert set(TRAINING_OVERRIDES) <= set(recipe.HYP)
    assert not set(TRAINING_OVERRIDES) & set(training)  # no second copy of a default
    assert resolve_hyp(training, None, None) == (recipe.HYP, [])


def test_a_rubric_overrides_a_hyperparameter_and_a_submission_sets_only_what_the_rubric_lists(tmp_path: Path) -> None:
    from grader.training import recipe
    from grader.training.hyperparameters import resolve_hyp

    path = tmp_path / "r.toml"
    path.write_text("[training]\nweight_decay = 1e-3\nepochs = 12\nsubmission_may_set = { epochs = [1, 40] }\n")
    training = load_rubric(path)["training"]
    hyp, notes = resolve_hyp(training, None, None)
    assert (hyp["weight_decay"], hyp["epochs"]) == (1e-3, 12) and notes == []
    assert {k: v for k, v in hyp.items() if k not in ("weight_decay", "epochs")} == {
        k: v for k, v in recipe.HYP.items() if k not in ("weight_decay", "epochs")
    }
    hyp, notes = resolve_hyp(training, {"weight_decay": 2e-3, "epochs": 50}, None)
    assert hyp["weight_decay"] == 1e-3 and hyp["epochs"] == 40
    assert notes == [
        "training setting weight_decay=0.002 ignored: a submission may set epochs",
        "epochs=50 is outside the course's range 1-40; 40 used",
    ]


@pytest.mark.parametrize(
    "key, value",
    [("batch_size", 1), ("bn_batch", 1), ("plain_final_epochs", 20), ("lr", 5.0), ("warmup_fraction", 0.9)],
)
def test_a_grade_toml_setting_the_default_rubric_does_not_list_is_ignored_with_a_note(key, value) -> None:
    """batch_size = 1 costs many times the compute; plain_final_epochs trains without the shifts and
    holes the augmentations rule credits: by default a submission may set only its epochs."""
    from grader.training import recipe
    from grader.training.hyperparameters import resolve_hyp

    hyp, notes = resolve_hyp(load_rubric()["training"], {key: value}, None)
    assert hyp[key] == recipe.HYP[key]
    assert notes == [f"training setting {key}={value!r} ignored: a submission may set epochs"]
    hyp, notes = resolve_hyp(load_rubric()["training"], {"epochs": 25}, None)
    assert hyp["epochs"] == 25 and notes == []


def test_a_course_lists_what_a_submission_may_set_with_ranges(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    for table, error in (
        ("{ seed = [0, 9] }", "not a recipe setting"),
        ("{ epochs = 20 }", "must be \\[low, high\\]"),
        ("{ epochs = [30, 1] }", "above high"),
    ):
        path.write_text(f"[training]\nsubmission_may_set = {table}\n")
        with pytest.raises(RubricError, match=error):
            load_rubric(path)


def test_only_the_rubric_sets_the_seed(tmp_path: Path) -> None:
    """A seed a submission could choose is a seed it could shop for until its model passes."""
    from grader.training.hyperparameters import resolve_hyp

    path = tmp_path / "r.toml"
    path.write_text("[training]\nseed = 3\n")
    training = load_rubric(path)["training"]
    assert resolve_hyp(training, None, None)[0]["seed"] == 3
    hyp, notes = resolve_hyp(training, {"seed": 7, "epochs": 9}, None)
    assert (hyp["seed"], hyp["epochs"]) == (3, 9)
    assert notes == ["training setting seed=7 ignored: only the course's rubric sets the seed"]
    path.write_text("[training]\nbf16 = false\n")
    assert resolve_hyp(load_rubric(path)["training"], {"bf16": True}, None)[0]["bf16"] is False


def test_a_misspelt_training_key_is_still_named(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[training]\nweight_decy = 1e-3\n")
    with pytest.raises(RubricError, match="unknown key 'weight_decy' in \\[training\\]"):
        load_rubric(path)
