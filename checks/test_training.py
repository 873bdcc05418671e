"""Rules on the augmentations, the GPU and the accuracy (Q&A 3 and 4, and the model code's GPU use)."""

from grader.checks.augmentations import judge
from grader.checks_api import rule, undecidable
from grader.training.source import REPRODUCED, from_checkpoint


@rule("augmentations", points=125)
def test_augmentations(facts, check):
    """Train transforms: HorizontalFlip, ShiftScaleRotate, CoarseDropout(1 hole, 16x16, filled with the mean)"""
    found = facts.need("aug")
    verdict = judge(found, check.rule)
    for warning in verdict.warnings:
        check.warn(warning)
    evidence = {
        "spelling": found.spelling,
        "meant": found.meant,
        "behaviour": found.behaviour,
        "value_space": found.value_space,
        "expected_fill": found.expected_fill,
        "suggestion": verdict.suggestion,
    }
    if verdict.notes:
        evidence["notes"] = verdict.notes
    if verdict.problems:
        credit = float(check.rule["unit_mistake_credit"])
        if verdict.unit_mistake and credit and all("fill" in p for p in verdict.problems):
            check.fraction = credit  # the rubric's partial credit: the mean meant, in the wrong units
            check.warn(f"partial credit ({credit:.0%}): the mean is right but in 0-1 units on a uint8 image")
        check.fail(
            verdict.problems[0] + (f" (and {len(verdict.problems) - 1} more)" if len(verdict.problems) > 1 else ""),
            hint=_aug_hint(verdict),
            problems=verdict.problems,
            **evidence,
        )
    if not found.trusted:
        undecidable(
            "the train pipeline holds transforms the grader cannot rebuild, and what the submission's process wrote "
            "about it is not believed: the augmentations are not decided",
            "transforms_build_failed",
        )
    check.passed(
        f"HorizontalFlip, ShiftScaleRotate and CoarseDropout ({found.spelling} spelling: 1 hole of 16x16 filled with the mean)",
        **evidence,
    )


ADD = {
    "HorizontalFlip": "A.HorizontalFlip(p=0.5)",
    "ShiftScaleRotate": "A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=15, p=0.5)",
    "CoarseDropout": "A.CoarseDropout(max_holes=1, max_height=16, max_width=16, min_holes=1, min_height=16, min_width=16, fill_value=<the dataset mean>, mask_fill_value=None)",
}


def _aug_hint(verdict) -> str:
    """A hint about the first problem: the transform that is missing, else the CoarseDropout fix."""
    first = verdict.problems[0]
    for name, call in ADD.items():
        if first.startswith(f"{name} is missing") or (f"{name} in the train pipeline is the submission's own" in first):
            return f"add albumentations' {call} to the train A.Compose"
    if first.startswith("ShiftScaleRotate is missing: A.Affine"):
        return f"use {ADD['ShiftScaleRotate']} (the assignment names it)"
    return verdict.suggestion or f"the assignment's CoarseDropout: {ADD['CoarseDropout']}"


@rule("gpu", points=15)
def test_gpu(facts, check):
    """The training code uses the GPU when there is one"""
    sources = facts.need("sources")
    if not sources.device_lines and not any(".cuda()" in line for line in sources.move_lines):
        check.fail(
            "no device selection found (torch.device('cuda'), torch.cuda.is_available(), .cuda())",
            hint="device = torch.device('cuda' if torch.cuda.is_available() else 'cpu'); model.to(device)",
        )
    if not sources.move_lines:
        check.fail(
            f"the device is chosen ({sources.device_lines[0]}) but nothing is moved to it",
            hint="move the model and each batch: model.to(device), data.to(device)",
        )
    check.passed(
        f"device chosen at {sources.device_lines[0] if sources.device_lines else sources.move_lines[0]}; moved at {sources.move_lines[0]}",
        device_lines=sources.device_lines[:5],
        move_lines=sources.move_lines[:5],
    )


@rule("accuracy", points=100)
def test_accuracy(facts, check):
    """At least {target:g}% test accuracy, measured by the grader's own training and evaluation"""
    training = facts.need("training")
    target = float(check.rule["target"])
    best = training.get("best_test_acc")
    for note in [*(training.get("notes") or []), training.get("pipeline_note")]:
        if note:
            check.warn(note)
    if facts.sandbox.get("isolation") == "landlock" and str(training.get("data", "")).startswith("image folder"):
        check.warn(
            "the submission's code ran under Landlock alone, which cannot hide names and sizes: it could see which "
            "files the --data folder holds (its splits, classes and image counts), though not read them"
        )
    if training.get("error"):
        err = training["error"]
        check.fail(f"the training job failed: {err['type']}: {err['message']}", hint=err.get("hint", ""))
    if best is None:
        check.fail("the training job reported no evaluated epoch")
    source = training.get("source", REPRODUCED)
    consistency = training.get("consistency") or {}
    if consistency.get("suspected") and best >= target:
        check.fail(
            f"memorisation suspected: the checkpoint's {consistency['summary']}",
            hint="a model that learned CIFAR-10 does about as well on flipped or shifted test images and on its own "
            "training images; train the model (grade with --train) instead of fitting the public test set",
            best=best,
            consistency=consistency,
        )
    if best < target and from_checkpoint(training):
        check.fail(
            f"the submitted checkpoint's test accuracy is {best:.2f}%: {target - best:.2f} points short of {target:g}%",
            hint="the checkpoint was evaluated as it is, not trained; grade with --train to train the model",
            best=best,
        )
    if best < target:
        message = f"best test accuracy {best:.2f}% after {training.get('epochs_run')} epoch(s) ({source}): {target - best:.2f} points short of {target:g}%"
        claim = (facts.evidence or {}).get("chosen_log") or {}
        shown = claim.get("best_acc") if claim.get("found") else None
        if shown is not None:
            message += (
                f"; the student's own log ({claim.get('source')}) shows {shown:.2f}% at epoch {claim.get('best_epoch')}"
            )
        if len(training.get("attempts") or []) > 1:
            message += f"; {len(training['attempts'])} schedules tried, {training.get('compute_s', 0):.0f} s in all"
        check.fail(
            message,
            hint="the grader trains with its own recipe; a model that learns faster reaches the target in fewer epochs"
            + (
                "; a TA can re-run with more epochs (--epochs, or [training] evidence_max_epochs)"
                # the log judged as the training_log rule judges it (its own target)
                if shown is not None and shown >= float(facts.rubric["rules"]["training_log"]["target"])
                else ""
            ),
            best=best,
        )
    reached = training.get("epochs_to_target")
    check.passed(
        f"{best:.2f}% test accuracy ({source})"
        + (f", target reached at epoch {reached} in {training.get('seconds_to_target', 0):.0f} s" if reached else "")
        + (f"; {consistency['summary']}" if consistency else ""),
        best=best,
        epochs_to_target=reached,
        **({"consistency": consistency} if consistency else {}),
    )
