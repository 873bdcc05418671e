"""Find and parse training logs: per-epoch test (or validation) accuracy, wherever a student shows it.

Trusted side.

Each recogniser reads one family of real formats; ``parse_log`` keeps the one that finds the most
epochs. Train accuracy is never taken for test accuracy: a figure counts as test only when its key or
its line says test/val, or when it stands alone on a line (``Accuracy: 89.35`` after ``EPOCH: 5``).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from grader.evidence.notebooks import NotebookError, strip_ansi
from grader.submission import Submission

MAX_LOG_BYTES = 5 * 1024 * 1024
MAX_FILES = 300  # a repository with more candidate files than this is not worth reading in full
_KIND_RANK = {"notebook": 0, "readme": 1, "file": 2}  # tie-break order for choose_log

_NUM = r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?"
_PYTORCH_TEST = re.compile(
    r"(?:test|val|validation)\s+set\s*:\s*average\s+loss\s*:\s*(?P<loss>" + _NUM + r")\s*,\s*"
    r"accuracy\s*:\s*(?P<correct>\d+)\s*/\s*(?P<total>\d+)(?:\s*\(\s*(?P<pct>" + _NUM + r")\s*%\s*\))?",
    re.IGNORECASE,
)
_KEY_VALUE = re.compile(
    r"(?P<key>[A-Za-z][A-Za-z_ \-]{0,40}?)\s*(?:\(\s*%\s*\))?\s*[:=]\s*`?(?P<val>" + _NUM + r")\s*(?P<pct>%)?"
)
_EPOCH = re.compile(r"\bepoch\b\s*[:=#]?\s*\[?\s*(?P<n>\d+)(?:\s*(?:/|of)\s*(?P<total>\d+))?", re.IGNORECASE)
_PROGRESS = re.compile(r"\d+%\|| it/s|s/it|batch_id|\[\d+:\d+<", re.IGNORECASE)
_BARE_ACC = re.compile(r"^\s*(?:acc|accuracy)\s*[:=]\s*(?P<val>" + _NUM + r")\s*%?\s*$", re.IGNORECASE)
_TEST_WORDS = {"test", "testing", "val", "valid", "validation", "eval", "evaluation"}
_TRAIN_WORDS = {"train", "training"}
_RESULT_WORDS = re.compile(r"\b(?:best|highest|max|maximum|final|achieved|overall|peak)\b", re.IGNORECASE)
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


@dataclass
class EpochRecord:
    """One epoch's test figure as the log shows it."""

    epoch: int
    test_acc: float  # percent, 0-100
    line: int  # 1-based line in the text that was parsed
    raw: str
    test_loss: float | None = None
    train_acc: float | None = None


@dataclass
class LogParse:
    """What one source (file, README, notebook cell output) shows as a training log."""

    source: str
    format: str
    epochs: list[EpochRecord] = field(default_factory=list)  # the reported run
    runs: list[list[EpochRecord]] = field(default_factory=list)  # every run found, in order
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """'notebook', 'readme' or 'file': what kind of place the log was found in."""
        if ".ipynb" in self.source:
            return "notebook"
        return "readme" if Path(self.source.split(" ")[0]).name.lower().startswith("readme") else "file"

    @property
    def lines(self) -> tuple[int, int] | None:
        return (self.epochs[0].line, self.epochs[-1].line) if self.epochs else None

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "format": self.format,
            "epochs": [{"epoch": e.epoch, "test_acc": e.test_acc, "line": e.line} for e in self.epochs],
            "runs": len(self.runs),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------
# line-based recognisers
# ---------------------------------------------------------------------------------------------


def _tokens(key: str) -> list[str]:
    return [t for t in re.split(r"[\s_\-]+", key.strip().lower()) if t]


def _is_acc(tokens: list[str]) -> bool:
    return any(t.startswith("acc") for t in tokens)


def _visible_lines(text: str) -> list[str]:
    """Lines as a terminal shows them: of ``\\r``-overwritten progress updates only the last is kept."""
    out = []
    for line in strip_ansi(text).split("\n"):
        parts = [p for p in line.split("\r") if p.strip()]
        out.append(parts[-1] if parts else "")
    return out


@dataclass
class _LineHit:
    test_acc: float | None = None
    test_loss: float | None = None
    train_acc: float | None = None
    epoch: int | None = None
    total: int | None = None
    fmt: str = ""


