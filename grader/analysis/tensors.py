"""Trusted facts: which of the tensors a graph reads are BatchNorm's statistics and counters.

Trusted side.

Everything else the forward reads is the model's numbers: parameters, or hidden data when it is
neither a parameter nor a BatchNorm statistic (``layers.param_facts``); the grader resets exactly these
before training (``training/initialise.py``).
"""

from __future__ import annotations

from grader.graph import LoadedGraph, Node

BN_OPS = {"batch_norm", "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training"}


def _ref(node: Node, index: int) -> str | None:
    value = node.args[index] if index < len(node.args) else None
    return value["node"] if isinstance(value, dict) and isinstance(value.get("node"), str) else None


def bn_statistics(graph: LoadedGraph) -> dict[str, str]:
    """Placeholder name -> 'running_mean' | 'running_var' for the tensors BatchNorm reads as statistics."""
    out: dict[str, str] = {}
    for node in graph.nodes:
        if node.aten in BN_OPS:
            for index, kind in ((3, "running_mean"), (4, "running_var")):
                name = _ref(node, index)
                if name:
                    out[name] = kind
    return out


def bn_counters(graph: LoadedGraph) -> set[str]:
    """Placeholder names of BatchNorm's ``num_batches_tracked``: integer scalars the forward only counts up."""
    users = graph.users()
    buffers = {i.name: i for i in graph.inputs if i.kind == "buffer"}
    return {
        name
        for name, inp in buffers.items()
        if inp.shape == ()
        and not inp.dtype.startswith(("float", "bfloat"))
        and users.get(name)
        and all(u.aten == "add_" for u in users[name])
    } | {
        # In the eval graph BatchNorm's counter is read by nothing: a 0-d integer buffer named like it.
        name
        for name, inp in buffers.items()
        if inp.shape == () and inp.target.endswith("num_batches_tracked") and not users.get(name)
    }
