"""The ``grade`` command.

Trusted side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from grader.cli_options import ISOLATION_CHOICES, add_train_switch
from grader.failures import ErrorKind, Failure
from grader.results import exit_status

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
  grade . --no-train --format markdown     the rules table as Markdown (e.g. a GitHub job summary)
  grade init-ci .                          a GitHub Actions check on every push (see: grade init-ci --help)
  grade gradescope build --out ag.zip      a Gradescope autograder (see: grade gradescope --help)

exit status: 0 every required rule passed, 1 a rule failed or the submission broke,
             2 usage error or the grader itself could not run.
The report (report.html) and results (results.json) go to --out (default ./grade-out).
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (and where to read more), not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"grade: error: {message} (grade --help shows every option)\n")


USAGE = (
    "grade SUB [options]        (SUB: a folder, a .zip or a .ipynb)\n"
    "       grade batch INPUT --out DIR [options]\n"
    "       grade init-ci [REPO] | grade gradescope build|run"
)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="grade",
        usage=USAGE,
        description="Grade a Session 6 (CIFAR-10, C1|C2|C3|C4|O) submission: every rule with pass/fail, "
        "points, the reason and the evidence; an HTML report and a results JSON.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "submission",
        type=Path,
        help="the submission: a folder (a repo, or the assignment folder in it), a .zip, or one .ipynb",
    )
    from grader import __version__

    p.add_argument("--version", action="version", version=f"s6-grader {__version__}")
    add_train_switch(
        p,
        train_help="train the model with the grader's recipe and decide the accuracy rule (default when CUDA is available)",
        no_train_help="skip training: every other rule in seconds",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.html, results.json and artifacts (default ./grade-out, or ~/.cache/s6-grader/reports/NAME when that would be inside the submission)",
    )
    p.add_argument("--json", type=Path, help="write the results JSON here instead of OUT/results.json")
    p.add_argument("--html", type=Path, help="write the HTML report here instead of OUT/report.html")
    p.add_argument("--model", metavar="FILE:CLASS", help="the model class to grade (relative to the submission)")
    p.add_argument("--model-kwargs", metavar="JSON", help="constructor arguments, e.g. '{\"num_classes\": 10}'")
    p.add_argument("--transforms", metavar="FILE:NAME", help="the train pipeline: a variable, a function or a class")
    p.add_argument(
        "--transforms-kwargs",
        metavar="JSON",
        help="arguments for a pipeline function or class, e.g. '{\"train\": true}'",
    )
    p.add_argument("--rubric", type=Path, help="a rubric TOML that replaces the default's values (see --print-rubric)")
    p.add_argument("--print-rubric", action="store_true", help="print the default rubric and exit")
    p.add_argument(
        "--checks",
        type=Path,
        action="append",
        metavar="DIR",
        help="a folder of a course's own checks (pytest files with @rule); may repeat",
    )
    data = p.add_argument_group("training data")
    data.add_argument(
        "--data", type=Path, help="image-folder tree DIR/{train,test}/<class>/* (e.g. a private test set)"
    )
    data.add_argument(
        "--data-dir", type=Path, help="where torchvision's CIFAR-10 is (or is downloaded to); env S6_GRADER_DATA"
    )
    data.add_argument(
        "--weights", type=Path, help="evaluate this checkpoint (safetensors or a state_dict) instead of training"
    )
    data.add_argument("--epochs", type=int, help="planned epochs (within the rubric's cap)")
    data.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="train from epoch 1 even where OUT/training_state holds an interrupted run of this submission "
        "(by default grading again resumes it, with the figures an uninterrupted run gives)",
    )
    data.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep an interrupted training's state here instead of OUT/training_state (grade batch gives each student one)",
    )
    data.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.add_argument(
        "--isolation",
        choices=ISOLATION_CHOICES,
        default="auto",
        help="sandbox for the submission's code (default: the strongest that works here: bubblewrap, else Landlock)",
    )
    p.add_argument(
        "--accept-unsandboxed",
        action="store_true",
        help="decide accuracy even where no filesystem sandbox works (the code could read the test split)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print only the score line")
    p.add_argument(
        "--format",
        choices=["text", "markdown", "json"],
        default="text",
        help="what the terminal gets: the rules table (text), GitHub-flavoured Markdown, or the results JSON",
    )
    return p


def _json_object(parser: argparse.ArgumentParser, flag: str, text: str | None, example: str) -> dict | None:
    """A JSON object given on the command line, or a usage error that shows one."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"{flag} is not JSON: {exc}")
    if not isinstance(value, dict):
        parser.error(f"{flag} must be a JSON object, e.g. '{example}'")
    return value