def _read_line(line: str) -> _LineHit:
    """Classify the figures on one log line."""
    hit = _LineHit()
    if _RESULT_WORDS.search(line):  # "Best test accuracy: 86.08% at epoch 18" states a result, it is no log line
        return hit
    m = _EPOCH.search(line)
    if m:
        hit.epoch, hit.total = int(m["n"]), int(m["total"]) if m["total"] else None
    pt = _PYTORCH_TEST.search(line)
    if pt:
        correct, total = int(pt["correct"]), int(pt["total"])
        # the counts are exact; the printed percentage is often rounded to whole numbers
        hit.test_acc = round(100.0 * correct / total, 4) if total else float(pt["pct"] or 0)
        hit.test_loss = float(pt["loss"])
        hit.fmt = "pytorch_test_set"
        return hit
    bare = _BARE_ACC.match(line)
    if bare:
        hit.test_acc, hit.fmt = float(bare["val"]), "bare_accuracy"
        return hit
    stripped = line.strip().lower()
    lead = _tokens(re.split(r"[:=,|(\[]", stripped, maxsplit=1)[0])[:1]
    test_context = bool(lead) and lead[0] in _TEST_WORDS
    progress = bool(_PROGRESS.search(line))
    train_context = progress or (bool(lead) and lead[0] in _TRAIN_WORDS)
    pairs = [(m["key"], float(m["val"]), m["pct"]) for m in _KEY_VALUE.finditer(line)]
    plain_acc: float | None = None
    plain_loss: float | None = None
    for key, val, _pct in pairs:
        toks = _tokens(key)
        if not toks:
            continue
        has_test, has_train = bool(_TEST_WORDS & set(toks)), bool(_TRAIN_WORDS & set(toks))
        if toks[-2:] == ["test", "epoch"]:  # `Test_epoch : 88.38` (a student's print of test accuracy)
            hit.test_acc, hit.fmt = val, "test_epoch"
        elif toks[-2:] == ["train", "epoch"]:
            hit.train_acc = val
        elif _is_acc(toks) and has_test:
            hit.test_acc = val
            hit.fmt = "tqdm_postfix" if progress else "key_value"
        elif _is_acc(toks) and has_train:
            hit.train_acc = val
        elif _is_acc(toks) and len(toks) <= 2:
            plain_acc = val
        elif "loss" in toks and has_test:
            hit.test_loss = val
        elif toks[-1] == "loss" and not has_train:
            plain_loss = val
    if plain_acc is not None:
        if hit.test_acc is None and test_context and not progress:  # `Test : Loss = 0.38, Accuracy = 87.04%`
            hit.test_acc, hit.fmt = plain_acc, "test_loss_accuracy"
            hit.test_loss = hit.test_loss if hit.test_loss is not None else plain_loss
        elif hit.train_acc is None and (hit.test_acc is not None or train_context):
            # beside an explicit test figure or in a progress bar, an unqualified accuracy is the train one
            hit.train_acc = plain_acc
        # otherwise (an unlabeled accuracy on a busy line) it is ambiguous and not used
    return hit


def _records_from_lines(lines: list[str]) -> tuple[list[EpochRecord], dict[int, int], Counter[str], bool]:
    """Test records in order, stated epoch totals per record line, format counts, and whether any
    record had an epoch number shown."""
    records: list[EpochRecord] = []
    explicit: list[bool] = []
    totals: dict[int, int] = {}
    formats: Counter[str] = Counter()
    fmts: list[str] = []  # the recogniser of each record
    header_epoch: int | None = None
    header_total: int | None = None
    pending_train: float | None = None
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        hit = _read_line(line)
        if hit.test_acc is None:
            if hit.epoch is not None:
                header_epoch, header_total = hit.epoch, hit.total
            if hit.train_acc is not None:
                pending_train = hit.train_acc
            continue
        epoch, total = hit.epoch, hit.total
        if epoch is None and header_epoch is not None:
            epoch, total = header_epoch, header_total
        header_epoch = header_total = None  # a header numbers one test line only
        rec = EpochRecord(
            epoch=epoch if epoch is not None else -1,
            test_acc=hit.test_acc,
            line=no,
            raw=line.strip()[:300],
            test_loss=hit.test_loss,
            train_acc=hit.train_acc if hit.train_acc is not None else pending_train,
        )
        pending_train = None
        records.append(rec)
        explicit.append(epoch is not None)
        fmts.append(hit.fmt)
        if total:
            totals[no] = total
        formats[hit.fmt] += 1
    # A log prints every epoch the same way: figures in another format, or unnumbered ones inside a
    # numbered log, are stray lines around it (a results line under a pasted log), not epochs.
    if formats:
        main = formats.most_common(1)[0][0]
        numbered = sum(explicit) * 2 > len(explicit)
        keep = [f == main and (has or not numbered) for f, has in zip(fmts, explicit, strict=True)]
        records = [r for r, k in zip(records, keep, strict=True) if k]
        explicit = [e for e, k in zip(explicit, keep, strict=True) if k]
        formats = Counter({main: len(records)})
    _number(records, explicit)
    return records, totals, formats, any(explicit)


