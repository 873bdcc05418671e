"""Rules on what the submission shows about itself: its training log and its README (Q&A 4 and 5)."""

from grader.checks_api import rule


@rule("training_log", points=25)
def test_training_log(facts, check):
    """The submission's own training log shows test accuracy after every epoch and reaches the target"""
    log = facts.need("evidence").get("chosen_log") or {}
    found = {k: log.get(k) for k in ("source", "format", "best_acc", "best_epoch", "missing_epochs", "lines")}
    if not log:
        check.fail("no training log found", **found)
    if not log.get("found"):
        check.fail(
            "no training log with a per-epoch test accuracy was found",
            hint="keep the training output in the notebook (do not clear outputs) or commit the log, "
            "with the test/validation accuracy printed after every epoch",
            **found,
        )
    message = describe_log(log)
    if not log.get("every_epoch"):
        missing = log.get("missing_epochs") or []
        check.fail(
            f"{message}; no test figure after epoch(s) {', '.join(map(str, missing[:10]))}",
            hint="run the test/validation set after every epoch and keep the printed log",
            **found,
        )
    target = float(check.rule["target"])
    if log["best_acc"] < target:
        check.fail(
            message, hint=f"the best test accuracy {log['best_acc']:.2f}% is below the {target:g}% target", **found
        )
    check.passed(message, **found)


def describe_log(log: dict) -> str:
    """What the chosen log shows, in one line: where, how many epochs, the gaps, the best figure."""
    n, missing = log["epochs"], log["missing_epochs"]
    if log["every_epoch"]:
        shown = "test accuracy after each"
    elif n < 2:
        shown = "only one epoch shown"
    else:
        shown = (
            "no test figure for epoch(s) " + ", ".join(str(e) for e in missing[:8]) + (" …" if len(missing) > 8 else "")
        )
    first, last = log["lines"]
    return (
        f"training log in {log['source']} (lines {first}–{last}): {n} epoch{'s' if n != 1 else ''}, {shown}, "
        f"best {log['best_acc']:.2f}% at epoch {log['best_epoch']}"
    )


@rule("readme", points=200)
def test_readme(facts, check):
    """README.md shows the model summary, model code, albumentations code, training log and results"""
    evidence = facts.need("evidence")
    readme = evidence.get("readme") or {}
    if not readme.get("path"):
        check.fail("no README.md found", hint="add a README.md with the summary, code, log and results")
    weights = dict(check.rule.get("parts", {})) or {p: 1 for p in readme.get("parts", {})}
    parts = readme.get("parts", {})
    missing = [name for name in weights if not parts.get(name, {}).get("found")]
    total = sum(weights.values()) or 1
    check.fraction = sum(w for name, w in weights.items() if name not in missing) / total
    # Every claim that disagrees with the measurement, the most certain first (exact figures, the
    # structural ones before accuracy, the largest differences first).
    order = {"receptive_field": 0, "summary_params": 1, "params": 2}
    flagged = [c for c in evidence.get("comparisons", []) if c.get("flag")]
    for comparison in sorted(flagged, key=lambda c: (order.get(c.get("name"), 3), -abs(c.get("relative") or 0))):
        check.warn(comparison.get("note", ""))
    broken = [img for img in readme.get("images", []) if img.get("exists") is False]
    shown = {name: parts.get(name, {}).get("lines") for name in weights}
    if missing or broken:
        reasons = []
        if missing:
            reasons.append("missing: " + ", ".join(name.replace("_", " ") for name in missing))
        if broken:
            reasons.append(
                "broken image link(s): " + ", ".join(f"{img['target']} (line {img['line']})" for img in broken[:5])
            )
            check.fraction = max(0.0, check.fraction - 0.05 * len(broken))
        check.fail(
            f"{readme['path']}: " + "; ".join(reasons),
            hint="the README answers the Q&A: paste the torchsummary output, the model and albumentations code, the log",
            shown=shown,
        )
    check.passed(f"{readme['path']} shows every part", shown=shown)