def _cuda_present() -> bool:
    """Cheap check (no torch import) so that the no-train path stays fast."""
    return os.path.exists("/dev/nvidiactl") or bool(os.environ.get("S6_GRADER_ASSUME_CUDA"))


def main(argv: list[str] | None = None, *, wait_turn: Callable[[float | None], bool] | None = None) -> int:
    """``grade ARGV``; returns the exit status.

    ``wait_turn``: a batch's grading started ahead of its turn. The probe child is started (it loads
    its libraries meanwhile), then ``wait_turn(seconds)`` blocks until the turn comes (False: not yet)
    before the submission's files are read (the batch hands a folder; a zip or notebook given to the
    CLI is unpacked into a folder first)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # Before torch loads: idle OpenMP threads sleep instead of spinning. The grader always shares the
    # cores with a child (probe, training) or other gradings; spinning threads made small forward
    # passes 50x slower there.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if argv and argv[0] == "batch":
        from grader.batch.cli import main as batch_main

        return batch_main(argv[1:])
    if argv and argv[0] == "gradescope":
        from grader.integrations.commands import gradescope_main

        return gradescope_main(argv[1:])
    if argv and argv[0] == "init-ci":
        from grader.integrations.commands import init_ci_main

        return init_ci_main(argv[1:])
    if "--print-rubric" in argv:
        from grader.rubric import default_rubric_text

        print(default_rubric_text())
        return 0
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    from grader.rubric import RubricError, load_rubric

    try:
        rubric = load_rubric(args.rubric, args.checks)
    except RubricError as exc:
        parser.error(str(exc))
    kwargs = _json_object(parser, "--model-kwargs", args.model_kwargs, '{"num_classes": 10}')
    transforms_kwargs = _json_object(parser, "--transforms-kwargs", args.transforms_kwargs, '{"train": true}')
    scratch = tempfile.mkdtemp(prefix="s6-input-")
    try:
        return _grade(parser, args, rubric, kwargs, transforms_kwargs, Path(scratch), wait_turn)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def default_out(submission: Path) -> Path:
    """./grade-out, unless that is inside the submission (``grade .``): the report and the weights
    must not land in the student's repository, to be committed with it."""
    local = Path("grade-out").resolve()
    if submission.is_dir() and local.is_relative_to(submission.resolve()):
        from grader.training.data import default_data_dir

        return default_data_dir() / "reports" / (submission.resolve().name or "submission")
    return Path("grade-out")


def _as_folder(parser: argparse.ArgumentParser, sub: Path, scratch: Path) -> Path:
    """The folder to grade: the folder itself, a zip unpacked safely, or a folder holding one notebook."""
    if not sub.exists():
        parser.error(f"{sub} does not exist")
    if sub.is_dir():
        return sub
    if sub.suffix.lower() == ".zip":
        from grader.batch.unzip import UnzipError, safe_unzip

        try:
            root, _notes = safe_unzip(sub, scratch / sub.stem)
        except UnzipError as exc:
            parser.error(f"{sub}: {exc}")
        return root
    if sub.suffix.lower() == ".ipynb":
        folder = scratch / sub.stem
        folder.mkdir()
        shutil.copyfile(sub, folder / sub.name)
        return folder
    parser.error(f"{sub} is a file: give a folder, a .zip or a .ipynb")
    raise AssertionError  # parser.error exits


