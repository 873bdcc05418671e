"""Progress of the whole class: graded / failed / broke / skipped and an ETA, on a live bar or as plain lines.

Trusted side.

The ETA counts only submissions graded in this run (skipped ones finish instantly and would make it
too hopeful): time since the first grading started / graded so far x still to grade.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ClassProgress:
    def __init__(self, total: int, quiet: bool = False, stream: TextIO | None = None):
        self.total = total
        self.graded = self.failed = self.broke = self.skipped = 0
        self.quiet = quiet
        self._lock = threading.Lock()
        self._started: float | None = None
        self._console = Console(file=stream or sys.stderr)
        self._live = None
        if not quiet and self._console.is_terminal:
            self._live = Progress(
                TextColumn("[bold]grading[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self._console,
            )
            self._task = self._live.add_task(self._text(), total=total)
            self._live.start()

    def started(self) -> None:
        """A grading began (the ETA clock starts at the first)."""
        with self._lock:
            if self._started is None:
                self._started = time.monotonic()

    def finished(self, student: str, status: str, detail: str = "") -> None:
        """``status``: passed, failed (a rule failed), error (the submission or the grader broke) or skipped."""
        with self._lock:
            if status == "skipped":
                self.skipped += 1
            else:
                self.graded += 1
                if status == "failed":
                    self.failed += 1
                elif status == "error":
                    self.broke += 1
            done = self.graded + self.skipped
            line = f"[{done}/{self.total}] {student}: {status}{f' ({detail})' if detail else ''}"
            if self._live is not None:
                self._live.update(self._task, completed=done, description=self._text())
                self._live.console.print(line, markup=False, highlight=False, soft_wrap=True)
            elif not self.quiet:
                self._console.print(f"{line}  {self._text()}", markup=False, highlight=False, soft_wrap=True)

    def eta_s(self) -> float | None:
        left = self.total - self.graded - self.skipped
        if self._started is None or self.graded == 0 or left <= 0:
            return None if left > 0 else 0.0
        return (time.monotonic() - self._started) / self.graded * left

    def _text(self) -> str:
        eta = self.eta_s()
        eta_text = "-" if eta is None else _duration(eta)
        counts = f"graded {self.graded} · failed {self.failed} · broke {self.broke} · skipped {self.skipped}"
        return f"{counts} · ETA {eta_text}"

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
