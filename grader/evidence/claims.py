"""What a student claims (parameter count, receptive field, best accuracy) beside what was measured.

Trusted side.

Claims are read from README, notebook and log text. The assignment's own requirements, which
students often copy ("less than 200k", "RF must be more than 44", "achieve 85%"), are not claims.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from grader.evidence.logs import parse_log, record_lines

PARAMS_APPROX_TOLERANCE = 0.02  # "~195K" is a rounded figure: within 2% counts as the same
ACCURACY_TOLERANCE = 0.5  # percentage points

_NOT_A_CLAIM = re.compile(
    r"less\s+than|fewer|under\b|below|within|limit|at\s+most|up\s*to|must|should|maximum|\bmax\b|"
    r"not\s+exceed|to\s+be\b|more\s+than|greater|at\s+least|above|exceed|target|goal|require|need|"
    r"\baim|expected|\bachieve\b|[<>≤≥]",
    re.IGNORECASE,
)
_SUMMARY_TOTAL = re.compile(r"^\s*total\s+params\s*:\s*(?P<n>[\d,]+)", re.IGNORECASE)
_APPROX = r"(?P<approx>~|≈|about|around|approx\.?|approximately|roughly|nearly)?\s*"
_COUNT = r"(?P<n>\d[\d,]*(?:\.\d+)?)\s*(?P<suffix>[kKmM]\b)?"
_PARAMS_AFTER = re.compile(
    r"(?P<ctx>(?:total\s+)?(?:number\s+of\s+)?(?:model\s+)?param(?:eter)?s?(?:\s+count)?)\s*"
    r"(?:[:=]|\bis\b|\bare\b|\bof\b)?\s*" + _APPROX + _COUNT,
    re.IGNORECASE,
)
_PARAMS_BEFORE = re.compile(
    _APPROX + _COUNT + r"\s*(?:total\s+)?(?:trainable\s+)?(?P<ctx>param(?:eter)?s)\b", re.IGNORECASE
)
_RF = re.compile(
    r"\b(?P<kw>rf|r\.f\.|receptive[\s_-]*field)\b(?P<mid>[^0-9\n|]{0,25}?)(?P<val>\d+(?:\.\d+)?)", re.IGNORECASE
)
_ACC_AFTER = re.compile(
    r"\b(?:acc|accuracy)\b(?P<mid>[^0-9\n|]{0,30}?)(?P<val>\d{1,3}(?:\.\d+)?)\s*(?P<pct>%)?", re.IGNORECASE
)
_ACC_BEFORE = re.compile(
    r"(?P<val>\d{1,3}(?:\.\d+)?)\s*%\s*(?P<mid>[^0-9\n|]{0,25}?)\b(?:acc|accuracy)\b", re.IGNORECASE
)
_TRAIN = re.compile(r"\btrain(?:ing)?\b|\bloss\b", re.IGNORECASE)


@dataclass
class Claim:
    """One figure a student states, where it was stated."""

    value: float
    source: str
    line: int
    raw: str
    approximate: bool = False
    origin: str = "text"  # 'text', 'summary' (a torchsummary/torchinfo total), 'rf_table', 'log'
    figure: str = ""  # the figure as written ("~195K"), for messages


@dataclass
class Claims:
    params: list[Claim] = field(default_factory=list)
    receptive_field: list[Claim] = field(default_factory=list)
    accuracy: list[Claim] = field(default_factory=list)
    log_accuracies: dict[str, list[float]] = field(default_factory=dict)  # log source -> test accuracies shown

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClaimComparison:
    """A claimed figure beside the measured one; ``flag`` when they differ beyond the tolerance."""

    name: str  # 'params', 'summary_params', 'receptive_field', 'accuracy', 'accuracy_in_log'
    claimed: float
    measured: float | None
    difference: float | None  # measured - claimed
    relative: float | None  # difference / measured
    flag: bool
    note: str
    source: str
    line: int
    raw: str
    approximate: bool = False
    measured_by: str = ""  # 'graph', 'grader', 'checkpoint', 'log'

    def to_dict(self) -> dict:
        return asdict(self)


def _clean(line: str) -> str:
    # Markdown emphasis and inline code wrap figures in real READMEs: "Output RF = `101`", "**86.5%**".
    return line.replace("`", "").replace("*", "")


def _is_table_row(line: str) -> bool:
    return line.count("|") >= 2


def _count(m: re.Match[str]) -> tuple[float, bool] | None:
    text, suffix = m["n"].replace(",", ""), (m["suffix"] or "").lower()
    try:
        value = float(text)
    except ValueError:
        return None
    approx = bool(m["approx"]) or bool(suffix)
    value *= {"k": 1e3, "m": 1e6}.get(suffix, 1.0)
    if value < 1000:  # "Param #", "5 params per ..." - not a model total
        return None
    return value, approx


# A count next to a layer or block word, without "total", is that part's count, not the model's.
_PART = re.compile(
    r"\b(conv\w*|block|layer|c[1-4]|depthwise|pointwise|dilated|batchnorm|bn|linear|fc|kernel|per)\b", re.I
)


def _params_claims(line: str, source: str, no: int) -> list[Claim]:
    low = line.strip().lower()
    m = _SUMMARY_TOTAL.match(line)
    if m:
        return [Claim(float(m["n"].replace(",", "")), source, no, line.strip(), origin="summary")]
    if low.startswith(("trainable params", "non-trainable params")) or "params size" in low:
        return []
    if _PART.search(low) and "total" not in low:
        return []
    out: list[Claim] = []
    for rx in (_PARAMS_AFTER, _PARAMS_BEFORE):
        for m in rx.finditer(line):
            before = line[max(0, m.start() - 30) : m.start("n")]
            if _NOT_A_CLAIM.search(before):
                continue
            got = _count(m)
            if got and all(c.value != got[0] for c in out):
                figure = line[
                    m.start("approx") if m["approx"] else m.start("n") : m.end("suffix") if m["suffix"] else m.end("n")
                ]
                out.append(Claim(got[0], source, no, line.strip(), approximate=got[1], figure=figure.strip()))
    return out


def _rf_claims(line: str, source: str, no: int) -> list[Claim]:
    out = []
    for m in _RF.finditer(line):
        if (
            "{" in m["mid"]
            or _NOT_A_CLAIM.search(m["mid"])
            or _NOT_A_CLAIM.search(line[max(0, m.start() - 15) : m.start()])
        ):
            continue
        value = float(m["val"])
        if 1 <= value <= 5000:
            out.append(Claim(value, source, no, line.strip()))
    return out


def _acc_claims(line: str, source: str, no: int) -> list[Claim]:
    out: list[Claim] = []
    for rx in (_ACC_AFTER, _ACC_BEFORE):
        for m in rx.finditer(line):
            context = line[max(0, m.start() - 40) : m.start()] + m["mid"]
            if _TRAIN.search(context) or _NOT_A_CLAIM.search(context) or "{" in m["mid"]:
                continue  # train figures, requirements, and format strings are not claims
            if rx is _ACC_AFTER and not m["pct"] and "." not in m["val"] and not re.search(r"\bof\b|[:=]", m["mid"]):
                continue  # a bare integer after "accuracy" without "of"/":" is too loose ("accuracy in 20 epochs")
            value = float(m["val"])
            if 10.0 <= value <= 100.0 and all(c.value != value for c in out):
                out.append(Claim(value, source, no, line.strip()))
    return out


def _rf_table_claim(lines: list[str], source: str) -> Claim | None:
    """The last row's value in a markdown table's output-RF column (the seed README's RF table)."""
    found: Claim | None = None
    i = 0
    while i < len(lines) - 1:
        if _is_table_row(lines[i]) and re.match(r"^\s*\|?\s*:?-{2,}", lines[i + 1]):
            header = [re.sub(r"[^a-z0-9 ]+", " ", c.lower()).split() for c in lines[i].strip().strip("|").split("|")]
            rf_cols = [
                k for k, toks in enumerate(header) if "rf" in toks or "receptive" in toks or toks == ["r", "out"]
            ]
            outs = [k for k in rf_cols if {"out", "output"} & set(header[k])]
            col = outs[0] if outs else (rf_cols[-1] if rf_cols else None)
            j = i + 2
            while j < len(lines) and "|" in lines[j]:
                cells = [c.strip() for c in _clean(lines[j]).strip().strip("|").split("|")]
                if col is not None and col < len(cells):
                    m = re.fullmatch(r"\s*(\d+)\s*", cells[col])
                    if m:
                        found = Claim(float(m.group(1)), source, j + 1, lines[j].strip()[:300], origin="rf_table")
                j += 1
            i = j
        else:
            i += 1
    return found


def extract_claims(texts: list[tuple[str, str]]) -> Claims:
    """Claimed total params, receptive field and best accuracy in each (source name, text) pair.

    Log lines are not claims; a text that holds a log contributes its best test accuracy as one
    claim (origin 'log') and its per-epoch figures to ``log_accuracies``.
    """
    claims = Claims()
    for source, text in texts:
        if not text:
            continue
        lines = text.split("\n")
        skip = record_lines(text)
        log = parse_log(text, source)
        if log.epochs:
            best = max(log.epochs, key=lambda r: r.test_acc)
            claims.log_accuracies[source] = [r.test_acc for r in log.epochs]
            claims.accuracy.append(
                Claim(best.test_acc, source, best.line, f"best of {len(log.epochs)} epochs in the log", origin="log")
            )
        table_rf = _rf_table_claim(lines, source)
        if table_rf:
            claims.receptive_field.append(table_rf)
        for no, raw in enumerate(lines, start=1):
            line = _clean(raw)
            if not line.strip():
                continue
            claims.params.extend(_params_claims(line, source, no))
            if no in skip or _is_table_row(line):
                continue
            claims.receptive_field.extend(_rf_claims(line, source, no))
            claims.accuracy.extend(_acc_claims(line, source, no))
    return claims


def summary_total_params(text: str) -> int | None:
    """The ``Total params`` of the last torchsummary/torchinfo table in ``text``, if there is one."""
    totals = [m["n"] for line in text.split("\n") if (m := _SUMMARY_TOTAL.match(_clean(line)))]
    return int(totals[-1].replace(",", "")) if totals else None


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def _int(x: float) -> str:
    return f"{round(x):,}"


def _signed(x: float, fmt: str = "{:,.0f}") -> str:
    return ("+" if x > 0 else "−" if x < 0 else "±") + fmt.format(abs(x))


def _headline(claims: list[Claim]) -> list[Claim]:
    """Per source and origin the largest figure (the final RF of per-layer notes, the best accuracy),
    then one per distinct value."""
    per_source: dict[tuple[str, str], Claim] = {}
    for c in claims:
        key = (c.source, c.origin)
        if key not in per_source or c.value > per_source[key].value:
            per_source[key] = c
    out: list[Claim] = []
    for c in per_source.values():
        if all(o.value != c.value for o in out):
            out.append(c)
    return out


def _distinct(claims: list[Claim]) -> list[Claim]:
    out: list[Claim] = []
    for c in claims:
        if all(o.value != c.value or o.approximate != c.approximate for o in out):
            out.append(c)
    return out


def _where(c: Claim) -> str:
    return f"{c.source} line {c.line}"


def _params_comparisons(claims: Claims, measured: float | None) -> list[ClaimComparison]:
    out = []
    for c in _distinct([c for c in claims.params if c.origin != "summary"]):
        shown = c.figure or _int(c.value)
        if measured is None:
            out.append(_unmeasured("params", c, f"{_where(c)} claims {shown} parameters (not measured)"))
            continue
        diff = measured - c.value
        rel = diff / measured if measured else None
        flag = abs(diff) > PARAMS_APPROX_TOLERANCE * measured if c.approximate else diff != 0
        if flag:
            note = f"{_where(c)} claims {shown} parameters but the model has {_int(measured)} ({_signed(diff)}"
            note += f", {_signed(100 * rel, '{:.1f}')}%)" if rel is not None else ")"
        elif c.approximate:
            note = f"{_where(c)} claims {shown} parameters; the model has {_int(measured)} (within 2%)"
        else:
            note = f"{_where(c)} claims {shown} parameters; the model has {_int(measured)} (matches)"
        out.append(_measured("params", c, measured, flag, note, "graph"))
    for c in _distinct([c for c in claims.params if c.origin == "summary"]):
        if measured is None:
            continue
        diff = measured - c.value
        flag = diff != 0
        note = (
            f"summary table in {_where(c)} is from a different model: it says {_int(c.value)}, "
            f"the model has {_int(measured)} ({_signed(diff)})"
            if flag
            else f"summary table in {_where(c)} matches the model ({_int(measured)} parameters)"
        )
        out.append(_measured("summary_params", c, measured, flag, note, "graph"))
    return out


def _unmeasured(name: str, c: Claim, note: str) -> ClaimComparison:
    return ClaimComparison(name, c.value, None, None, None, False, note, c.source, c.line, c.raw, c.approximate)


def _measured(name: str, c: Claim, measured: float, flag: bool, note: str, by: str) -> ClaimComparison:
    diff = measured - c.value
    rel = diff / measured if measured else None
    return ClaimComparison(name, c.value, measured, diff, rel, flag, note, c.source, c.line, c.raw, c.approximate, by)


def _rf_comparisons(claims: Claims, measured: float | None) -> list[ClaimComparison]:
    out = []
    for c in _headline(claims.receptive_field):
        if measured is None:
            out.append(_unmeasured("receptive_field", c, f"{_where(c)} claims RF {c.value:g} (not measured)"))
            continue
        diff = measured - c.value
        flag = diff != 0
        said = (
            f"the RF table in {c.source} ends at {c.value:g} (line {c.line})"
            if c.origin == "rf_table"
            else f"{_where(c)} claims RF {c.value:g}"
        )
        note = (
            f"{said} but the graph gives {measured:g} ({_signed(diff, '{:g}')})"
            if flag
            else f"{said}; the graph gives the same"
        )
        out.append(_measured("receptive_field", c, measured, flag, note, "graph"))
    return out


def _decimals(x: float, raw: str) -> int:
    """How many decimals the claim was written with ("86.1%" may stand for 86.08 in the log)."""
    for m in re.finditer(r"\d+(?:\.(\d+))?", raw):
        if float(m.group()) == x:
            return len(m.group(1) or "")
    return len(f"{x:g}".partition(".")[2])


def _accuracy_comparisons(claims: Claims, measured: float | None, by: str) -> list[ClaimComparison]:
    out = []
    who = "the submitted checkpoint scores" if by == "checkpoint" else "the grader's training job reached"
    for c in _headline(claims.accuracy):
        what = "the log's best" if c.origin == "log" else "best accuracy"
        if measured is None:
            out.append(_unmeasured("accuracy", c, f"{_where(c)}: {what} {c.value:.2f}% (no measured accuracy)"))
        else:
            diff = measured - c.value
            flag = abs(diff) > ACCURACY_TOLERANCE
            link = "but" if flag else "and"
            note = f"{_where(c)}: {what} {c.value:.2f}% {link} {who} {measured:.2f}% ({_signed(diff, '{:.2f}')} points)"
            out.append(_measured("accuracy", c, measured, flag, note, by))
    # A stated accuracy should be one the log shows ("a README accuracy that is not in the log").
    if claims.log_accuracies:
        log_src, values = max(claims.log_accuracies.items(), key=lambda kv: len(kv[1]))
        best = max(values)
        for c in _headline([c for c in claims.accuracy if c.origin != "log"]):
            tol = max(0.01, 0.5 * 10 ** -_decimals(c.value, c.raw)) + 1e-9
            shown = any(abs(v - c.value) <= tol for vs in claims.log_accuracies.values() for v in vs)
            diff = best - c.value
            note = (
                f"{_where(c)} claims {c.value:g}%, which the log in {log_src} shows"
                if shown
                else f"{_where(c)} claims {c.value:g}% but no epoch of the log in {log_src} shows it "
                f"(best there {best:.2f}%, {_signed(diff, '{:.2f}')} points)"
            )
            out.append(_measured("accuracy_in_log", c, best, not shown, note, "log"))
    return out


def compare(claims: Claims, measured: dict) -> list[ClaimComparison]:
    """Each claim beside the measured figure, flagged when the difference is beyond tolerance.

    ``measured`` keys (all optional): ``params``, ``receptive_field``, ``accuracy`` and
    ``accuracy_source`` ('grader' for the grader's training job, 'checkpoint' for the student's
    weights). Tolerances: parameter counts exact (2% for rounded "~195K" figures), RF exact,
    accuracy 0.5 points. Claims with nothing to compare against are listed unflagged.
    """
    return [
        *_params_comparisons(claims, measured.get("params")),
        *_rf_comparisons(claims, measured.get("receptive_field")),
        *_accuracy_comparisons(claims, measured.get("accuracy"), measured.get("accuracy_source") or "grader"),
    ]
