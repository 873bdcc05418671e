"""The training job end to end on a tiny generated dataset: trusted evaluation, early stop, checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from fixtures.data import make_image_folder
from fixtures.submissions import BASE, build
from grading import by_id, run_grade

from grader.sandbox import bubblewrap_works

FAST_RUBRIC = """
[rules.accuracy]
target = {target}

[training]
epochs = {epochs}
batch_size = 32
lr = 0.8  # scaled by batch_size/256: 0.1
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "tiny")


def rubric(tmp_path, target=50.0, epochs=6):
    path = tmp_path / "rubric.toml"
    path.write_text(FAST_RUBRIC.format(target=target, epochs=epochs))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """The base fixture trained until 50% (an easy target on this data), with early stop."""
    tmp = tmp_path_factory.mktemp("trained")
    code, results, out = run_grade(BASE, tmp / "out", "--train", "--data", str(data), "--rubric", rubric(tmp))
    return code, results, out, tmp / "out"


def test_training_reaches_the_target_and_stops_early(trained):
    _code, results, out, _ = trained
    training = results["facts"]["training"]
    assert training["source"] == "reproduced by the grader"
    assert training["error"] is None, training["error"]
    accuracy = by_id(results)["accuracy"]
    assert accuracy["status"] == "passed", out
    assert training["epochs_to_target"] == training["epochs_run"] < 6  # stopped as soon as it was reached
    assert training["stopped_early"] is True
    assert training["best_test_acc"] >= 50.0
    # Every figure is the trusted side's: test loss/accuracy per epoch, and the per-epoch table was printed.
    assert all({"test_acc", "test_loss", "train_loss", "lr", "seconds"} <= set(e) for e in training["epochs"])
    assert " epoch  train loss" in out
    assert training["curves_png"] and training["misclassified_png"]


def test_trained_weights_are_saved_and_reevaluate_to_the_same_accuracy(trained, data, tmp_path):
    _, results, _, out_dir = trained
    weights = out_dir / "trained.safetensors"
    assert weights.is_file()
    _code, again, _out = run_grade(
        BASE, tmp_path / "out", "--weights", str(weights), "--data", str(data), "--rubric", rubric(tmp_path)
    )
    training = again["facts"]["training"]
    assert training["source"] == "checkpoint accuracy"
    assert training["best_test_acc"] == pytest.approx(results["facts"]["training"]["epochs"][-1]["test_acc"], abs=0.01)
    assert "checkpoint accuracy" in by_id(again)["accuracy"]["message"]
    assert (
        "the accuracy of the submitted checkpoint, not reproduced by training"
        in (tmp_path / "out" / "report.html").read_text()
    )
    # Short of the target, the message speaks of the checkpoint, not of epochs the grader never ran.
    _code, missed, _out = run_grade(
        BASE, tmp_path / "out2", "--weights", str(weights), "--data", str(data), "--rubric", rubric(tmp_path, 101)
    )
    accuracy = by_id(missed)["accuracy"]
    assert accuracy["status"] == "failed" and "the submitted checkpoint's test accuracy is" in accuracy["message"]
    assert "epoch(s)" not in accuracy["message"] and "--train" in accuracy["hint"]


def test_a_state_dict_checkpoint_loads_weights_only(trained, data, tmp_path):
    from safetensors.torch import load_file

    _, results, _, out_dir = trained
    state = {"module." + k: v for k, v in load_file(str(out_dir / "trained.safetensors")).items()}  # DataParallel keys
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    _, again, _ = run_grade(
        BASE,
        tmp_path / "out",
        "--weights",
        str(tmp_path / "ckpt.pt"),
        "--data",
        str(data),
        "--rubric",
        rubric(tmp_path),
    )
    assert again["facts"]["training"]["best_test_acc"] == pytest.approx(
        results["facts"]["training"]["epochs"][-1]["test_acc"], abs=0.01
    )