def _number(records: list[EpochRecord], explicit: list[bool]) -> None:
    """Epochs without a number shown follow the previous one (or count from 1)."""
    prev = 0
    for rec, has in zip(records, explicit, strict=True):
        if not has:
            rec.epoch = prev + 1
        prev = rec.epoch


# ---------------------------------------------------------------------------------------------
# table recognisers (markdown tables, CSV)
# ---------------------------------------------------------------------------------------------


def _columns(header: list[str]) -> dict[str, int]:
    """Which column holds epoch / test acc / train acc / test loss."""
    cols: dict[str, int] = {}
    for i, name in enumerate(header):
        toks = _tokens(re.sub(r"[^A-Za-z]+", " ", name))
        tset = set(toks)
        if "epoch" in tset or toks == ["ep"]:
            cols.setdefault("epoch", i)
        elif _is_acc(toks) and tset & _TEST_WORDS:
            cols.setdefault("test_acc", i)
        elif _is_acc(toks) and tset & _TRAIN_WORDS:
            cols.setdefault("train_acc", i)
        elif "loss" in tset and tset & _TEST_WORDS:
            cols.setdefault("test_loss", i)
        elif toks and set(toks) <= _TEST_WORDS:  # a column named just "Test" or "Val"
            cols.setdefault("test_plain", i)
    if "test_acc" not in cols and "test_plain" in cols:
        cols["test_acc"] = cols["test_plain"]
    return cols


def _number_cell(cell: str) -> float | None:
    m = re.search(_NUM, cell.replace(",", "").replace("`", ""))
    return float(m.group()) if m else None


def _rows_to_records(rows: list[tuple[int, list[str]]], cols: dict[str, int]) -> list[EpochRecord]:
    records: list[EpochRecord] = []
    explicit: list[bool] = []
    for no, cells in rows:

        def get(name: str, cells: list[str] = cells) -> float | None:
            i = cols.get(name)
            return _number_cell(cells[i]) if i is not None and i < len(cells) else None

        acc = get("test_acc")
        if acc is None:
            continue
        epoch = get("epoch")
        records.append(
            EpochRecord(
                epoch=int(epoch) if epoch is not None else -1,
                test_acc=acc,
                line=no,
                raw=" | ".join(cells)[:300],
                test_loss=get("test_loss"),
                train_acc=get("train_acc"),
            )
        )
        explicit.append(epoch is not None)
    _number(records, explicit)
    return records


def _markdown_tables(lines: list[str]) -> list[EpochRecord]:
    """Records from markdown tables with an epoch column (or row order) and a test/val accuracy column."""
    best: list[EpochRecord] = []
    i = 0
    while i < len(lines) - 1:
        if "|" in lines[i] and _TABLE_SEP.match(lines[i + 1]):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            cols = _columns(header)
            rows: list[tuple[int, list[str]]] = []
            j = i + 2
            while j < len(lines) and "|" in lines[j]:
                rows.append((j + 1, [c.strip() for c in lines[j].strip().strip("|").split("|")]))
                j += 1
            if "test_acc" in cols:
                recs = _rows_to_records(rows, cols)
                if len(recs) > len(best):
                    best = recs
            i = j
        else:
            i += 1
    return best


def _csv_records(text: str) -> list[EpochRecord]:
    """Records from CSV text with a header naming a test/val accuracy column."""
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    cols: dict[str, int] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if cols is None:
                found = _columns(row)
                if "test_acc" in found:
                    cols = found
                continue
            rows.append((reader.line_num, row))
    except csv.Error:
        pass  # a broken row ends the table; what came before still counts
    return _rows_to_records(rows, cols) if cols else []


# ---------------------------------------------------------------------------------------------
# parse_log
# ---------------------------------------------------------------------------------------------


