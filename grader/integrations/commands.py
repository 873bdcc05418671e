"""``grade gradescope build|run`` and ``grade init-ci``: small command lines over this package.

Trusted side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help shows every option)\n")


def gradescope_main(argv: list[str]) -> int:
    p = _Parser(
        prog="grade gradescope",
        description="A Gradescope autograder for this assignment. `build` writes the zip to upload "
        "(Configure Autograder -> Zip file upload); `run` is what the zip's run_autograder calls.",
        epilog="example:\n  grade gradescope build --out autograder.zip --rubric course.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="write the autograder zip")
    b.add_argument("--out", type=Path, default=Path("autograder.zip"), help="the zip to write (default autograder.zip)")
    b.add_argument("--rubric", type=Path, help="the course's rubric TOML, shipped inside the zip")
    b.add_argument("--wheel", type=Path, help="ship this s6-grader wheel instead of building one from the checkout")
    r = sub.add_parser("run", help="grade ROOT/submission and write ROOT/results/results.json")
    r.add_argument("--root", type=Path, default=Path("/autograder"), help="the autograder root (default /autograder)")
    if not argv:
        p.print_help()
        return 0
    args = p.parse_args(argv)
    from grader.integrations import gradescope

    if args.command == "run":
        return gradescope.run(args.root)
    for path, what in ((args.rubric, "--rubric"), (args.wheel, "--wheel")):
        if path is not None and not path.is_file():
            p.error(f"{what} {path} does not exist")
    from grader.rubric import RubricError

    try:
        out = gradescope.build(args.out, args.rubric, args.wheel)
    except (gradescope.BuildError, RubricError) as exc:
        print(f"grade gradescope: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: upload it under Configure Autograder (base image Ubuntu, any Python)")
    return 0


def init_ci_main(argv: list[str]) -> int:
    p = _Parser(
        prog="grade init-ci",
        description="Write .github/workflows/grade.yml into a repository: every push is graded "
        "without training, the rules table goes to the run's summary, report.html is kept as an "
        "artifact, and the check fails when a required rule fails.",
        epilog="example:\n  grade init-ci . && git add .github && git commit -m 'grade on every push'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("repo", type=Path, nargs="?", default=Path("."), help="the repository (default .)")
    p.add_argument("--folder", default=".", help="the folder to grade, relative to the repository (default .)")
    p.add_argument("--install", help="what pip installs in the job (default: s6-grader of this version)")
    p.add_argument("--force", action="store_true", help="replace an existing grade.yml")
    args = p.parse_args(argv)
    if not args.repo.is_dir():
        p.error(f"{args.repo} is not a folder")
    from grader.integrations.github import WorkflowExists, write_workflow

    try:
        path = write_workflow(args.repo, args.install, args.folder, args.force)
    except WorkflowExists as exc:
        print(f"grade init-ci: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}: commit it, and every push shows the grade in the Actions tab")
    return 0
