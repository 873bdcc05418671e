"""The class outputs, rebuilt from the student folders: grades.csv, results.json, index.html, Gradescope files.

Trusted side.

They are derived only from what is committed under DIR/<student>/, so a re-run after a crash rebuilds
them exactly, and each is replaced atomically.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.batch.inputs import Entry
from grader.batch.results import gradescope, now
from grader.batch.similarity import fingerprint, group_similar
from grader.batch.store import Store, write_atomic
from grader.results import status_of
from grader.rubric import max_score
from grader.training.source import from_checkpoint

CLASS_SCHEMA = "s6-grader/batch/1"
HISTOGRAM_BINS = 10
FIXED_COLUMNS = [
    "student",
    "status",
    "score",
    "max_score",
    "bonus",
    "total",
    "error_type",
    "mode",
    "decided_max",
    "train_epochs",
    "train_s",
    "problems",
]
TAIL_COLUMNS = ["arch_group", "content_hash", "source"]
# What training the student cost, over every schedule (blank when the grader did not train it): last, so
# that every older column keeps its place.
COMPUTE_KEYS = ("epochs", "images", "seconds")
COMPUTE_COLUMNS = [f"compute:{key}" for key in COMPUTE_KEYS]
# Column labels of the class table (the full title is the column's tooltip): it must fit a laptop.
SHORT = {
    "no_maxpool": "pool",
    "architecture": "arch",
    "receptive_field": "RF",
    "depthwise_separable": "DW",
    "dilated": "dil",
    "gap": "GAP",
    "gpu": "GPU",
    "params": "params",
    "augmentations": "aug",
    "accuracy": "acc",
    "training_log": "log",
    "readme": "README",
    "bonus": "bonus",
}
QUESTIONS = ("model code", "torchsummary output", "albumentations code", "training log", "README")


@dataclass
class ClassTable:
    rules: list[dict]  # {id, title, max_points, extra}
    rows: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)


def build_table(store: Store, entries: list[Entry], rubric: dict, max_edits: int = 2) -> ClassTable:
    """One row per student of the input, in input order; students without a result are ``not_graded``."""
    everyone = {e.student: store.results(e.student) for e in entries}
    rules = _rules(rubric, [r for r in everyone.values() if r])
    prints = {}
    for student, results in everyone.items():
        if results:
            graph = _read_json(store.root / student / "graph.json")
            transforms = ((results.get("facts") or {}).get("transforms") or {}).get("to_dict")
            prints[student] = fingerprint(graph, transforms)
    groups = group_similar(prints, max_edits)
    group_of = {s: g["id"] for g in groups for s in g["students"]}
    table = ClassTable(rules=rules, groups=groups)
    for entry in entries:
        table.rows.append(_row(entry, everyone[entry.student], rules, group_of.get(entry.student, "")))
    return table


def _rules(rubric: dict, results: list[dict]) -> list[dict]:
    """The rubric's rules in its order, then any other check a course added; titles from the checks."""
    titles: dict[str, str] = {}
    seen: dict[str, dict] = {}
    for r in results:
        for check in r.get("checks", []):
            seen.setdefault(check["id"], check)
            if check.get("status") != "error" or check["id"] not in titles:
                titles[check["id"]] = check.get("title") or check["id"]
    ids = list(rubric["rules"]) + sorted(set(seen) - set(rubric["rules"]))
    out = []
    for rule_id in ids:
        rule = rubric["rules"].get(rule_id, {})
        check = seen.get(rule_id, {})
        out.append(
            {
                "id": rule_id,
                "title": titles.get(rule_id, rule_id.replace("_", " ")),
                "max_points": int(rule.get("points", check.get("max_points", 0))),
                "extra": bool(rule.get("extra", check.get("extra", False))),
                "question": str(rule.get("question", check.get("question", ""))),
                "short": SHORT.get(rule_id, rule_id if len(rule_id) <= 10 else rule_id[:9] + "…"),
            }
        )
    return out


