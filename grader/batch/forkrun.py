"""Start a grading as a fresh process forked from a fork server that already imported torch and the grader.

Trusted side.

``multiprocessing``'s fork server is a clean process started once per batch (never a fork of the batch
itself, which runs threads); it preloads ``grader.batch.warm``. Each grading is forked from it, so it is
a process of its own, as with ``python -m grader``, without paying the imports again. The forked
process puts itself in a session of its own (the batch kills its tree on timeout), asks the kernel to
kill it when the fork server dies (which happens when the batch dies, even from ``kill -9``), sends its
output to the unit's log, applies the memory limit and then runs ``grader.cli.main``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

PROCESS_NAME = b"s6-batch-grade"  # at most 15 bytes (the kernel's comm)
_lock = threading.Lock()
_context: multiprocessing.context.ForkServerContext | None = None


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def _ctx() -> multiprocessing.context.ForkServerContext:
    global _context
    with _lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["grader.batch.warm"])
            _context = ctx
        return _context


def start(
    argv: list[str],
    log_path: Path,
    env: dict[str, str],
    memory_mb: int | None,
    threads: int,
    name: bytes = PROCESS_NAME,
    turn: Connection | None = None,
) -> multiprocessing.context.ForkServerProcess:
    """Start ``grade ARGV`` (the arguments after ``grade``) in a forked process named ``name`` (at most 15
    bytes); returns it started. ``turn``: the grading starts its probe child, then waits until something
    arrives there (the batch's CPU slot is free) before it reads the submission."""
    process = _ctx().Process(
        target=_child, args=(argv, str(log_path), env, memory_mb, threads, name, turn), daemon=False
    )
    process.start()
    return process


def _child(
    argv: list[str],
    log_path: str,
    env: dict[str, str],
    memory_mb: int | None,
    threads: int,
    name: bytes,
    turn: Connection | None = None,
) -> None:
    import ctypes
    import resource
    import signal
    import sys
    import traceback

    os.setsid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the fork server
        libc.prctl(15, name[:15])  # PR_SET_NAME: findable in ps/top (and by the tests)
    except (OSError, AttributeError):
        pass
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    if memory_mb:
        from grader.batch.launch import limit_data

        limit_data(memory_mb)
    code = 1
    try:
        import torch

        torch.set_num_threads(max(1, threads))  # OMP_NUM_THREADS is read at import, which already happened
        from grader.cli import main

        code = main(argv, wait_turn=_waiter(turn) if turn is not None else None)
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = 1
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    # What the kernel counts here: bubblewrap's PID namespace reaps the sandboxed child inside it, so
    # that child's CPU (most of a no-train grading's) is not in it; benchmarks/batch.py reads /proc/stat.
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    print(f"[batch] cpu {cpu:.1f} s (this process and the children it reaped; not a bubblewrap child)", file=sys.stderr)
    # A normal exit (multiprocessing turns SystemExit into the exit code) runs the finalizers, so that
    # locks the grading made (tqdm makes multiprocessing ones) are released and not reported as leaked.
    sys.exit(code)


def _waiter(turn: Connection) -> Callable[[float | None], bool]:
    """``wait_turn(timeout)``: True once the batch says go; the batch gone (the pipe closed) ends this
    process, whose grading nobody would collect."""

    def wait_turn(timeout: float | None) -> bool:
        if not turn.poll(timeout):
            return False
        try:
            turn.recv_bytes()
        except EOFError:
            os._exit(1)
        return True

    return wait_turn
