"""What a submission's README.md shows: model summary, model code, augmentation code, log, results, images.

Trusted side.

Only the README's own text and the repository's files are read; links to the web are not followed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from grader.evidence.claims import extract_claims
from grader.evidence.logs import parse_log
from grader.submission import Submission, as_submission

MAX_README_BYTES = 5 * 1024 * 1024

_SUMMARY = re.compile(r"total params\s*:|trainable params|param #|layer \(type", re.IGNORECASE)
_MODEL_CODE = re.compile(r"nn\.Module|nn\.Conv2d|class\s+\w+\s*\(\s*(?:torch\.)?(?:nn\.)?Module\s*\)")
_AUG_CODE = re.compile(r"albumentations|A\.Compose|CoarseDropout|HorizontalFlip|ShiftScaleRotate")
_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
_MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
_BARE_URL = re.compile(r"https?://[^\s)\]>\"'`]+")
_FILE_MENTION = re.compile(r"[\w./-]+\.(?:py|ipynb)\b")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
_HTML_IMAGE = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE)


@dataclass
class Part:
    """One thing the README should show, and the lines that show it."""

    found: bool
    lines: list[int] = field(default_factory=list)
    evidence: str = ""


@dataclass
class ImageRef:
    target: str
    line: int
    exists: bool | None  # None: a remote URL, not checked (no network)
    path: str | None = None  # the file it resolves to, relative to the repository root


@dataclass
class ReadmeFacts:
    path: str | None  # relative to the root; None when there is no README.md
    parts: dict[str, Part] = field(default_factory=dict)
    images: list[ImageRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


PART_NAMES = ("summary", "model_code", "augmentation_code", "training_log", "results")


def find_readme(sub: Submission, assignment_dir: Path | None = None) -> str | None:
    """README.md (any case) in the assignment folder first, then at the repository root, as the
    index spells it."""
    folders = [sub.relative(assignment_dir)] if assignment_dir is not None else []
    for folder in [*folders, ""]:
        prefix = folder + "/" if folder else ""
        names = [rel for rel in sub.files(".md") if rel.startswith(prefix) and "/" not in rel[len(prefix) :]]
        found = [rel for rel in names if rel[len(prefix) :].lower() == "readme.md"]
        if found:
            return found[0]
    return None


def _code_blocks(lines: list[str]) -> list[tuple[int, int, str]]:
    """Fenced blocks as (first content line, last content line, language), 1-based."""
    blocks, open_at, lang, fence = [], None, "", ""
    for no, line in enumerate(lines, start=1):
        m = _FENCE.match(line)
        if not m:
            continue
        if open_at is None:
            open_at, lang, fence = no + 1, m.group(2).lower(), m.group(1)[0]
        elif m.group(1)[0] == fence and not m.group(2):
            blocks.append((open_at, no - 1, lang))
            open_at = None
    if open_at is not None:  # an unclosed fence runs to the end, as GitHub renders it
        blocks.append((open_at, len(lines), lang))
    return blocks


def _block_part(lines: list[str], blocks: list[tuple[int, int, str]], rx: re.Pattern[str], what: str) -> Part | None:
    for first, last, lang in blocks:
        hits = [n for n in range(first, last + 1) if rx.search(lines[n - 1])]
        if hits and lang in ("", "python", "py", "python3", "ipython", "text", "pycon"):
            return Part(True, hits[:20], f"{what} in a code block at lines {first}–{last}")
    return None


def _local(target: str, readme_dir: str, sub: Submission) -> str:
    """The file a relative link in the README names, as the index spells it ('' outside the repository)."""
    clean = unquote(target.split("#")[0].split("?")[0])
    if clean.startswith("/"):  # GitHub resolves /x relative to the repository root
        return sub.normalize(clean.lstrip("/"))
    return sub.normalize(f"{readme_dir}/{clean}" if readme_dir else clean)


def _model_code(lines: list[str], blocks: list[tuple[int, int, str]], readme_dir: str, sub: Submission) -> Part:
    part = _block_part(lines, blocks, _MODEL_CODE, "model code")
    if part:
        return part
    # Files in the repository say the most, then GitHub links, then Colab links (the last one: READMEs
    # that copy the assignment start with the assignment's own Colab link).
    github: Part | None = None
    colab: Part | None = None
    for no, line in enumerate(lines, start=1):
        targets = [m.group(1) for m in _MD_LINK.finditer(line)] + _BARE_URL.findall(line)
        for t in targets:
            host = urlparse(t).netloc.lower()
            if host.endswith("github.com") and t.split("#")[0].endswith((".py", ".ipynb")):
                github = github or Part(True, [no], f"link to {t} (GitHub, not opened)")
            elif "colab.research.google.com" in host:
                colab = Part(True, [no], f"link to a Colab notebook ({t}, not opened: no network)")
            elif not host and t.split("#")[0].endswith((".py", ".ipynb")):
                rel = _local(t, readme_dir, sub)
                if sub.has(rel):
                    return Part(True, [no], f"link to {rel}, which is in the repository")
        for name in _FILE_MENTION.findall(line):
            rel = _local(name, readme_dir, sub)
            if sub.has(rel):
                return Part(True, [no], f"names {rel}, which is in the repository")
    found = github or colab
    if found:
        return found
    return Part(False, [], "no model code block (nn.Module / nn.Conv2d) and no link to a .py/.ipynb file")


def _images(lines: list[str], readme_dir: str, sub: Submission) -> list[ImageRef]:
    refs = []
    for no, line in enumerate(lines, start=1):
        for m in [*_MD_IMAGE.finditer(line), *_HTML_IMAGE.finditer(line)]:
            target = m.group(1)
            scheme = urlparse(target).scheme.lower()
            if scheme in ("http", "https"):
                refs.append(ImageRef(target, no, None))
            elif scheme == "data":
                refs.append(ImageRef(target[:40] + "…", no, True))
            else:
                rel = _local(target, readme_dir, sub)
                refs.append(ImageRef(target, no, sub.has(rel), rel or target))
    return refs


def analyze_readme(source: Path | Submission, assignment_dir: Path | None = None) -> ReadmeFacts:
    """Which of the expected parts the README shows, with line numbers, and whether its images exist
    (in the submission's index: a link out of the repository names nothing)."""
    sub = as_submission(source)
    readme = find_readme(sub, assignment_dir)
    if readme is None:
        missing = {name: Part(False, [], "there is no README.md") for name in PART_NAMES}
        return ReadmeFacts(path=None, parts=missing, notes=["no README.md at the root or in the assignment folder"])
    facts = ReadmeFacts(path=readme)
    try:
        if sub.size(readme) > MAX_README_BYTES:
            facts.notes.append(f"{facts.path} is larger than 5 MB; only the first 5 MB were read")
        text = sub.read_bytes(readme)[:MAX_README_BYTES].decode("utf-8", errors="replace")
    except OSError as exc:
        facts.notes.append(f"{facts.path} cannot be read ({exc.strerror or exc})")
        facts.parts = {name: Part(False, [], "README.md cannot be read") for name in PART_NAMES}
        return facts
    lines = text.split("\n")
    blocks = _code_blocks(lines)

    hits = [no for no, line in enumerate(lines, start=1) if _SUMMARY.search(line)]
    facts.parts["summary"] = (
        Part(True, hits[:20], "torchsummary/torchinfo table")
        if hits
        else Part(False, [], "no torchsummary/torchinfo output (Total params / Param # / Layer (type))")
    )
    readme_dir = readme.rpartition("/")[0]
    facts.parts["model_code"] = _model_code(lines, blocks, readme_dir, sub)
    facts.parts["augmentation_code"] = _block_part(lines, blocks, _AUG_CODE, "albumentations code") or Part(
        False, [], "no code block with albumentations (A.Compose, HorizontalFlip, CoarseDropout)"
    )
    log = parse_log(text, readme)
    facts.parts["training_log"] = (
        Part(True, [e.line for e in log.epochs], f"{len(log.epochs)} epochs with a test accuracy ({log.format})")
        if len(log.epochs) >= 2
        else Part(False, [], "no training log with a test accuracy for at least two epochs")
    )
    results = [c for c in extract_claims([(readme, text)]).accuracy if c.origin == "text"]
    facts.parts["results"] = (
        Part(True, [c.line for c in results], f"states accuracy {results[0].value:g}% at line {results[0].line}")
        if results
        else Part(False, [], "no stated final/best test accuracy")
    )
    facts.images = _images(lines, readme_dir, sub)
    for ref in facts.images:
        if ref.exists is False:
            facts.notes.append(f"line {ref.line}: image {ref.target} is not in the repository")
    return facts
