"""A Gradescope autograder: ``grade gradescope build`` writes the zip, ``grade gradescope run`` is
what its ``run_autograder`` calls for every submission (trusted side).

Gradescope's format (https://gradescope-autograders.readthedocs.io/en/latest/specs/): the zip holds
``setup.sh`` (run once to build the image) and ``run_autograder`` (run per submission, which sits in
``/autograder/submission``); the results go to ``/autograder/results/results.json``. Gradescope gives
no GPU, so a submission is graded without training, or its uploaded checkpoint is evaluated. The
student's code still runs in the grader's sandbox (the strongest layer the container allows).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import grader

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
GRADE_TIMEOUT_S = float(os.environ.get("S6_GRADER_GRADESCOPE_TIMEOUT", 1800))

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder image (s6-grader {version}).
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y python3 python3-venv python3-pip
# The strongest sandbox layer; without it the grader uses Landlock (the kernel's) and says so.
apt-get install -y bubblewrap || echo "bubblewrap not installed: the grader falls back to Landlock"
python3 -m venv /opt/s6-grader
/opt/s6-grader/bin/python -m pip install --upgrade pip
# A CPU build of torch: Gradescope gives no GPU.
/opt/s6-grader/bin/python -m pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu
# The grader itself, from the wheel in this zip: its version is pinned by the zip.
/opt/s6-grader/bin/python -m pip install /autograder/source/wheels/*.whl
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission; it writes $ROOT/results/results.json (s6-grader {version}).
# AUTOGRADER_ROOT and S6_GRADER_PYTHON override the paths (for tests).
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{S6_GRADER_PYTHON:-/opt/s6-grader/bin/python}}"
export NO_ALBUMENTATIONS_UPDATE=1
if ! "$PYTHON" -c "import grader" 2>/dev/null; then
  mkdir -p "$ROOT/results"
  printf '%s' '{{"score": 0, "output": "the autograder is broken: s6-grader is not installed (setup.sh failed); tell your TA", "visibility": "visible", "stdout_visibility": "visible", "tests": []}}' > "$ROOT/results/results.json"
  exit 0
fi
exec "$PYTHON" -m grader gradescope run --root "$ROOT"
"""


class BuildError(Exception):
    """The autograder zip cannot be built (no wheel and no source tree to build one from)."""


# ---- results ---------------------------------------------------------------------------------


def _pts(value: float) -> float:
    return round(float(value), 2)


def _test_entry(check: dict, number: int) -> dict:
    output = check.get("message", "")
    if check["status"] in ("failed", "error") and check.get("hint"):
        output += f"\nhint: {check['hint']}"
    for warning in check.get("warnings", []):
        output += f"\nnote: {warning}"
    entry = {
        "name": check.get("title") or check["id"],
        "number": str(number),
        "score": _pts(check["points"]),
        # A bonus rule adds points beyond the total: max 0 is how Gradescope shows extra credit.
        "max_score": 0.0 if check.get("extra") else _pts(check["max_points"]),
        "output": output,
        "tags": [check["id"], *([check["question"]] if check.get("question") else [])],
        "visibility": "after_published" if check.get("visibility") == "hidden" else "visible",
    }
    if check["status"] in ("passed", "failed", "error"):
        entry["status"] = "passed" if check["status"] == "passed" else "failed"
    else:  # not run here (accuracy without a GPU): Gradescope's two statuses would both mislead
        entry["output"] = "not decided here: " + output
    return entry


def to_gradescope(results: dict, execution_time: float) -> dict:
    """Gradescope's results.json for one grading: one test per rule, a leaderboard, an overall line."""
    checks = results.get("checks", [])
    facts = results.get("facts") or {}
    training = facts.get("training") or {}
    lines = [
        f"s6-grader {results.get('grader_version', grader.__version__)}: {results.get('score', 0):g}/{results.get('max_score', 0)}"
    ]
    err = results.get("error")
    if err:
        lines.append(f"could not grade everything: {err.get('type', 'error')}: {err.get('message', '')}")
    undecided = [c["id"] for c in checks if c["status"] == "skipped" and not c.get("extra")]
    if undecided:
        lines.append("not decided on Gradescope (no GPU; your TA decides them): " + ", ".join(undecided))
    sandbox = (facts.get("sandbox") or {}).get("summary")
    if sandbox:
        lines.append(f"sandbox: {sandbox}")
    leaderboard = []
    if facts.get("params") is not None:
        leaderboard.append({"name": "Parameters", "value": int(facts["params"]), "order": "asc"})
    if facts.get("receptive_field") is not None:
        leaderboard.append({"name": "Receptive field", "value": int(facts["receptive_field"])})
    if training.get("best_test_acc") is not None:
        leaderboard.append({"name": "Test accuracy", "value": float(training["best_test_acc"])})
    return {
        "score": _pts(results.get("score", 0) + (results.get("bonus") or 0)),
        "execution_time": round(execution_time, 1),
        "output": "\n".join(lines),
        "visibility": "visible",
        "stdout_visibility": "hidden",  # the grader's own log; the tests say what a student needs
        "tests": [_test_entry(c, i) for i, c in enumerate(checks, 1)],
        "leaderboard": leaderboard,
    }


