"""Evidence: what a submission shows about itself (README, training logs, notebooks, stated figures).

Trusted side.

Pure Python, read-only, nothing of the submission is executed. ``collect`` gathers everything into one
JSON-serializable dict for the report; the modules can be used on their own:

- ``notebooks``: read ``.ipynb`` files, execution order, the definitions module for notebook-only code
- ``logs``: per-epoch test accuracy from logs, README text and notebook outputs; the log chosen to stand
  for the training (the training_log check in ``checks/`` judges it)
- ``readme``: which parts the README shows, and whether its images exist
- ``claims``: stated params / RF / accuracy, compared with measured figures
"""

from __future__ import annotations

from pathlib import Path

from grader.evidence.claims import Claims, compare, extract_claims
from grader.evidence.logs import MAX_FILES, choose_log, find_logs, parse_log
from grader.evidence.notebooks import NotebookError
from grader.evidence.readme import analyze_readme, find_readme
from grader.submission import Submission, as_submission

__all__ = ["collect"]


def _comments(code: str) -> str:
    """Only the comments of a code cell, line numbers kept: code such as ``rf = 1`` or
    ``print(f"Accuracy: {100. * correct}")`` states nothing, while ``# RF: 45`` does."""
    return "\n".join(line[line.index("#") + 1 :] if "#" in line else "" for line in code.split("\n"))


def collect(source: Path | Submission, assignment_dir: Path | None = None, measured: dict | None = None) -> dict:
    """Everything the submission shows, as a JSON-serializable dict; never raises on bad input.

    Logs and notebooks are searched in ``assignment_dir`` when given (a repository often holds every
    session's work), else in ``root``. ``measured`` (params, receptive_field, accuracy, accuracy_source)
    adds ``comparisons`` of the claims with those figures. ``source`` is the submission's index (or
    its folder, walked once here).
    """
    sub = as_submission(source)
    root = sub.root
    scan = Path(assignment_dir) if assignment_dir is not None else root
    if not scan.is_absolute() and (root / scan).is_dir():  # a folder named relative to the submission
        scan = root / scan
    scan = scan.absolute()
    notes: list[str] = []
    result: dict = {"readme": None, "logs": [], "chosen_log": None, "claims": None, "notebooks": [], "notes": notes}

    assignment = scan if scan != root else None
    under = sub.relative(scan) if assignment is not None else ""
    try:
        result["readme"] = analyze_readme(sub, assignment).to_dict()
    except Exception as exc:  # the report must still come out
        notes.append(f"README could not be analysed: {type(exc).__name__}: {exc}")

    texts: list[tuple[str, str]] = []  # (source, text) for the claims
    readme_rel: str | None = None
    try:
        readme_rel = find_readme(sub, assignment)
        if readme_rel is not None:
            texts.append((readme_rel, sub.text(readme_rel)))
    except Exception as exc:
        notes.append(f"README could not be read: {type(exc).__name__}: {exc}")

    try:
        parses = find_logs(sub, notes, under=under)
        if readme_rel and texts and not any(p.source == readme_rel for p in parses):
            extra = parse_log(texts[0][1], readme_rel)  # a root README outside the assignment folder
            if extra.epochs:
                parses.append(extra)
        result["logs"] = [p.to_dict() for p in parses]
        result["chosen_log"] = choose_log(parses).to_dict()
    except Exception as exc:
        notes.append(f"logs could not be searched: {type(exc).__name__}: {exc}")

    try:
        for rel in sub.files(".ipynb", under=under)[:MAX_FILES]:
            try:
                nb = sub.notebook(rel)
            except NotebookError as exc:
                result["notebooks"].append({"path": rel, "error": str(exc)})
                continue
            summary = nb.to_dict()
            summary["path"] = rel
            result["notebooks"].append(summary)
            for cell in nb.cells:
                text = _comments(cell.source) if cell.kind == "code" else cell.source
                texts.append((f"{rel} cell {cell.index}", text))
                if cell.outputs_text:
                    texts.append((f"{rel} cell {cell.index} output", cell.outputs_text))
    except Exception as exc:
        notes.append(f"notebooks could not be read: {type(exc).__name__}: {exc}")

    for p in result["logs"]:
        if p["kind"] == "file":
            try:
                texts.append((p["source"], sub.text(p["source"])))
            except OSError as exc:
                notes.append(f"{p['source']}: cannot be read for claims ({exc.strerror or exc})")

    try:
        claims: Claims = extract_claims(texts)
        result["claims"] = claims.to_dict()
        if measured is not None:
            result["comparisons"] = [c.to_dict() for c in compare(claims, measured)]
    except Exception as exc:
        notes.append(f"claims could not be extracted: {type(exc).__name__}: {exc}")
    return result
