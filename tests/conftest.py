"""Shared fixtures: fixture submissions built into a temp folder and graded once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from grading import Graded, run_root
from layers import FILESYSTEM_LAYERS, require

# Fixture files are data for the grader (course check files among them), never the project's tests.
collect_ignore = ["fixtures"]


# The files that take longest (minutes on 2 cores), first: with whole files per worker, one of these
# started last would leave the other workers idle at the end.
LONGEST_FIRST = (
    "test_training.py",
    "test_submissions.py",
    "hostile/test_verdicts.py",
    "hostile/test_isolation.py",
    "hostile/test_confinement.py",
    "batch/test_batch_class.py",
    "test_capture.py",
    "batch/test_batch_ray.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith("tests/" + name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: within a file, and among the others, the order stays


@pytest.fixture(params=FILESYSTEM_LAYERS)
def layer(request: pytest.FixtureRequest) -> str:
    """Each filesystem sandbox layer in turn (bubblewrap with Landlock inside, Landlock alone)."""
    require(request.param)
    return request.param


@pytest.fixture(scope="session")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    """Fixture submissions graded without training, each once per run whichever worker asks."""
    root = run_root(tmp_path_factory) / "graded-fixtures"
    root.mkdir(exist_ok=True)
    g = Graded(root)
    yield g
    g.pool.shutdown(wait=False, cancel_futures=True)
