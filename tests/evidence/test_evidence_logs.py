"""Training logs: every recognised format, runs, gaps, find_logs, the chosen log and the training_log verdict on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grader.checks_runner import CheckResult, run_checks
from grader.evidence.logs import (
    ChosenLog,
    EpochRecord,
    LogParse,
    choose_log,
    find_logs,
    parse_log,
    record_lines,
)
from grader.facts import Facts
from grader.rubric import load_rubric

FIXTURES = Path(__file__).parent / "fixtures"
LOGS = FIXTURES / "logs"


def _parse(name: str) -> LogParse:
    # As the submission's index reads it (grader.submission.Submission.text): line ends as written.
    return parse_log((LOGS / name).read_bytes().decode("utf-8", errors="replace"), name)


def _epochs(p: LogParse) -> list[tuple[int, float]]:
    return [(e.epoch, e.test_acc) for e in p.epochs]


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("pytorch_test.log", "pytorch_test_set", [(1, 49.92), (2, 62.4), (3, 71.05), (4, 86.08)]),
        ("log_bare_accuracy.txt", "bare_accuracy", [(1, 52.17), (2, 63.9), (3, 89.35)]),
        ("test_loss_equals.log", "test_loss_accuracy", [(1, 64.5), (2, 78.95), (3, 87.04)]),
        ("val_acc.log", "key_value", [(1, 62.4), (2, 74.85), (3, 91.03)]),
        ("test_epoch.log", "test_epoch", [(1, 55.1), (2, 70.66), (3, 88.38)]),
        ("tqdm_postfix.log", "tqdm_postfix", [(1, 60.5), (2, 75.2), (3, 84.1)]),
        ("history_fractions.csv", "csv", [(1, 55.3), (2, 70.04), (3, 82.15)]),
        ("metrics_percent.csv", "csv", [(1, 58.32), (2, 71.09), (3, 80.5), (4, 85.61)]),
        ("every_second_epoch.log", "pytorch_test_set", [(2, 76.0), (4, 82.0), (6, 88.0)]),
    ],
)
def test_each_log_format(name: str, fmt: str, expected: list[tuple[int, float]]) -> None:
    p = _parse(name)
    assert p.format == fmt
    assert _epochs(p) == expected
    assert p.source == name


def test_train_accuracy_is_kept_apart_from_test_accuracy() -> None:
    p = _parse("pytorch_test.log")
    # the tqdm bar `Loss=... Batch_id=390 Accuracy=38.12` is train accuracy, attached to the epoch
    assert [e.train_acc for e in p.epochs] == [38.12, 52.3, 61.77, 68.91]
    assert [e.test_loss for e in p.epochs] == [0.011, 0.0085, 0.0066, 0.4083]
    assert [e.line for e in p.epochs] == [4, 9, 14, 19]
    assert p.epochs[-1].raw == "Test set: Average loss: 0.4083, Accuracy: 8608/10000 (86.08%)"
    assert [e.train_acc for e in _parse("test_loss_equals.log").epochs] == [55.12, 71.4, 79.02]
    assert [e.train_acc for e in _parse("val_acc.log").epochs] == [52.1, 66.7, 78.2]
    assert [e.train_acc for e in _parse("tqdm_postfix.log").epochs] == [51.0, 67.4, 81.2]


def test_a_log_with_only_train_accuracy_has_no_epochs() -> None:
    p = _parse("train_only.log")
    assert p.epochs == []
    assert p.format == "none"


def test_fractions_become_percent_with_a_note() -> None:
    p = _parse("history_fractions.csv")
    assert [e.train_acc for e in p.epochs] == [44.12, 61.2, 73.01]
    assert any("fractions" in n for n in p.notes)


def test_tqdm_carriage_return_updates_keep_the_last_state() -> None:
    p = _parse("tqdm_postfix.log")
    assert p.epochs[0].raw.startswith("Epoch 1: 100%")
    assert p.epochs[0].line == 1


def test_several_runs_report_the_last_complete_one() -> None:
    p = _parse("two_runs.log")
    assert len(p.runs) == 3
    # the third run stopped after epoch 1 of 3: the last complete run is the second
    assert _epochs(p) == [(1, 55.5), (2, 70.25), (3, 86.5)]
    assert p.epochs[0].line == 6
    assert "3 runs in this log" in p.notes[0]
    assert "epochs 1–2 at lines 2–4" in p.notes[1] and "epochs 1–1 at lines 12–12" in p.notes[1]


def test_unnumbered_restart_not_possible_but_numbered_restart_splits() -> None:
    text = (
        "Epoch 1 Val Acc: 50%\nEpoch 2 Val Acc: 60%\nEpoch 1 Val Acc: 55%\nEpoch 2 Val Acc: 65%\nEpoch 3 Val Acc: 70%\n"
    )
    p = parse_log(text, "x.log")
    assert [len(r) for r in p.runs] == [2, 3]
    assert _epochs(p) == [(1, 55.0), (2, 65.0), (3, 70.0)]  # no totals printed: the last run


def test_keras_style_fraction_log() -> None:
    text = (
        "Epoch 1/2\n391/391 [====] - 25s 64ms/step - loss: 1.2 - accuracy: 0.55 - val_loss: 1.0 - val_accuracy: 0.62\n"
        "Epoch 2/2\n391/391 [====] - 25s 64ms/step - loss: 1.0 - accuracy: 0.65 - val_loss: 0.9 - val_accuracy: 0.70\n"
    )
    p = parse_log(text, "keras.log")
    assert _epochs(p) == [(1, 62.0), (2, 70.0)]
    assert [e.train_acc for e in p.epochs] == [55.0, 65.0]


def test_markdown_table_log_in_readme() -> None:
    p = parse_log((FIXTURES / "readme_claims" / "README.md").read_text(encoding="utf-8"), "README.md")
    assert p.format == "markdown_table"
    assert _epochs(p) == [(1, 56.2), (2, 68.75), (3, 79.4), (4, 85.1)]
    assert [e.train_acc for e in p.epochs] == [44.1, 60.35, 70.02, 75.66]
    assert [e.test_loss for e in p.epochs] == [1.21, 0.9, 0.62, 0.49]
    assert p.epochs[0].line == 41


def test_results_lines_around_a_pasted_log_are_not_epochs() -> None:
    p = parse_log((FIXTURES / "readme_good" / "README.md").read_text(encoding="utf-8"), "README.md")
    # "Best test accuracy: 86.08% (epoch 4)" under the log is a stated result, not a 5th epoch or a restart
    assert _epochs(p) == [(1, 55.31), (2, 72.2), (3, 83.1), (4, 86.08)]
    assert len(p.runs) == 1


def test_a_single_stated_result_is_not_a_log() -> None:
    assert parse_log("# Results\nTest Accuracy: 86.5%\n", "README.md").epochs == []
    assert parse_log("Accuracy: 86.5\n", "README.md").epochs == []


def test_record_lines_cover_log_lines_and_progress_bars() -> None:
    text = (LOGS / "pytorch_test.log").read_text(encoding="utf-8")
    lines = record_lines(text)
    assert {2, 4, 7, 9} <= lines  # train bars and test lines
    assert 1 not in lines  # "EPOCH: 1" is a header


# --- find_logs -----------------------------------------------------------------------------


def test_find_logs_reads_files_readme_and_notebook_outputs(tmp_path: Path) -> None:
    shutil.copy(LOGS / "pytorch_test.log", tmp_path / "train.log")
    shutil.copy(LOGS / "history_fractions.csv", tmp_path / "history.csv")
    shutil.copy(LOGS / "test_epoch.log", tmp_path / "log_run2.txt")
    (tmp_path / "notes.txt").write_text("Val Acc: 10%\nVal Acc: 20%\n")  # not a log file name
    shutil.copy(FIXTURES / "readme_claims" / "README.md", tmp_path / "README.md")
    (tmp_path / "nb").mkdir()
    shutil.copy(FIXTURES / "notebooks" / "in_order.ipynb", tmp_path / "nb" / "S6.ipynb")
    shutil.copy(FIXTURES / "notebooks" / "truncated.ipynb", tmp_path / "nb" / "broken.ipynb")
    for skipped in ("data", ".git", "venv"):
        (tmp_path / skipped).mkdir()
        shutil.copy(LOGS / "val_acc.log", tmp_path / skipped / "other.log")
    notes: list[str] = []
    parses = find_logs(tmp_path, notes)
    by_source = {p.source: p for p in parses}
    assert set(by_source) == {"train.log", "history.csv", "log_run2.txt", "README.md", "nb/S6.ipynb cell 4"}
    assert by_source["nb/S6.ipynb cell 4"].kind == "notebook"
    assert _epochs(by_source["nb/S6.ipynb cell 4"]) == [(1, 61.2), (2, 70.45), (3, 76.8)]
    assert by_source["README.md"].kind == "readme"
    assert by_source["train.log"].kind == "file"
    assert len(notes) == 1 and notes[0].startswith("nb/broken.ipynb: not valid JSON")


def test_find_logs_skips_big_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import grader.evidence.logs as logs

    shutil.copy(LOGS / "pytorch_test.log", tmp_path / "train.log")
    monkeypatch.setattr(logs, "MAX_LOG_BYTES", 100)
    notes: list[str] = []
    assert find_logs(tmp_path, notes) == []
    assert notes and "not read" in notes[0]


# --- the chosen log, and the training_log check's verdict on it ----------------------------


def _log(source: str, accs: list[float], start: int = 1) -> LogParse:
    recs = [EpochRecord(epoch=start + i, test_acc=a, line=10 + 5 * i, raw="") for i, a in enumerate(accs)]
    return LogParse(source=source, format="pytorch_test_set", epochs=recs, runs=[recs])


def training_log_verdict(parses: list[LogParse], target: float = 85.0) -> tuple[ChosenLog, CheckResult]:
    """The log chosen from ``parses`` (evidence's facts) and the training_log check's verdict on it."""
    log = choose_log(parses)
    rubric = load_rubric()
    rubric["rules"]["training_log"]["target"] = target
    facts = Facts(submission=Path("."), rubric=rubric)
    facts.evidence = {"chosen_log": log.to_dict()}
    result = next(r for r in run_checks(facts, rubric) if r.id == "training_log")
    result.passed = result.status == "passed"
    return log, result


def test_verdict_passes_and_says_where() -> None:
    log, v = training_log_verdict([_log("S6.ipynb cell 14", [70.0, 80.0, 86.08, 85.5])])
    assert v.passed and log.every_epoch and log.first_epoch_reaching(85.0) == 3
    assert (log.best_acc, log.best_epoch, log.epochs, log.lines) == (86.08, 3, 4, (10, 25))
    assert v.message == (
        "training log in S6.ipynb cell 14 (lines 10–25): 4 epochs, test accuracy after each, best 86.08% at epoch 3"
    )
    assert v.hint == ""


def test_verdict_tie_prefers_notebook_then_readme_then_file() -> None:
    parses = [_log("train.log", [70.0, 80.0]), _log("README.md", [71.0, 81.0]), _log("S6.ipynb cell 3", [72.0, 82.0])]
    log, _ = training_log_verdict(parses)
    assert log.source == "S6.ipynb cell 3"
    assert "preferred as notebook over README.md, train.log" in log.choice
    log, _ = training_log_verdict(parses[:2])
    assert log.source == "README.md"


def test_verdict_prefers_more_epochs_over_kind() -> None:
    log, v = training_log_verdict([_log("S6.ipynb cell 3", [70.0, 80.0]), _log("train.log", [60.0, 70.0, 86.0])])
    assert log.source == "train.log"
    assert v.passed


def test_verdict_gaps_fail_with_hint() -> None:
    p = _parse("every_second_epoch.log")
    log, v = training_log_verdict([p])
    assert not v.passed and not log.every_epoch
    assert log.missing_epochs == [1, 3, 5]
    assert "no test figure for epoch(s) 1, 3, 5" in v.message
    assert v.hint == "run the test/validation set after every epoch and keep the printed log"
    assert log.first_epoch_reaching(85.0) is not None  # 88% was reached, but not shown after every epoch


def test_verdict_below_target() -> None:
    log, v = training_log_verdict([_parse("tqdm_postfix.log")], target=85.0)
    assert not v.passed and log.every_epoch and log.first_epoch_reaching(85.0) is None
    assert v.hint == "the best test accuracy 84.10% is below the 85% target"


def test_verdict_zero_based_epochs_have_no_gap() -> None:
    log, v = training_log_verdict([_log("a.log", [80.0, 86.0], start=0)])
    assert log.missing_epochs == [] and v.passed


def test_verdict_without_logs() -> None:
    log, v = training_log_verdict([])
    assert not log.found and not v.passed
    assert "no training log" in v.message
    assert log.to_dict()["lines"] is None