def test_corrupt_and_mismatched_weights_are_typed_errors(trained, data, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00not a safetensors file" * 10)
    _, results, _ = run_grade(
        BASE, tmp_path / "a", "--weights", str(corrupt), "--data", str(data), "--rubric", rubric(tmp_path)
    )
    assert results["facts"]["training"]["error"]["type"] == "bad_checkpoint"
    assert by_id(results)["accuracy"]["status"] == "failed"
    # Weights of another model (wider C4) do not fit this graph.
    other = build("too_many_params", tmp_path / "other")
    _, _, _, out_dir = trained
    _, results, _ = run_grade(
        other,
        tmp_path / "b",
        "--weights",
        str(out_dir / "trained.safetensors"),
        "--data",
        str(data),
        "--rubric",
        rubric(tmp_path),
    )
    assert results["facts"]["training"]["error"]["type"] == "weights_mismatch"
    assert "c4.0.weight" in results["facts"]["training"]["error"]["message"]


def test_missing_data_skips_the_rule_in_one_line(tmp_path):
    code, results, _out = run_grade(BASE, tmp_path / "out", "--train", "--data", str(tmp_path / "nowhere"))
    accuracy = by_id(results)["accuracy"]
    assert accuracy["status"] == "skipped"
    assert "not an image-folder tree" in accuracy["message"]
    assert code == 0  # a rule not decided is not a failure


def blind_copy(sub):
    """The base fixture copied to ``sub`` with a model that cannot learn: its input is multiplied by 0."""
    shutil.copytree(BASE, sub)
    model = (
        (sub / "model.py")
        .read_text()
        .replace("x = self.c4(self.c3(self.c2(self.c1(x))))", "x = self.c4(self.c3(self.c2(self.c1(x * 0))))")
    )
    (sub / "model.py").write_text(model)
    return sub


def test_a_model_that_cannot_learn_fails_at_the_cap(data, tmp_path):
    sub = blind_copy(tmp_path / "blind")
    code, results, out = run_grade(
        sub, tmp_path / "out", "--train", "--data", str(data), "--rubric", rubric(tmp_path, epochs=2)
    )
    training = results["facts"]["training"]
    assert training["epochs_run"] == 2 and not training.get("stopped_early")
    accuracy = by_id(results)["accuracy"]
    assert accuracy["status"] == "failed" and "after 2 epoch(s)" in accuracy["message"], out
    assert code == 1


@pytest.mark.skipif(not bubblewrap_works(), reason="bubblewrap is not usable here: the test split cannot be hidden")
def test_the_student_code_cannot_read_the_test_split(data, tmp_path):
    sub = tmp_path / "snoop"
    shutil.copytree(BASE, sub)
    snoop = (
        "import os\n"
        f"TEST_DIR = {str(data / 'test')!r}\n"
        "try:\n    LEAKED = len(os.listdir(TEST_DIR)) > 0\nexcept OSError:\n    LEAKED = False\n"
        "if LEAKED:\n    raise RuntimeError('the test split is readable from the sandbox')\n"
    )
    (sub / "model.py").write_text(snoop + (sub / "model.py").read_text())
    _, results, out = run_grade(
        sub, tmp_path / "out", "--train", "--data", str(data), "--rubric", rubric(tmp_path, epochs=1)
    )
    assert results["error"] is None, results["error"]  # the probe could not read it either
    training = results["facts"]["training"]
    assert training["error"] is None and training["epochs_run"] == 1, (training["error"], out)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data):
    """The base fixture's 3-epoch schedule (the target out of reach), uninterrupted: the figures that
    a second run, a resumed run and a run that ignores a kept state must all give."""
    tmp = tmp_path_factory.mktemp("straight")
    _, results, out = run_grade(
        BASE, tmp / "out", "--train", "--data", str(data), "--rubric", rubric(tmp, target=101, epochs=3)
    )
    assert len(figures(results)) == 3, out[-1500:]
    return results


def test_the_same_submission_trains_to_the_same_figures(data, tmp_path, straight):
    """Reproducible on the CPU: every generator is seeded (init, data order, workers, albumentations)."""
    args = ["--train", "--data", str(data), "--rubric", rubric(tmp_path, target=101, epochs=3)]
    _, again, out = run_grade(BASE, tmp_path / "out", *args)
    assert figures(again) == figures(straight), out[-1500:]


EVIDENCE_RUBRIC = """
[rules.accuracy]
target = 99.0

[training]
epochs = 2
batch_size = 32
lr = 0.8
evidence_max_epochs = {ceiling}
"""


def blind_with_a_late_log(tmp_path):
    """A model that cannot learn, whose README log claims the target first at epoch 4 of 4."""
    sub = blind_copy(tmp_path / "late")
    readme = (sub / "README.md").read_text()
    start = readme.index("```\nEpoch 1")
    end = readme.index("```", start + 3) + 3
    log = "".join(
        f"Epoch {i}\nTest set: Average loss: 1.0, Accuracy: {a}/10000 ({a / 100:.2f}%)\n"
        for i, a in ((1, 2000), (2, 3000), (3, 4000), (4, 9950))
    )
    (sub / "README.md").write_text(readme[:start] + "```\n" + log + "```" + readme[end:])
    return sub


