"""What was graded, said first: the folder, the model, the pipeline, the README, the log, the mode.

Trusted side.
"""

from __future__ import annotations

from grader.training.source import from_checkpoint


def built_where(model: dict) -> str:
    """The entry point's line that built the trained model, and the line inside a helper when it differs
    (``train.py:37 via models/__init__.py:8``)."""
    entry, built = model.get("entry_at"), model.get("built_at")
    if entry and built and entry != built:
        return f"{entry} via {built}"
    return str(entry or built or "?")


def what_was_graded(results: dict) -> list[tuple[str, str]]:
    """(label, value) rows for the terminal and the report, from the results alone."""
    facts = results.get("facts") or {}
    disc = facts.get("discovery") or {}
    model = facts.get("model") or {}
    evidence = facts.get("evidence") or {}
    capture = facts.get("capture") or {}
    rows = [("folder", (disc.get("assignment_dir") or ".") + "/")]
    if model.get("class"):
        text = f"{model.get('file')}:{model['class']}"
        if model.get("assumed"):
            text += " (" + "; ".join(model["assumed"]) + ")"
        captured = model.get("captured") or {}
        if captured:
            arguments = captured.get("arguments") or "()"
            text += (arguments if arguments != "()" else "") + " (built by the training code"
            text += f" at {built_where(captured)})" if captured.get("built_at") else ")"
        rows.append(("model", text))
    transforms = facts.get("transforms") or {}
    if transforms.get("site"):
        text = transforms["site"]
        applied = capture.get("pipeline") or {}
        if applied.get("applied_at") and not applied.get("ignored"):
            text += f" (applied to the training images at {applied['applied_at']})"
        rows.append(("pipeline", text))
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
    if capture.get("tried"):
        rows.append(("captured", capture_line(capture)))
    if capture.get("disagreements"):
        static, differs = capture.get("static") or {}, capture.get("differs") or {"model": True, "pipeline": True}
        alone = [f"{k} {static.get(k) or 'none found'}" for k in ("model", "pipeline") if differs.get(k)]
        rows.append(("code alone", "; ".join(alone)))
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


def capture_line(capture: dict) -> str:
    """What the run of the student's own entry point settled, in one line (the entry point's own lines)."""
    tried = capture.get("tried") or []
    entry = capture.get("entry") or (tried[0]["entry"] if tried else "?")
    if capture.get("stopped"):
        at = capture.get("stopped_entry_at") or capture.get("stopped_at") or "?"
        text = f"{entry} run to its first {capture['stopped']} ({at})"
        if capture.get("stopped_at") and capture.get("stopped_entry_at") not in (None, capture.get("stopped_at")):
            text += f" in {capture['stopped_at']}"
        return text
    first = next((t for t in tried if t.get("entry") == entry), tried[0] if tried else {})
    status = first.get("status")
    found = ", the model it trains found" if capture.get("model") else ""
    if status == "timeout":
        return f"{entry} reached no training step in time{found}; the rest read from the code"
    if status in ("error", "exit"):
        where = f" at {first['where']}" if first.get("where") else ""
        return f"{entry} stopped{where} ({first.get('error') or status}){found}; the rest read from the code"
    if status == "missing":
        return f"{entry} is not there; read from the code"
    return f"{entry} ran to its end without an optimizer step{found}; read from the code"


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