def _precheck(folder: Path, args: argparse.Namespace) -> Failure | None:
    """The typed failure (a one-line message) for what cannot be graded at all: no code, no model, a pin
    that is not there."""
    from grader.discover import DiscoveryError, discover
    from grader.submission import Submission

    index = Submission.scan(folder)
    if not index.files(".py", ".ipynb"):
        return Failure(
            ErrorKind.MODEL_NOT_FOUND,
            f"{args.submission} holds no Python file or notebook to grade (no model; --model FILE:CLASS points at one)",
        )
    try:
        found = discover(index)
    except DiscoveryError as exc:
        return Failure(ErrorKind.DISCOVERY_FAILED, str(exc))
    classes = sorted({f"{c.file}:{c.cls}" for c in found.models})
    if args.model:
        file, _, cls = args.model.rpartition(":")
        if not index.has(file) or f"{file}:{cls}" not in classes:
            return Failure(
                ErrorKind.BAD_PIN,
                f"--model {args.model}: no such class; the candidates found: {', '.join(classes) or 'none'}",
            )
    elif (
        not classes
        and not found.entries  # an entry point may build its model inline (nn.Sequential): the capture run finds it
        and found.problems
        and found.problems[0]["type"] == ErrorKind.MODEL_NOT_FOUND
    ):
        files = sorted({*found.py_files, *found.notebooks})[:8]
        return Failure(
            ErrorKind.MODEL_NOT_FOUND,
            f"no nn.Module subclass in {args.submission} (read: {', '.join(files)}); point at the model with --model FILE:CLASS",
        )
    if args.transforms:
        file = args.transforms.partition(":")[0]
        if not index.has(file):
            return Failure(ErrorKind.BAD_PIN, f"--transforms {args.transforms}: {file} is not a file of the submission")
    return None


def _grade(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    rubric: dict,
    kwargs: dict | None,
    transforms_kwargs: dict | None,
    scratch: Path,
    wait_turn: Callable[[float | None], bool] | None = None,
) -> int:
    given = args.submission
    args.submission = _as_folder(parser, given, scratch)
    if args.out is None:
        args.out = default_out(given)
    train = args.train if args.train is not None else _cuda_present()
    from grader.pipeline import TURN_WAIT_S, GradeOptions, grade, start_probe

    opts = GradeOptions(
        rubric=rubric,
        out_dir=args.out,
        train=train,
        model=args.model,
        model_kwargs=kwargs,
        transforms=args.transforms,
        transforms_kwargs=transforms_kwargs,
        data=args.data,
        data_dir=args.data_dir,
        weights=args.weights,
        epochs=args.epochs,
        resume=args.resume,
        state_dir=args.state_dir,
        isolation=args.isolation,
        accept_unsandboxed=args.accept_unsandboxed,
        device=args.device,
    )
    # The probe child starts before this process reads anything of the submission: its imports are
    # the long pole, and nothing below needs them.
    probe = start_probe(opts)
    if wait_turn is not None and not wait_turn(TURN_WAIT_S):
        # A long wait: the child would stop waiting for its spec. It ends unused; a fresh one starts at the turn.
        probe.close(wait=False)
        wait_turn(None)
        probe = start_probe(opts)
    try:
        problem = _precheck(args.submission, args)
    except BaseException:
        probe.close(wait=False)
        raise
    if problem is not None:  # one line, exit 2; a results file too, so a class's gradebook has the row
        probe.close(wait=False)  # it ends unused; the one line need not wait for its imports
        from grader.batch.results import error_results

        results = error_results(given.name, problem.to_dict(), rubric, None)
        results["submission"]["path"] = str(given.resolve())
        json_path = args.json or args.out / "results.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1, default=str))
        print(f"grade: {problem.message}", file=sys.stderr)
        if args.format == "markdown":  # a job summary still says why
            from grader.integrations.markdown import results_markdown

            sys.stdout.write(results_markdown(results))
        return 2
    from rich.console import Console

    from grader.report.html import render_report
    from grader.report.terminal import print_summary

    console = Console(stderr=False)
    quiet = args.quiet or args.format != "text"  # Markdown and JSON go to stdout alone
    status = console.status("grading", spinner="dots") if not quiet and console.is_terminal else None

    def progress(stage: str, detail: str = "") -> None:
        if status is None:
            return
        if stage == "train":  # the training job prints its own per-epoch table
            status.stop()
        else:
            status.update(f"{stage}: {detail}")

    opts.progress = progress
    if status is not None:
        status.start()
    try:
        results = grade(args.submission, opts, probe)
    finally:
        if status is not None:
            status.stop()
    if given.resolve() != Path(args.submission).resolve():  # a zip or a notebook: name what was given
        results["submission"].update(path=str(given.resolve()), name=given.name)
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
    if args.format == "markdown":
        from grader.integrations.markdown import results_markdown

        sys.stdout.write(results_markdown(results))
    elif args.format == "json":
        sys.stdout.write(json.dumps(results, indent=1, default=str) + "\n")
    elif args.quiet:
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


if __name__ == "__main__":
    entry()