@pytest.mark.parametrize(
    "ceiling, args", [(3, ()), (0, ()), (3, ("--epochs", "2"))], ids=["ceiling3", "never", "explicit-epochs"]
)
def test_a_miss_the_students_log_contradicts_is_retrained_longer_within_the_ceiling(data, tmp_path, ceiling, args):
    """The planned 2 epochs miss; the log reached the target at epoch 4: one more schedule, capped at the
    ceiling; none when the rubric says never or the TA asked for an exact schedule with --epochs."""
    path = tmp_path / "rubric.toml"
    path.write_text(EVIDENCE_RUBRIC.format(ceiling=ceiling))
    code, results, out = run_grade(
        blind_with_a_late_log(tmp_path), tmp_path / "out", "--train", "--data", str(data), "--rubric", str(path), *args
    )
    training = results["facts"]["training"]
    attempts = training["attempts"]
    accuracy = by_id(results)["accuracy"]
    assert accuracy["status"] == "failed" and code == 1, out[-2000:]
    assert "points short of 99%" in accuracy["message"] and "student's own log" in accuracy["message"]
    if ceiling == 0 or args:
        assert [a["epochs_planned"] for a in attempts] == [2] and training["epochs_run"] == 2
        return
    assert [a["epochs_planned"] for a in attempts] == [2, 3]  # the log's epoch 4, capped at 3
    assert [a["epochs_run"] for a in attempts] == [2, 3] and training["epochs_run"] == 3
    assert "first reached 99% at epoch 4" in attempts[1]["why"] and "ceiling is 3" in attempts[1]["why"]
    assert training["hyp"]["epochs"] == 3
    assert training["compute_s"] >= attempts[0]["wall_s"] + attempts[1]["wall_s"] - 0.2
    assert "2 schedules tried" in accuracy["message"]
    assert "Schedules tried" in (tmp_path / "out" / "report.html").read_text()