def _row(entry: Entry, results: dict | None, rules: list[dict], group: str) -> dict[str, Any]:
    if results is None:
        return {
            "student": entry.student,
            "status": "not_graded",
            "score": None,
            "max_score": None,
            "bonus": None,
            "total": None,
            "error_type": "",
            "error_message": "",
            "rules": {},
            "statuses": {},
            "undecided": {},
            "arch_group": group,
            "content_hash": "",
            "source": entry.describe(),
            "report": None,
        }
    checks = {c["id"]: c for c in results.get("checks", [])}
    error = results.get("error") or {}
    score = float(results.get("score", 0) or 0)
    bonus = float(results.get("bonus", 0) or 0)
    decided = [c for c in checks.values() if c.get("status") != "skipped" and not c.get("extra")]
    problems = [
        f"{c['id']}: {_short(c.get('message', ''))}"
        for c in checks.values()
        if c.get("status") in ("failed", "error") and not c.get("extra")
    ]
    questions = {q: sum(c.get("points", 0) for c in checks.values() if c.get("question") == q) for q in QUESTIONS}
    training = (results.get("facts") or {}).get("training") or {}
    attempts = training.get("attempts") or []
    return {
        # What the student cost: every epoch trained, over every schedule, and its seconds.
        "train_epochs": sum(a.get("epochs_run", 0) for a in attempts) if attempts else training.get("epochs_run", ""),
        "train_s": training.get("compute_s", training.get("wall_s", "")),
        "compute": {key: (training.get("compute") or {}).get(key) for key in COMPUTE_KEYS},
        "student": entry.student,
        "status": status_of(results),
        "mode": _mode(results),
        "decided_max": sum(c.get("max_points", 0) for c in decided),
        "problems": "; ".join(problems),
        "questions": questions,
        "score": score,
        "max_score": results.get("max_score"),
        "bonus": bonus,
        "total": score + bonus,
        "error_type": error.get("type", ""),
        "error_message": error.get("message", ""),
        # A rule not decided in this run is blank, not 0.
        "rules": {
            r["id"]: c.get("points", 0) for r in rules if (c := checks.get(r["id"])) and c.get("status") != "skipped"
        },
        "statuses": {r["id"]: checks[r["id"]].get("status", "") for r in rules if r["id"] in checks},
        # A rule the grader could not decide (status error): the index says so instead of a 0 in red.
        "undecided": {
            r["id"]: _short(c.get("message", ""))
            for r in rules
            if (c := checks.get(r["id"])) and c.get("status") == "error"
        },
        "arch_group": group,
        "content_hash": (results.get("submission") or {}).get("hash") or "",
        "source": entry.describe(),
        "report": f"{entry.student}/report.html",
    }


