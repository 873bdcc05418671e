"""What was graded, said first: the folder, the model, the pipeline, the README, the log, the mode.

Trusted side.
"""

from __future__ import annotations

from grader.training.source import from_checkpoint


def what_was_graded(results: dict) -> list[tuple[str, str]]:
    """(label, value) rows for the terminal and the report, from the results alone."""
    facts = results.get("facts") or {}
    disc = facts.get("discovery") or {}
    model = facts.get("model") or {}
    evidence = facts.get("evidence") or {}
    rows = [("folder", (disc.get("assignment_dir") or ".") + "/")]
    if model.get("class"):
        text = f"{model.get('file')}:{model['class']}"
        if model.get("assumed"):
            text += " (" + "; ".join(model["assumed"]) + ")"
        rows.append(("model", text))
    transforms = facts.get("transforms") or {}
    if transforms.get("site"):
        rows.append(("pipeline", transforms["site"]))
    readme = (evidence.get("readme") or {}).get("path")
    rows.append(("README", readme or "none found"))
    chosen = evidence.get("chosen_log") or evidence.get("log_verdict") or {}  # log_verdict: an older results.json
    log = chosen.get("source")
    rows.append(("training log", log or "none found"))
    training = facts.get("training") or {}
    if from_checkpoint(training):
        mode = "a submitted checkpoint evaluated on the test split"
    elif training:
        mode = f"trained by the grader on {training.get('device', '?')}"
    else:
        mode = "without training (accuracy not decided)"
    rows.append(("mode", mode))
    sandbox = facts.get("sandbox") or {}
    if sandbox.get("isolation"):
        rows.append(
            (
                "isolation",
                sandbox["isolation"]
                + (
                    " + Landlock"
                    if (sandbox.get("probe") or {}).get("landlock_abi") and sandbox["isolation"] == "bubblewrap"
                    else ""
                ),
            )
        )
    return rows


def student_view(results: dict) -> dict:
    """The results as the student's report shows them: rules the rubric marks hidden left out.

    They still ran; ``results.json`` and the TA's gradebook keep them (``visibility = "hidden"``).
    """
    checks = results.get("checks") or []
    hidden = [c for c in checks if c.get("visibility") == "hidden"]
    if not hidden:
        return results
    visible = [c for c in checks if c.get("visibility") != "hidden"]
    view = dict(results)
    view["checks"] = visible
    view["score"] = round(sum(c["points"] for c in visible if not c.get("extra")), 2)
    view["max_score"] = sum(c["max_points"] for c in visible if not c.get("extra"))
    view["hidden_rules"] = len(hidden)
    return view