def _split_runs(records: list[EpochRecord]) -> list[list[EpochRecord]]:
    """A falling epoch counter starts a new run; the same epoch again replaces (tqdm refreshes)."""
    runs: list[list[EpochRecord]] = []
    for rec in records:
        if runs and runs[-1] and rec.epoch == runs[-1][-1].epoch:
            runs[-1][-1] = rec
        elif not runs or rec.epoch < runs[-1][-1].epoch:
            runs.append([rec])
        else:
            runs[-1].append(rec)
    return runs


def _describe_run(run: list[EpochRecord]) -> str:
    return f"epochs {run[0].epoch}–{run[-1].epoch} at lines {run[0].line}–{run[-1].line}"


def parse_log(text: str, source: str) -> LogParse:
    """Per-epoch test accuracy from one text; ``source`` names it in every message.

    ``.csv`` sources are read as CSV; other text through markdown tables and the line recognisers,
    keeping whichever finds more epochs. Accuracies written as fractions (all ≤ 1) become percent.
    Several runs in one text (the epoch counter falls) are kept in ``runs``; ``epochs`` is the last run
    that is complete (reaches the ``Epoch i/N`` total when one is printed), and the others are noted.
    """
    notes: list[str] = []
    lines = _visible_lines(text)
    candidates: list[tuple[str, list[EpochRecord], dict[int, int], bool]] = []
    if source.lower().endswith(".csv"):
        candidates.append(("csv", _csv_records(text), {}, True))
    else:
        line_recs, totals, formats, numbered = _records_from_lines(lines)
        fmt = formats.most_common(1)[0][0] if formats else "none"
        candidates.append((fmt, line_recs, totals, numbered))
        candidates.append(("markdown_table", _markdown_tables(lines), {}, True))
    fmt, records, totals, numbered = max(candidates, key=lambda c: len(c[1]))
    if len(records) == 1 and not numbered:
        # One unnumbered figure is a stated result ("Test Accuracy: 86.5%"), not a log.
        records = []
    if records and all(r.test_acc <= 1.0 for r in records):
        for r in records:
            r.test_acc = round(r.test_acc * 100, 4)
            if r.train_acc is not None and r.train_acc <= 1.0:
                r.train_acc = round(r.train_acc * 100, 4)
        notes.append("accuracies are fractions (0–1); shown as percent")
    records = [r for r in records if 0.0 <= r.test_acc <= 100.0]
    if not records:
        return LogParse(source=source, format="none", notes=notes)
    runs = _split_runs(records)
    chosen = runs[-1]
    if len(runs) > 1:
        for run in reversed(runs):
            stated = [totals[r.line] for r in run if r.line in totals]
            if not stated or run[-1].epoch >= stated[-1] - (1 if run[0].epoch == 0 else 0):
                chosen = run
                break
        others = "; ".join(_describe_run(r) for r in runs if r is not chosen)
        notes.append(f"{len(runs)} runs in this log (the epoch counter restarts); reporting {_describe_run(chosen)}")
        notes.append(f"other runs: {others}")
    return LogParse(source=source, format=fmt, epochs=chosen, runs=runs, notes=notes)


# ---------------------------------------------------------------------------------------------
# find_logs
# ---------------------------------------------------------------------------------------------


def _is_log_name(name: str) -> bool:
    low = name.lower()
    return (
        low.endswith((".log", ".csv"))
        or (low.endswith(".txt") and "log" in low)
        or (low.endswith(".md") and low.startswith("readme"))
    )


def _candidates(sub: Submission, under: str) -> list[str]:
    found = [
        e.rel
        for e in sub.entries()
        if (not under or e.rel.startswith(under + "/"))
        and not e.in_data_dir
        and (_is_log_name(e.name) or e.suffix == ".ipynb")
    ]
    return found[:MAX_FILES]


def find_logs(source: Path | Submission, notes: list[str] | None = None, under: str = "") -> list[LogParse]:
    """Every training log in the submission: log/CSV files, README.md text and notebook cell outputs.

    ``source`` is the submission's index (or a folder, walked once here); only files in folder
    ``under`` are searched when it is given. Sources are named relative to the submission's root.
    Only parses that found at least one epoch are returned. Files that cannot be read are reported
    in ``notes`` (when given), never raised.
    """
    if not isinstance(source, Submission):
        source = Submission.scan(Path(source))
    sub = source
    notes = notes if notes is not None else []
    parses: list[LogParse] = []
    for rel in _candidates(sub, under):
        if rel.lower().endswith(".ipynb"):
            try:
                nb = sub.notebook(rel)
            except NotebookError as exc:
                notes.append(f"{rel}: {exc.reason}")
                continue
            for cell in nb.code_cells:
                if cell.outputs_text.strip():
                    p = parse_log(cell.outputs_text, f"{rel} cell {cell.index}")
                    if p.epochs:
                        parses.append(p)
            continue
        if sub.size(rel) > MAX_LOG_BYTES:
            notes.append(f"{rel}: larger than {MAX_LOG_BYTES // (1024 * 1024)} MB, not read")
            continue
        try:
            text = sub.text(rel)
        except OSError as exc:
            notes.append(f"{rel}: cannot be read ({getattr(exc, 'strerror', None) or exc})")
            continue
        p = parse_log(text, rel)
        if p.epochs:
            parses.append(p)
    return parses


