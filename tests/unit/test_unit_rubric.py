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