def grades_csv(table: ClassTable) -> str:
    """The gradebook: one row per student; per rule its points (blank when not decided) and its
    status (passed/failed/error/skipped); per question of the assignment its total; the mode, the
    maximum of the rules decided, and the failing rules with a short reason; last what training the
    student cost (blank when not trained)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    per_rule_header = [h for r in table.rules for h in (rule_column(r["id"]), status_column(r["id"]))]
    writer.writerow(FIXED_COLUMNS + [f"q:{q}" for q in QUESTIONS] + per_rule_header + TAIL_COLUMNS + COMPUTE_COLUMNS)
    for row in table.rows:
        fixed = [_fmt(row.get(c, "")) for c in FIXED_COLUMNS]
        questions = [_fmt((row.get("questions") or {}).get(q, "")) for q in QUESTIONS]
        per_rule = [
            v for r in table.rules for v in (_fmt(row["rules"].get(r["id"], "")), row["statuses"].get(r["id"], ""))
        ]
        tail = [_fmt(row.get(c, "")) for c in TAIL_COLUMNS]
        compute = [_fmt((row.get("compute") or {}).get(key)) for key in COMPUTE_KEYS]
        writer.writerow(fixed + questions + per_rule + tail + compute)
    return buffer.getvalue()


def status_column(rule_id: str) -> str:
    return f"status:{rule_id}"


def _mode(results: dict) -> str:
    training = (results.get("facts") or {}).get("training") or {}
    if from_checkpoint(training):
        return "checkpoint"
    return "trained" if training else "no-train"


def _short(message: str, limit: int = 80) -> str:
    first = message.split(". ")[0].strip()
    return first if len(first) <= limit else first[: limit - 1] + "…"


def rule_column(rule_id: str) -> str:
    """``rule:<id>``: a rule may be called like a fixed column (the bonus rule and the bonus total)."""
    return f"rule:{rule_id}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def rule_stats(table: ClassTable) -> list[dict]:
    """Per rule: how many passed / failed / error / skipped, and the pass rate among the graded."""
    graded = [r for r in table.rows if r["status"] != "not_graded"]
    stats = []
    for rule in table.rules:
        counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        for row in graded:
            status = row["statuses"].get(rule["id"])
            if status in counts:
                counts[status] += 1
        decided = counts["passed"] + counts["failed"] + counts["error"]
        stats.append(rule | counts | {"rate": counts["passed"] / decided if decided else None})
    return stats


def histogram(table: ClassTable, top: float, bins: int = HISTOGRAM_BINS) -> list[dict]:
    """Score counts in ``bins`` equal bins over [0, top]; the last bin includes ``top``."""
    width = (top or 1) / bins
    out = [{"lo": i * width, "hi": (i + 1) * width, "count": 0} for i in range(bins)]
    for row in table.rows:
        if row["status"] == "not_graded":
            continue
        index = min(bins - 1, max(0, int(row["score"] // width)))
        out[index]["count"] += 1
    return out


def class_results(table: ClassTable, store: Store, rubric: dict) -> dict:
    students = []
    for row in table.rows:
        full = store.results(row["student"]) if row["status"] != "not_graded" else None
        students.append({k: v for k, v in row.items() if k != "statuses"} | {"results": full})
    return {
        "schema": CLASS_SCHEMA,
        "generated_at": now(),
        "rubric": rubric["course"].get("name", ""),
        "max_score": max_score(rubric),
        "counts": counts(table),
        "rules": rule_stats(table),
        "similar_groups": table.groups,
        "students": students,
    }


def counts(table: ClassTable) -> dict[str, int]:
    out = {"students": len(table.rows), "passed": 0, "failed": 0, "error": 0, "not_graded": 0}
    for row in table.rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
    return out


def render_index(table: ClassTable, rubric: dict) -> str:
    from grader.report.html import environment

    top = max_score(rubric)
    bins = histogram(table, top)
    return (
        environment()
        .get_template("index.html.j2")
        .render(
            course=rubric["course"].get("name", ""),
            generated_at=now(),
            max_score=top,
            rules=table.rules,
            rows=table.rows,
            stats=rule_stats(table),
            counts=counts(table),
            bins=bins,
            bin_max=max([b["count"] for b in bins] + [1]),
            groups=table.groups,
        )
    )


def write_class_outputs(
    store: Store, entries: list[Entry], rubric: dict, formats: set[str], max_edits: int = 2
) -> ClassTable:
    """grades.csv, results.json and index.html in DIR, and the Gradescope files when asked for."""
    table = build_table(store, entries, rubric, max_edits)
    write_atomic(store.root / "grades.csv", grades_csv(table))
    write_atomic(store.root / "results.json", json.dumps(class_results(table, store, rubric), indent=1, default=str))
    write_atomic(store.root / "index.html", render_index(table, rubric))
    if "gradescope" in formats:
        for row in table.rows:
            results = store.results(row["student"]) if row["status"] != "not_graded" else None
            if results is not None:
                path = store.root / row["student"] / "gradescope" / "results.json"
                write_atomic(path, json.dumps(gradescope(results), indent=1))
    return table


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
