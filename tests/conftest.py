"""Shared fixtures: fixture submissions built into a temp folder and graded once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from grading import Graded
from layers import FILESYSTEM_LAYERS, require

# Fixture files are data for the grader (course check files among them), never the project's tests.
collect_ignore = ["fixtures"]


@pytest.fixture(params=FILESYSTEM_LAYERS)
def layer(request: pytest.FixtureRequest) -> str:
    """Each filesystem sandbox layer in turn (bubblewrap with Landlock inside, Landlock alone)."""
    require(request.param)
    return request.param


@pytest.fixture(scope="session")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    g = Graded(tmp_path_factory.mktemp("graded"))
    yield g
    g.pool.shutdown(wait=False, cancel_futures=True)
