"""Shared helpers of the unit tests: export an in-process nn.Module once and rebuild it on the trusted side."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
import torch

from grader.child.graph_export import export_model
from grader.graph import LoadedGraph, load_graph

HERE = Path(__file__).parent


@dataclass
class Exported:
    model: torch.nn.Module
    graph: dict  # the graph JSON after a JSON round trip (what the trusted side reads)
    tensors: dict[str, torch.Tensor]
    loaded: LoadedGraph

    def fresh_graph(self) -> dict:
        """A copy of the graph JSON that a test may edit."""
        return copy.deepcopy(self.graph)


_CACHE: dict[str, Exported] = {}


def _export(model: torch.nn.Module, input_shape: tuple[int, int, int] = (3, 32, 32)) -> Exported:
    model.eval()
    graph, tensors = export_model(model, input_shape, HERE)
    graph = json.loads(json.dumps(graph))
    return Exported(model, graph, tensors, load_graph(copy.deepcopy(graph), dict(tensors)))


@pytest.fixture(scope="session")
def exported():
    """``exported(factory, key=None)``: build ``factory()``, export and rebuild it once per session."""

    def get(factory, key: str | None = None, input_shape: tuple[int, int, int] = (3, 32, 32)) -> Exported:
        key = key or f"{factory.__module__}.{getattr(factory, '__qualname__', repr(factory))}"
        if key not in _CACHE:
            torch.manual_seed(0)
            _CACHE[key] = _export(factory(), input_shape)
        return _CACHE[key]

    return get