def figures(results: dict) -> list[dict]:
    epochs = results["facts"]["training"]["epochs"]
    return [{k: e[k] for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")} for e in epochs]


def killed_after_first_epoch(args: list[str], out, schedules: int = 1) -> None:
    """A grading killed (SIGKILL, as a power cut would) once the given schedule has kept its first epoch."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "grader", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            kept = [json.loads(f.read_text()) for f in (out / "training_state").glob("*/epochs.json")]
            if len(kept) >= schedules and all(len(k["rows"]) >= 1 for k in kept):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the grading ended before it could be interrupted"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert kept, "no epoch was kept within 240 s"


def test_an_interrupted_grading_resumes_to_the_figures_of_an_uninterrupted_one(data, tmp_path, straight):
    """Killed after epoch 1 of 3, graded again: epochs 2 and 3 run, and every figure is the one an
    uninterrupted run gives; the kept state is gone once the results are written."""
    args = [str(BASE), "--train", "--data", str(data), "--rubric", rubric(tmp_path, target=101, epochs=3)]
    killed_after_first_epoch(args, tmp_path / "resumed")
    _, resumed, out = run_grade(BASE, tmp_path / "resumed", *args[1:])
    assert "resuming after epoch" in out, out[-1500:]
    assert out.index("resuming after epoch") < out.index(" epoch  train loss") < out.index("     1  ")
    assert figures(resumed) == figures(straight)
    assert resumed["facts"]["training"]["attempts"][0]["resumed_after_epoch"] >= 1
    assert by_id(resumed)["accuracy"]["status"] == by_id(straight)["accuracy"]["status"] == "failed"
    assert not (tmp_path / "resumed" / "training_state").exists()
    assert "was resumed after epoch" in (tmp_path / "resumed" / "report.html").read_text()


def test_a_run_kept_for_another_submission_is_not_resumed_and_outlives_this_grading(data, tmp_path):
    """The default ./grade-out is shared: a run kept there for another submission is named, not
    resumed, and still there (whole) once this grading has written its results."""
    other = tmp_path / "out" / "training_state" / "0123456789abcdef"
    other.mkdir(parents=True)
    kept = {"rows": [{"epoch": 1, "test_acc": 40.0}], "weights": None, "state": None, "complete": False}
    (other / "epochs.json").write_text(json.dumps(kept))
    args = ["--train", "--data", str(data), "--rubric", rubric(tmp_path, target=101, epochs=1)]
    _, results, out = run_grade(BASE, tmp_path / "out", *args)
    assert "not resumed" in out and "resuming" not in out, out[-1500:]
    assert len(figures(results)) == 1 and results["facts"]["training"]["attempts"][0]["resumed_after_epoch"] is None
    assert [p.name for p in (tmp_path / "out" / "training_state").iterdir()] == [other.name]
    assert json.loads((other / "epochs.json").read_text()) == kept


def test_a_corrupt_kept_state_is_a_typed_error_and_no_resume_trains_from_the_first_epoch(data, tmp_path, straight):
    """The child really starts from the kept state: a corrupt one fails the resumed grading with a
    typed error (and is dropped); --no-resume ignores a kept run altogether."""
    args = [str(BASE), "--train", "--data", str(data), "--rubric", rubric(tmp_path, target=101, epochs=3)]
    killed_after_first_epoch(args, tmp_path / "out")
    (state,) = (tmp_path / "out" / "training_state").glob("*/state_*.safetensors")
    state.write_bytes(b"not a safetensors file")
    _, results, out = run_grade(BASE, tmp_path / "out", *args[1:])
    training = results["facts"]["training"]
    assert training["error"]["type"] == "resume_failed", (training["error"], out[-1500:])
    assert "saved training state" in training["error"]["message"]
    assert by_id(results)["accuracy"]["status"] == "failed"
    assert not (tmp_path / "out" / "training_state").exists()

    killed_after_first_epoch(args, tmp_path / "out2")
    _, results, out = run_grade(BASE, tmp_path / "out2", *args[1:], "--no-resume")
    assert "resuming" not in out and figures(results) == figures(straight), out[-1500:]
    assert results["facts"]["training"]["attempts"][0]["resumed_after_epoch"] is None


def test_a_training_stopped_by_the_wall_clock_limit_resumes_when_graded_again(data, tmp_path, monkeypatch):
    """The time limit runs out in epoch 2 (the recipe's clock jumps after epoch 1's 7 batches): the
    training stops with a typed timeout and epoch 1 kept; grading again resumes after epoch 1."""
    import time as real_time
    from types import SimpleNamespace

    from grader.pipeline import GradeOptions, grade
    from grader.rubric import load_rubric
    from grader.training import recipe

    path = tmp_path / "rubric.toml"
    path.write_text(FAST_RUBRIC.format(target=101, epochs=3) + "\n[limits]\ntrain_seconds = 600\n")
    calls = {"n": 0}

    def monotonic() -> float:  # the deadline check runs once per batch: 7 batches an epoch here
        calls["n"] += 1
        return real_time.monotonic() + (10_000 if calls["n"] > 7 else 0)

    def options() -> GradeOptions:
        return GradeOptions(rubric=load_rubric(path), out_dir=tmp_path / "out", train=True, data=data)

    monkeypatch.setattr(recipe, "time", SimpleNamespace(monotonic=monotonic, perf_counter=real_time.perf_counter))
    first = grade(BASE, options())
    training = first["facts"]["training"]
    assert training["error"]["type"] == "timeout" and training["epochs_run"] == 1, training["error"]
    assert "stopped after 600 s (the time limit)" in training["error"]["message"]
    assert list((tmp_path / "out" / "training_state").glob("*/state_001.safetensors"))  # kept for a resume
    monkeypatch.setattr(recipe, "time", real_time)
    again = grade(BASE, options())
    training = again["facts"]["training"]
    assert training["attempts"][0]["resumed_after_epoch"] == 1
    assert training["epochs_run"] == 3 and training["error"] is None
    assert training["epochs"][0] == first["facts"]["training"]["epochs"][0]


def test_an_interrupted_longer_schedule_keeps_the_planned_one_and_resumes(data, tmp_path):
    """Killed in the second (longer) schedule: grading again takes the first as it ended, without
    training it, and resumes the second after its kept epoch."""
    path = tmp_path / "rubric.toml"
    path.write_text(EVIDENCE_RUBRIC.format(ceiling=3))
    sub = blind_with_a_late_log(tmp_path)
    killed_after_first_epoch([str(sub), "--train", "--data", str(data), "--rubric", str(path)], tmp_path / "out", 2)
    code, results, out = run_grade(sub, tmp_path / "out", "--train", "--data", str(data), "--rubric", str(path))
    training = results["facts"]["training"]
    attempts = training["attempts"]
    assert "schedule of 2 epochs: kept from an interrupted grading" in out, out[-2000:]
    assert [a["epochs_planned"] for a in attempts] == [2, 3] and [a["epochs_run"] for a in attempts] == [2, 3]
    assert attempts[0]["resumed_after_epoch"] == 2 and attempts[1]["resumed_after_epoch"] >= 1
    assert by_id(results)["accuracy"]["status"] == "failed" and code == 1
    assert not (tmp_path / "out" / "training_state").exists()


def test_a_run_begun_under_another_sandbox_is_not_resumed(data, tmp_path):
    """Killed under Landlock alone, graded again under bubblewrap: the probe that chose what is trained
    ran under another isolation, so the kept run is not this one's (the key holds the isolation)."""
    from layers import require

    require("landlock")
    require("bubblewrap")
    args = ["--train", "--data", str(data), "--rubric", rubric(tmp_path, target=101, epochs=3)]
    killed_after_first_epoch([str(BASE), *args, "--isolation", "landlock"], tmp_path / "out")
    _, results, out = run_grade(BASE, tmp_path / "out", *args, "--isolation", "bubblewrap")
    assert "not resumed" in out and "resuming" not in out, out[-1500:]
    assert "sandbox" in out.split("not resumed", 1)[1][:300]
    training = results["facts"]["training"]
    assert training["attempts"][0]["resumed_after_epoch"] is None and training["epochs_run"] == 3