# ---------------------------------------------------------------------------------------------
# the chosen log
# ---------------------------------------------------------------------------------------------


@dataclass
class ChosenLog:
    """The log that stands for the submission's training, as facts: which source and why, what it shows.

    Nothing here is judged against a target: the training_log check (``checks/test_evidence.py``) decides
    whether it shows enough, and the training job asks ``first_epoch_reaching`` for its own target.
    """

    found: bool
    source: str | None = None
    format: str | None = None
    choice: str = ""  # why this source and not another
    records: list[EpochRecord] = field(default_factory=list)  # the reported run, one record per epoch

    @property
    def epochs(self) -> int:
        return len(self.records)

    @property
    def missing_epochs(self) -> list[int]:
        """Epoch numbers with no test figure (a log starting at epoch 3 is missing 1 and 2; one at 0 is fine)."""
        if not self.records:
            return []
        numbers = {r.epoch for r in self.records}
        start = min(1, self.records[0].epoch)
        return [n for n in range(start, self.records[-1].epoch + 1) if n not in numbers]

    @property
    def every_epoch(self) -> bool:
        """At least two epochs, and a test figure after each (no gap in the numbering)."""
        return not self.missing_epochs and len(self.records) >= 2

    @property
    def best(self) -> EpochRecord | None:
        return max(self.records, key=lambda r: r.test_acc) if self.records else None

    @property
    def best_acc(self) -> float | None:
        return self.best.test_acc if self.best else None

    @property
    def best_epoch(self) -> int | None:
        return self.best.epoch if self.best else None

    @property
    def lines(self) -> tuple[int, int] | None:
        return (self.records[0].line, self.records[-1].line) if self.records else None

    def first_epoch_reaching(self, figure: float) -> int | None:
        """The first epoch whose test figure is at least ``figure`` (percent), or None."""
        return next((r.epoch for r in self.records if r.test_acc >= figure), None)

    def to_dict(self) -> dict:
        return {
            "found": self.found,
            "source": self.source,
            "format": self.format,
            "choice": self.choice,
            "epochs": self.epochs,
            "every_epoch": self.every_epoch,
            "missing_epochs": self.missing_epochs,
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "lines": list(self.lines) if self.lines else None,
            "records": [{"epoch": r.epoch, "test_acc": r.test_acc, "line": r.line} for r in self.records],
        }


def choose_log(parses: list[LogParse]) -> ChosenLog:
    """The most complete log: the source with the most epochs; on a tie a notebook output beats README
    text, which beats a log file (the notebook is what was run)."""
    usable = [p for p in parses if p.epochs]
    if not usable:
        return ChosenLog(found=False)
    ranked = sorted(usable, key=lambda p: (-len(p.epochs), _KIND_RANK[p.kind]))
    best = ranked[0]
    ties = [p.source for p in ranked[1:] if len(p.epochs) == len(best.epochs)]
    choice = f"chosen for the most epochs ({len(best.epochs)})"
    if ties:
        choice += f"; preferred as {best.kind} over " + ", ".join(ties)
    return ChosenLog(found=True, source=best.source, format=best.format, choice=choice, records=list(best.epochs))


def record_lines(text: str) -> set[int]:
    """Lines of ``text`` that any recogniser reads as log lines (when it finds at least two epochs).

    Claim extraction skips these, so a log line is never mistaken for a stated result.
    """
    lines = _visible_lines(text)
    found: set[int] = set()
    line_recs = _records_from_lines(lines)[0]
    table = _markdown_tables(lines)
    for recs in (line_recs, table):
        if len(recs) >= 2:
            found |= {r.line for r in recs}
    for no, line in enumerate(lines, start=1):
        if _PROGRESS.search(line):  # tqdm training bars carry a train accuracy, never a claim
            found.add(no)
    return found