def failure_results(message: str, execution_time: float) -> dict:
    """A valid results file when grading itself broke: zero points and what happened."""
    return {
        "score": 0.0,
        "execution_time": round(execution_time, 1),
        "output": f"the grader could not grade this submission: {message}",
        "visibility": "visible",
        "stdout_visibility": "visible",
        "tests": [],
    }


# ---- the per-submission run ---------------------------------------------------------------------


def find_checkpoint(submission: Path) -> Path | None:
    """A checkpoint the student uploaded (evaluated instead of training); the largest if several."""
    found = [p for p in submission.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and not p.is_symlink()]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_size, str(p)))


def run(root: Path) -> int:
    """Grade ``root/submission`` and write ``root/results/results.json``; 0 unless that file cannot be written."""
    start = time.monotonic()
    results_file = root / "results" / "results.json"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    submission = root / "submission"
    with tempfile.TemporaryDirectory(prefix="s6-gradescope-") as tmp:
        out = Path(tmp) / "out"
        command = [sys.executable, "-m", "grader", str(submission), "--out", str(out)]
        checkpoint = find_checkpoint(submission) if submission.is_dir() else None
        command += ["--weights", str(checkpoint)] if checkpoint else ["--no-train"]
        rubric = root / "source" / "rubric.toml"
        if rubric.is_file():
            command += ["--rubric", str(rubric)]
        try:
            if not submission.is_dir():
                raise RuntimeError(f"{submission} is not a folder")
            # A child process: whatever happens to it (a crash, a hang), this one still writes the file.
            proc = subprocess.run(command, timeout=GRADE_TIMEOUT_S, stdout=sys.stdout, stderr=sys.stderr, check=False)
            graded = out / "results.json"
            if not graded.is_file():
                raise RuntimeError(f"grading ended (status {proc.returncode}) without results")
            data = to_gradescope(json.loads(graded.read_text()), time.monotonic() - start)
        except subprocess.TimeoutExpired:
            data = failure_results(f"grading took longer than {GRADE_TIMEOUT_S:.0f} s", time.monotonic() - start)
        except Exception as exc:
            data = failure_results(f"{type(exc).__name__}: {exc}", time.monotonic() - start)
    partial = results_file.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=1))
    partial.replace(results_file)
    print(f"wrote {results_file}: {data['score']:g} points")
    return 0


# ---- building the zip ---------------------------------------------------------------------------


def source_tree() -> Path | None:
    """The project folder this grader runs from, when it runs from a checkout (not an installed wheel)."""
    root = Path(grader.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    return root if pyproject.is_file() and 'name = "s6-grader"' in pyproject.read_text() else None


def build_wheel(dest: Path) -> Path:
    root = source_tree()
    if root is None:
        raise BuildError("this grader was installed from a wheel, not a checkout: pass --wheel PATH")
    with tempfile.TemporaryDirectory(prefix="s6-wheel-") as tmp:
        # A copy, so that building leaves nothing (build/, *.egg-info) in the checkout.
        copy = Path(tmp) / "src"
        shutil.copytree(
            root,
            copy,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "grade-out", "benchmarks", "tests"
            ),
        )
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(dest),
                str(copy),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    wheels = sorted(dest.glob("s6_grader-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise BuildError(f"building the wheel failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return wheels[-1]


def build(out: Path, rubric: Path | None = None, wheel: Path | None = None) -> Path:
    """Write the autograder zip: setup.sh, run_autograder, the grader's wheel, and the rubric if given."""
    if rubric is not None:
        from grader.rubric import load_rubric

        load_rubric(rubric)  # a rubric that does not load fails here, not on every submission
    with tempfile.TemporaryDirectory(prefix="s6-autograder-") as tmp:
        wheel = wheel or build_wheel(Path(tmp))
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
                info = zipfile.ZipInfo(name)
                info.external_attr = 0o755 << 16  # executable once unpacked
                zf.writestr(info, text.format(version=grader.__version__))
            zf.write(wheel, f"wheels/{wheel.name}")
            if rubric is not None:
                zf.write(rubric, "rubric.toml")
    return out
