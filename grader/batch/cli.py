"""``grade batch INPUT --out DIR``: grade a whole class, in parallel, resumably.

Trusted side.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grader.cli_options import ISOLATION_CHOICES, add_train_switch

EXAMPLES = """\
examples:
  grade batch submissions/ --out grades/            a folder of sub-folders and .zip files
  grade batch class.csv --out grades/ --jobs 4      a CSV of student,git_url[,commit] (shallow clones)
  grade batch subs/ --out grades/ --train --gpus 0,1 --per-gpu 2
                                                    two trainings per GPU; probes use the CPUs meanwhile
  grade batch subs/ --out grades/ --engine ray --address auto
                                                    the same work on a Ray cluster
  grade batch subs/ --out grades/ --only alice bob --force
                                                    regrade two students
  grade batch subs/ --out grades/ --jobs 1 --ahead 1
                                                    one grading at a time (its memory), the next one's
                                                    sandboxed probe loading torch on the idle core

Re-running the same command resumes: a student whose submission, rubric and mode are unchanged is not
graded again (--force regrades). Outputs: DIR/grades.csv, DIR/results.json, DIR/index.html and
DIR/<student>/{results.json,report.html,log.txt}.
exit status: 0 every student passed every required rule, 1 some student failed a rule or broke,
             2 usage error or the batch could not run.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grade batch",
        description="Grade a class of Session 6 submissions: a gradebook, a class index page and a report per student.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        type=Path,
        help="a folder of submissions (sub-folders or .zip files) or a CSV of student,git_url[,commit]",
    )
    p.add_argument("--out", type=Path, required=True, help="the output folder (created; re-use it to resume)")
    p.add_argument(
        "--jobs", "-j", type=int, help="submissions graded at once on the CPUs (default: the number of cores)"
    )
    p.add_argument(
        "--ahead",
        type=int,
        metavar="N",
        help="gradings started before a CPU slot is free (local engine), each loading its sandboxed probe's libraries while"
        " it waits; none reads its submission before its turn (default: the cores --jobs leaves idle)",
    )
    add_train_switch(
        p,
        train_help="train every model (default when GPUs are present)",
        no_train_help="every rule but accuracy, in seconds per submission",
    )
    p.add_argument(
        "--gpus", help="GPUs for the trainings: CUDA indices like 0,1, 'all' or 'none' (default: all with --train)"
    )
    p.add_argument("--per-gpu", type=int, default=1, metavar="K", help="trainings sharing one GPU (default 1)")
    p.add_argument("--force", action="store_true", help="grade again even what is already graded and unchanged")
    p.add_argument(
        "--only", nargs="+", metavar="NAME", help="grade only these students (the class outputs still list everybody)"
    )
    p.add_argument(
        "--format",
        action="append",
        choices=["gradescope"],
        default=[],
        help="also write DIR/<student>/gradescope/results.json",
    )
    limits = p.add_argument_group("limits per submission")
    limits.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="wall-clock seconds for grading without training (default 600)",
    )
    limits.add_argument(
        "--train-timeout",
        type=float,
        default=6 * 3600.0,
        metavar="S",
        help="wall-clock seconds with training (default 21600)",
    )
    limits.add_argument(
        "--memory-mb", type=int, default=8192, help="data memory of each grader process, 0 for none (default 8192)"
    )
    limits.add_argument(
        "--clone-timeout", type=float, default=300.0, metavar="S", help="seconds to fetch one repository (default 300)"
    )
    grading = p.add_argument_group("passed to every grading")
    grading.add_argument("--rubric", type=Path, help="a rubric TOML (see grade --print-rubric)")
    grading.add_argument(
        "--isolation",
        choices=ISOLATION_CHOICES,
        help="sandbox for the students' code (default: the strongest that works here)",
    )
    grading.add_argument(
        "--overrides",
        type=Path,
        metavar="FILE",
        help="per-student model/transforms/folder pins (TOML or CSV; see grader/batch/overrides.py)",
    )
    grading.add_argument(
        "--checks", type=Path, action="append", metavar="DIR", help="a folder of the course's own checks; may repeat"
    )
    grading.add_argument(
        "--accept-unsandboxed", action="store_true", help="decide accuracy even where no filesystem sandbox works"
    )
    grading.add_argument("--data", type=Path, help="image-folder tree DIR/{train,test}/<class>/* for training")
    grading.add_argument("--data-dir", type=Path, help="torchvision's CIFAR-10 cache")
    grading.add_argument("--epochs", type=int, help="planned epochs (within the rubric's cap)")
    limits.add_argument(
        "--launch",
        choices=["fork", "exec"],
        default="fork",
        help="start each grading forked from a server that preloaded torch (default) or as a fresh process",
    )
    engine = p.add_argument_group("engine")
    engine.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="local processes (default) or a Ray cluster"
    )
    engine.add_argument("--address", help="the Ray cluster (e.g. auto or ray://host:10001); default: a local instance")
    p.add_argument(
        "--similar-edits",
        type=int,
        default=2,
        metavar="N",
        help="layers two architectures may differ by and still be flagged as near-identical (default 2)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary line")
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from grader.batch.class_session import Batch, BatchOptions
    from grader.batch.engines import EngineError, make_engine, parse_gpus
    from grader.batch.inputs import InputError, read_input
    from grader.batch.overrides import OverridesError, load_overrides
    from grader.batch.store import BatchLocked, Store
    from grader.rubric import RubricError, load_rubric

    for name in ("jobs", "per_gpu"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.ahead is not None and args.ahead < 0:
        parser.error("--ahead must be 0 or more")
    if args.timeout <= 0 or args.train_timeout <= 0:
        parser.error("timeouts must be positive")
    try:
        rubric = load_rubric(args.rubric, args.checks)
        overrides = load_overrides(args.overrides) if args.overrides else {}
        entries = read_input(args.input, exclude=args.out)
        gpus = parse_gpus(args.gpus if args.gpus is not None else ("all" if args.train else None))
    except (RubricError, InputError, EngineError, OverridesError) as exc:
        parser.error(str(exc))
    unknown = sorted(set(overrides) - {e.student for e in entries})
    if unknown:
        parser.error(f"--overrides names students that are not in the input: {', '.join(unknown)}")
    if not entries:
        parser.error(f"no submissions in {args.input} (sub-folders, .zip files, or CSV rows)")
    train = args.train if args.train is not None else bool(parse_gpus("all"))
    todo = _select(entries, args.only, parser)
    jobs = args.jobs or os.cpu_count() or 1
    out = args.out.resolve()
    store = Store(out)
    hide = [str(args.input.resolve()), str(out)] if args.input.is_dir() else [str(out)]
    grade_args = _passthrough(args)
    opts = BatchOptions(
        out=out,
        train=train,
        force=args.force,
        timeout_s=args.timeout,
        train_timeout_s=args.train_timeout,
        clone_timeout_s=args.clone_timeout,
        memory_mb=args.memory_mb or None,
        threads_per_job=max(1, (os.cpu_count() or 1) // jobs),
        grade_args=grade_args,
        hide=hide,
        formats=set(args.format),
        max_edits=args.similar_edits,
        quiet=args.quiet,
        launch=args.launch,
        overrides=overrides,
    )
    engine = None
    try:
        with store.locked():
            restored = store.recover()
            # Ahead of its turn a grading only loads libraries: that helps where cores would idle, and on
            # busy cores it only competes with the gradings at work (benchmarks/batch.py measures both).
            ahead = max(0, (os.cpu_count() or 1) - jobs) if args.ahead is None else args.ahead
            engine = make_engine(args.engine, jobs, gpus, args.per_gpu, store.units, args.address, ahead)
            batch = Batch(opts, rubric, store, engine)
            if restored:
                batch.log(f"restored after a crash: {', '.join(restored)}")
            outcomes, table = batch.run(entries, todo)
            store.tidy()
    except (BatchLocked, EngineError) as exc:
        print(f"grade batch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished students are saved; run the same command again to resume", file=sys.stderr)
        if engine is not None:
            engine.close()
        sys.stderr.flush()
        os._exit(130)  # not sys.exit: that would wait for the gradings still running in threads
    finally:
        if engine is not None:
            engine.close()
    graded = {e.student for e in todo}
    rows = [r for r in table.rows if r["student"] in graded]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "error", "not_graded")}
    skipped = sum(o.state == "skipped" for o in outcomes)
    print(
        f"{len(rows)} students: {counts['passed']} passed, {counts['failed']} failed a rule, {counts['error']} broke"
        f" ({len(outcomes) - skipped} graded now, {skipped} unchanged) -> {out / 'index.html'}"
    )
    return 0 if counts["passed"] == len(rows) else 1


def _select(entries: list, only: list[str] | None, parser: argparse.ArgumentParser) -> list:
    if not only:
        return entries
    wanted = set(only)
    chosen = [e for e in entries if e.student in wanted or e.original in wanted]
    known = {e.student for e in chosen} | {e.original for e in chosen}
    missing = sorted(wanted - known)
    if missing:
        parser.error(f"--only names students that are not in the input: {', '.join(missing)}")
    return chosen


def _passthrough(args: argparse.Namespace) -> list[str]:
    """The options every `grade` run gets (paths made absolute: the grader runs elsewhere)."""
    out: list[str] = []
    for flag, value in (
        ("--rubric", args.rubric),
        ("--isolation", args.isolation),
        ("--data", args.data),
        ("--data-dir", args.data_dir),
        ("--epochs", args.epochs),
    ):
        if value is not None:
            out += [flag, str(value.resolve()) if isinstance(value, Path) else str(value)]
    if args.accept_unsandboxed:
        out.append("--accept-unsandboxed")
    for folder in args.checks or []:
        out += ["--checks", str(folder.resolve())]
    return out
