"""The ``grade`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  grade .                                  grade the repo you are in (trains too when a GPU is present)
  grade . --no-train                       every rule but accuracy, in seconds, no GPU needed
  grade path/to/sub --train --data DIR     train on an image-folder tree DIR/{train,test}/<class>/*
  grade sub --weights model.safetensors    evaluate a submitted checkpoint on the test split
  grade sub --model src/net.py:Net --model-kwargs '{"norm": "bn"}'
                                           when discovery picks the wrong class (or pin it in grade.toml)
  grade sub --rubric course.toml           another course edition's thresholds and points
  grade batch submissions/ --out grades/   a whole class (see: grade batch --help)

exit status: 0 every required rule passed, 1 a rule failed or the submission broke,
             2 usage error or the grader itself could not run.
The report (report.html) and results (results.json) go to --out (default ./grade-out).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grade",
        description="Grade a Session 6 (CIFAR-10, C1|C2|C3|C4|O) submission: every rule with pass/fail, "
        "points, the reason and the evidence; an HTML report and a results JSON.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("submission", type=Path, help="the submission folder (a repo, or the assignment folder in it)")
    train = p.add_mutually_exclusive_group()
    train.add_argument("--train", dest="train", action="store_true", default=None, help="train the model with the grader's recipe and decide the accuracy rule (default when CUDA is available)")  # fmt: skip
    train.add_argument(
        "--no-train", dest="train", action="store_false", help="skip training: every other rule in seconds"
    )
    p.add_argument("--out", type=Path, default=Path("grade-out"), help="folder for report.html, results.json and artifacts (default ./grade-out)")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the results JSON here instead of OUT/results.json")
    p.add_argument("--html", type=Path, help="write the HTML report here instead of OUT/report.html")
    p.add_argument("--model", metavar="FILE:CLASS", help="the model class to grade (relative to the submission)")
    p.add_argument("--model-kwargs", metavar="JSON", help="constructor arguments, e.g. '{\"num_classes\": 10}'")
    p.add_argument("--transforms", metavar="FILE:NAME", help="the train pipeline: a variable, a function or a class")
    p.add_argument("--rubric", type=Path, help="a rubric TOML that replaces the default's values (see --print-rubric)")
    p.add_argument("--print-rubric", action="store_true", help="print the default rubric and exit")
    data = p.add_argument_group("training data")
    data.add_argument(
        "--data", type=Path, help="image-folder tree DIR/{train,test}/<class>/* (e.g. a private test set)"
    )
    data.add_argument("--data-dir", type=Path, help="where torchvision's CIFAR-10 is (or is downloaded to); env S6_GRADER_DATA")  # fmt: skip
    data.add_argument("--weights", type=Path, help="evaluate this checkpoint (safetensors or a state_dict) instead of training")  # fmt: skip
    data.add_argument("--epochs", type=int, help="planned epochs (within the rubric's cap)")
    data.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.add_argument("--isolation", choices=["auto", "bubblewrap", "plain"], default="auto", help="sandbox for the submission's code (default: bubblewrap when it works here)")  # fmt: skip
    p.add_argument("--quiet", "-q", action="store_true", help="print only the score line")
    return p


def _cuda_present() -> bool:
    """Cheap check (no torch import) so that the no-train path stays fast."""
    return os.path.exists("/dev/nvidiactl") or bool(os.environ.get("S6_GRADER_ASSUME_CUDA"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # Before torch loads: idle OpenMP threads sleep instead of spinning. The grader always shares the
    # cores with a child (probe, training) or other gradings; spinning threads made small forward
    # passes 50x slower there.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if argv and argv[0] == "batch":
        from grader.batch.cli import main as batch_main

        return batch_main(argv[1:])
    if "--print-rubric" in argv:
        from grader.rubric import default_rubric_text

        print(default_rubric_text())
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    from grader.rubric import RubricError, load_rubric

    try:
        rubric = load_rubric(args.rubric)
    except RubricError as exc:
        parser.error(str(exc))
    kwargs = None
    if args.model_kwargs:
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as exc:
            parser.error(f"--model-kwargs is not JSON: {exc}")
        if not isinstance(kwargs, dict):
            parser.error("--model-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    if not args.submission.is_dir():
        parser.error(f"{args.submission} is not a folder")
    train = args.train if args.train is not None else _cuda_present()
    from rich.console import Console

    from grader.pipeline import GradeOptions, grade
    from grader.report.html import render_report
    from grader.report.terminal import print_summary

    console = Console(stderr=False)
    status = console.status("grading", spinner="dots") if not args.quiet and console.is_terminal else None

    def progress(stage: str, detail: str = "") -> None:
        if status is None:
            return
        if stage == "train":  # the training job prints its own per-epoch table
            status.stop()
        else:
            status.update(f"{stage}: {detail}")

    opts = GradeOptions(
        rubric=rubric,
        out_dir=args.out,
        train=train,
        model=args.model,
        model_kwargs=kwargs,
        transforms=args.transforms,
        data=args.data,
        data_dir=args.data_dir,
        weights=args.weights,
        epochs=args.epochs,
        isolation=args.isolation,
        device=args.device,
        progress=progress,
    )
    if status is not None:
        status.start()
    try:
        results = grade(args.submission, opts)
    finally:
        if status is not None:
            status.stop()
    json_path = args.json or args.out / "results.json"
    html_path = args.html or args.out / "report.html"
    written = []
    for path in (json_path, html_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str))
    written.append(str(json_path))
    try:
        from grader.report.sections import extra_sections

        html_path.write_text(render_report(results, *extra_sections(results)))
        written.append(str(html_path))
    except Exception as exc:  # a report that cannot render must not lose the JSON
        console.print(f"[red]the HTML report could not be written: {exc}[/red]")
    if args.quiet:
        console.print(f"{results['score']:g}/{results['max_score']}")
    else:
        print_summary(results, console, written)
    return exit_status(results)


def entry() -> None:
    """The console script: ``main``, then exit without the interpreter's slow teardown of torch."""
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def exit_status(results: dict) -> int:
    err = results.get("error") or {}
    if err.get("type") in ("grader_error", "discovery_failed"):
        return 2
    required = [c for c in results.get("checks", []) if c.get("required", True) and not c.get("extra")]
    if err or any(c["status"] in ("failed", "error") for c in required):
        return 1
    return 0


if __name__ == "__main__":
    entry()
