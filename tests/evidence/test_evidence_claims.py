"""Claims: what students state about params, RF and accuracy, and the comparison with measured figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.evidence.claims import ClaimComparison, compare, extract_claims, summary_total_params

FIXTURES = Path(__file__).parent / "fixtures"


def _readme(name: str) -> str:
    return (FIXTURES / name / "README.md").read_text(encoding="utf-8")


def _by_name(comparisons: list[ClaimComparison], name: str) -> list[ClaimComparison]:
    return [c for c in comparisons if c.name == name]


@pytest.mark.parametrize(
    ("line", "value", "approximate"),
    [
        ("Total params: 181,942", 181942, False),
        ("The model has ~195K params", 195000, True),
        ("only 195k parameters in total", 195000, True),
        ("Parameters: 194,884", 194884, False),
        ("Total Parameters = `159,552`", 159552, False),
        ("Number of parameters: 199,018", 199018, False),
    ],
)
def test_param_claims(line: str, value: int, approximate: bool) -> None:
    claims = extract_claims([("README.md", line)])
    assert [(c.value, c.approximate) for c in claims.params] == [(value, approximate)]


@pytest.mark.parametrize(
    "line",
    [
        "Total Params to be less than `200k`",
        "Trainable params: 181,942",
        "Non-trainable params: 0",
        "Params size (MB): 0.69",
        "keep the parameters under 200,000",
    ],
)
def test_not_param_claims(line: str) -> None:
    assert extract_claims([("README.md", line)]).params == []


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("RF = 101", 101),
        ("Receptive field: 52", 52),
        ("The final RF of 45 is enough", 45),
        ("- Output RF = `101`", 101),
        ("receptive field (RF) = 133", 133),
    ],
)
def test_rf_claims(line: str, value: int) -> None:
    assert [c.value for c in extract_claims([("README.md", line)]).receptive_field] == [value]


@pytest.mark.parametrize("line", ["total RF must be more than `44`", "RF > 44", "the RF should be at least 44"])
def test_rf_requirements_are_not_claims(line: str) -> None:
    assert extract_claims([("README.md", line)]).receptive_field == []


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("We reach an accuracy of 86.5%", 86.5),
        ("accuracy of 85.2", 85.2),
        ("Best test accuracy: 87.04%", 87.04),
        ("- Best testing accuracy = `86.08%`", 86.08),
        ("The model achieved 88.1% test accuracy", 88.1),
    ],
)
def test_accuracy_claims(line: str, value: float) -> None:
    assert [c.value for c in extract_claims([("README.md", line)]).accuracy] == [value]


@pytest.mark.parametrize(
    "line",
    [
        "achieve `85% accuracy`, as many epochs as you want",
        "Best training accuracy = `78.89%`",
        "target: 85% accuracy",
        "Train accuracy of 80.1%",
        'print(f"Accuracy: {100. * correct / total:.2f}%")',
    ],
)
def test_not_accuracy_claims(line: str) -> None:
    assert extract_claims([("README.md", line)]).accuracy == []


def test_readme_with_rf_table_summary_and_log() -> None:
    claims = extract_claims([("README.md", _readme("readme_claims"))])
    assert [(c.value, c.line, c.origin) for c in claims.params] == [(195000, 9, "text"), (159552, 31, "summary")]
    assert [(c.value, c.line, c.origin) for c in claims.receptive_field] == [(19, 19, "rf_table"), (101, 10, "text")]
    # the markdown-table log gives the log's best; the stated result is a separate claim
    assert [(c.value, c.line, c.origin) for c in claims.accuracy] == [(85.1, 44, "log"), (86.08, 50, "text")]
    assert claims.log_accuracies == {"README.md": [56.2, 68.75, 79.4, 85.1]}


def test_compare_flags_each_disagreement_with_its_size() -> None:
    claims = extract_claims([("README.md", _readme("readme_claims"))])
    out = compare(claims, {"params": 181942, "receptive_field": 133, "accuracy": 84.1})

    (params,) = _by_name(out, "params")
    assert params.flag and params.approximate
    assert params.difference == 181942 - 195000
    assert params.note == "README.md line 9 claims ~195K parameters but the model has 181,942 (−13,058, −7.2%)"

    (summary,) = _by_name(out, "summary_params")
    assert summary.flag
    assert summary.note == (
        "summary table in README.md line 31 is from a different model: it says 159,552, the model has 181,942 (+22,390)"
    )

    rf = {c.claimed: c for c in _by_name(out, "receptive_field")}
    assert rf[101].flag and rf[101].difference == 32
    assert rf[101].note == "README.md line 10 claims RF 101 but the graph gives 133 (+32)"
    assert rf[19].note == "the RF table in README.md ends at 19 (line 19) but the graph gives 133 (+114)"

    acc = {c.claimed: c for c in _by_name(out, "accuracy")}
    assert acc[86.08].flag and acc[86.08].difference == pytest.approx(-1.98)
    assert "the grader's training job reached 84.10% (−1.98 points)" in acc[86.08].note
    assert acc[85.1].flag  # the log's best is a claim too: 1.0 point from the grader's run

    (in_log,) = _by_name(out, "accuracy_in_log")
    assert in_log.flag
    assert in_log.note == (
        "README.md line 50 claims 86.08% but no epoch of the log in README.md shows it (best there 85.10%, −0.98 points)"
    )


def test_compare_tolerances() -> None:
    claims = extract_claims(
        [("README.md", "~180K params\nTotal Parameters: 181,942\nRF = 51\nBest test accuracy: 85.9%")]
    )
    out = compare(claims, {"params": 181942, "receptive_field": 51, "accuracy": 85.5, "accuracy_source": "checkpoint"})
    assert [(c.name, c.flag) for c in out] == [
        ("params", False),  # ~180K is within 2% of 181,942
        ("params", False),
        ("receptive_field", False),
        ("accuracy", False),  # 0.4 points: within 0.5
    ]
    assert "the submitted checkpoint scores 85.50%" in out[-1].note
    out = compare(claims, {"params": 181943, "receptive_field": 52, "accuracy": 85.3})
    assert [(c.name, c.flag) for c in out] == [
        ("params", False),
        ("params", True),  # an exact claim: any difference flags
        ("receptive_field", True),
        ("accuracy", True),
    ]


def test_compare_without_measurements_lists_claims_unflagged() -> None:
    claims = extract_claims([("README.md", "RF = 52\n195k parameters")])
    out = compare(claims, {})
    assert [(c.name, c.measured, c.flag) for c in out] == [("params", None, False), ("receptive_field", None, False)]
    assert out[1].note == "README.md line 1 claims RF 52 (not measured)"


def test_stated_accuracy_found_in_log_with_rounding() -> None:
    text = "Epoch 1 Val Acc: 70.12%\nEpoch 2 Val Acc: 86.08%\n\nFinal test accuracy: 86.1%\n"
    out = _by_name(compare(extract_claims([("README.md", text)]), {}), "accuracy_in_log")
    assert [(c.claimed, c.flag) for c in out] == [(86.1, False)]  # 86.1 is 86.08 rounded


def test_per_layer_rf_comments_compare_the_final_one() -> None:
    code = "nn.Conv2d(3, 16, 3)  # RF: 3\nnn.Conv2d(16, 32, 3)  # RF: 5\nnn.Conv2d(32, 32, 3, dilation=2)  # RF: 9\n"
    out = compare(extract_claims([("S6.ipynb cell 4", code)]), {"receptive_field": 9})
    assert [(c.claimed, c.flag) for c in out] == [(9, False)]


def test_summary_total_params() -> None:
    assert summary_total_params(_readme("readme_claims")) == 159552
    assert summary_total_params(_readme("readme_good")) == 181942
    assert summary_total_params("Total Parameters = 12") is None
    two = "Total params: 1,000\n...\nTotal params: 2,500\n"
    assert summary_total_params(two) == 2500  # the last table printed


def test_per_block_parameter_counts_are_not_claims_about_the_total():
    from grader.evidence.claims import extract_claims

    text = "C1 block: 2,784 parameters\nThe depthwise layer has 1,152 params\nTotal params: 195,794\nThe model has 195,794 parameters\n"
    claims = extract_claims([("README.md", text)])
    assert sorted({c.value for c in claims.params}) == [195794.0]
