"""The trusted training and evaluation: the rebuilt train graph, the grader's initialisation, the
evaluation that one image cannot share with another, checkpoints that load exactly."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.analysis.batch import batch_mixing
from grader.child.graph_export import export_model
from grader.graph import GraphError, LoadedGraph, load_graph
from grader.training import recipe
from grader.training.consistency import Consistency, flipped, shifted
from grader.training.evaluate import BatchDependent, check_checkpoint, evaluate, evaluation_order
from grader.training.initialise import initialise, parameter_roles
from grader.training.pipelines import PipelineRefused, canonical, rebuild

HERE = Path(__file__).parent


class Small(nn.Module):
    """A small CIFAR-shaped net with every role: conv (+bias), depthwise, BN, linear, dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.c2 = nn.Sequential(
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)
        )
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c2(self.c1(x)))
        return self.fc(self.drop(F.adaptive_avg_pool2d(x, 1).flatten(1)))


def both_graphs(model: nn.Module) -> tuple[LoadedGraph, LoadedGraph]:
    graphs = []
    tensors: dict[str, torch.Tensor] = {}
    for mode in ("eval", "train"):
        graph, found = export_model(model, (3, 32, 32), HERE, mode)
        graphs.append(json.loads(json.dumps(graph)))
        tensors |= found
    return load_graph(graphs[0], tensors), load_graph(graphs[1], tensors)


@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, LoadedGraph, LoadedGraph]:
    torch.manual_seed(0)
    model = Small()
    return (model, *both_graphs(model))


def images(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    x = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.uint8)
    for i, label in enumerate(labels):  # a class is a bright square at its own place
        y0, x0 = divmod(int(label), 4)
        x[i, 4 + 6 * y0 : 10 + 6 * y0, 4 + 6 * x0 : 10 + 6 * x0] = 250
    return x, labels.astype(np.int64)


def test_the_train_graph_trains_exactly_as_the_module_from_the_same_weights(small):
    """Two epochs of the recipe (dropout, BN statistics, Nesterov SGD, weight decay): the rebuilt train
    graph gives the module's losses and weights bit for bit when both start from the grader's values."""
    module, _eval_graph, train_graph = small
    graph_model = copy.deepcopy(train_graph.model)
    initialise(train_graph, 0, graph_model)
    module = copy.deepcopy(module)
    start = graph_model.tensors_by_target()
    module.load_state_dict({k: start[k] for k in module.state_dict()})
    x, y = images()
    hyp = dict(recipe.HYP, epochs=2, batch_size=16, workers=0)
    runs = []
    for model in (module, graph_model):
        runs.append([(s.train_loss, s.train_acc) for s in recipe.train(model, x, y, None, hyp, torch.device("cpu"))])
    assert runs[0] == runs[1]
    after = graph_model.tensors_by_target()
    assert all(torch.equal(after[k], v) for k, v in module.state_dict().items())
    assert not torch.equal(after["c1.1.running_mean"], torch.zeros(8))  # BatchNorm's statistics were updated


def test_every_parameter_gets_pytorchs_default_for_its_role_from_the_course_seed(small):
    _module, _eval_graph, train_graph = small
    roles = {r.target: r.role for r in parameter_roles(train_graph).values()}
    assert roles == {
        "c1.0.weight": "conv weight",
        "c1.0.bias": "conv bias",
        "c1.1.weight": "norm weight",
        "c1.1.bias": "norm bias",
        "c2.0.weight": "conv weight",
        "c2.1.weight": "conv weight",
        "c2.1.bias": "conv bias",
        "c2.2.weight": "norm weight",
        "c2.2.bias": "norm bias",
        "fc.weight": "linear weight",
        "fc.bias": "linear bias",
    }
    model = copy.deepcopy(train_graph.model)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)  # the student's initial values: none survives
        for b in model.buffers():
            b.fill_(7)
    initialise(train_graph, 0, model)
    values = model.tensors_by_target()
    for target, fan_in in (("c1.0.weight", 27), ("c2.0.weight", 9), ("c2.1.weight", 8), ("fc.weight", 16)):
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)), as nn.Conv2d and nn.Linear
        assert float(values[target].abs().max()) <= bound and float(values[target].abs().max()) > 0.5 * bound
        bias = target.replace("weight", "bias")
        if bias in values:
            assert float(values[bias].abs().max()) <= bound
    assert torch.equal(values["c1.1.weight"], torch.ones(8)) and torch.equal(values["c1.1.bias"], torch.zeros(8))
    assert torch.equal(values["c1.1.running_mean"], torch.zeros(8)) and torch.equal(
        values["c1.1.running_var"], torch.ones(8)
    )
    assert int(values["c1.1.num_batches_tracked"]) == 0
    again = copy.deepcopy(train_graph.model)
    initialise(train_graph, 0, again)
    other = copy.deepcopy(train_graph.model)
    initialise(train_graph, 1, other)
    assert all(torch.equal(v, again.tensors_by_target()[k]) for k, v in values.items())
    assert not torch.equal(values["c1.0.weight"], other.tensors_by_target()["c1.0.weight"])


class Mixer(nn.Module):
    """Per image in training; in eval mode each output also reads the batch's mean."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if not self.training:
            x = x + x.mean(0, keepdim=True)
        return self.fc(x)


def test_an_eval_graph_that_reads_its_batch_is_found_statically_and_by_its_effect():
    torch.manual_seed(0)
    mixer = Mixer()
    eval_graph, _ = both_graphs(mixer)
    assert batch_mixing(eval_graph) and batch_mixing(eval_graph)[0].startswith("mean takes the batch away")
    x = torch.randn(40, 3, 32, 32)
    y = torch.arange(40) % 10
    with pytest.raises(BatchDependent, match="gets other outputs when the rest of its batch changes"):
        evaluate(eval_graph.model, x, y, torch.device("cpu"), batch_size=16)
    per_image = copy.deepcopy(mixer)
    per_image.forward = lambda t: mixer.fc(t.flatten(1))  # the same weights, per image
    result = evaluate(per_image, x, y, torch.device("cpu"), batch_size=16)
    expected = mixer.fc(x.flatten(1)).argmax(1)
    assert np.array_equal(result.predictions, expected.numpy())  # back in the split's order


def test_the_evaluation_order_is_a_seeded_shuffle():
    first, again, other = evaluation_order(100, 0), evaluation_order(100, 0), evaluation_order(100, 1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert sorted(first.tolist()) == list(range(100)) and first.tolist() != list(range(100))


def test_the_reference_graph_mixes_nothing(exported):
    import sys

    sys.path.insert(0, str(HERE.parents[1] / "reference_solution"))
    from model import Net  # the reference solution

    assert batch_mixing(exported(Net, "reference").loaded) == []


class Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)
        self.register_buffer("seen", torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        self.seen.add_(x.sum(0))  # remembers what it was shown
        return self.fc(x + self.seen)


def test_a_forward_that_writes_its_own_tensors_is_refused():
    graph, tensors = export_model(Counter(), (3, 32, 32), HERE, "eval")
    with pytest.raises(GraphError, match="writes into buffer seen with add_") as caught:
        load_graph(json.loads(json.dumps(graph)), tensors)
    assert caught.value.kind == "writes_own_tensor"


def test_a_checkpoint_must_load_exactly(small):
    module, eval_graph, _ = small
    state = {k: v.clone() for k, v in module.state_dict().items()}
    check_checkpoint(eval_graph, state)
    for broken, words in (
        (state | {"extra": torch.zeros(3)}, "tensors the model does not hold: extra"),
        ({k: v for k, v in state.items() if k != "fc.bias"}, "missing fc.bias"),
        (state | {"fc.bias": state["fc.bias"].double()}, "fc.bias is float64, the model's is float32"),
        (state | {"fc.bias": torch.zeros(11)}, "fc.bias has shape [11]"),
    ):
        with pytest.raises(GraphError, match=re.escape(words)) as caught:
            check_checkpoint(eval_graph, broken)
        assert caught.value.kind == "weights_mismatch"


def test_consistency_figures():
    images_ = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    assert np.array_equal(flipped(images_)[:, :, 0], images_[:, :, 3])
    moved = shifted(images_, 2, 2)
    assert np.array_equal(moved[:, 2:, 2:], images_[:, :2, :2])  # moved right and down
    assert np.array_equal(moved[:, 0, 2:], images_[:, 2, :2])  # the uncovered rows reflected in

    def right(n: int, share: float, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).permutation(n) < round(share * n)

    test = right(10_000, 0.86, 0)
    honest = Consistency(
        test, test & right(10_000, 0.985, 1), test & right(10_000, 0.975, 2), right(10_000, 0.92, 3), 3.0
    )
    assert not honest.suspected  # 1.3 and 2.2 points below: within the margin
    memorised = Consistency(np.ones(80, bool), right(80, 0.4, 4), right(80, 0.38, 5), right(10_000, 0.41, 6), 3.0)
    assert memorised.suspected
    assert memorised.explain().startswith("test accuracy 100.00% against 37.50% on test images shifted by 2 px")
    # Five points on 80 images is four images: beyond the margin, well within chance.
    small = np.arange(80) < 46  # 57.5%
    flips = small & (np.arange(80) >= 4)  # four images fewer: 52.5%
    noisy = Consistency(small, flips, small, right(10_000, 0.6, 9), 3.0)
    gap = noisy.gaps[0]
    assert gap.points > 3 and gap.z < 3 and not noisy.suspected


def test_the_trusted_pipeline_is_albumentations_own_or_the_canonical_one():
    import albumentations as A

    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    pipeline = canonical(mean, std)
    config = A.to_dict(pipeline)
    assert [t["__class_fullname__"] for t in config["transform"]["transforms"]] == [
        "HorizontalFlip",
        "ShiftScaleRotate",
        "CoarseDropout",
        "Normalize",
        "ToTensorV2",
    ]
    assert A.to_dict(rebuild(config)) == config
    reads_files = copy.deepcopy(config)
    reads_files["transform"]["transforms"].insert(0, {"__class_fullname__": "FDA", "reference_images": ["/x.png"]})
    with pytest.raises(PipelineRefused, match="FDA takes images or functions"):
        rebuild(reads_files)
    custom = copy.deepcopy(config)
    custom["transform"]["transforms"][0]["__class_fullname__"] = "model.MyFlip"
    with pytest.raises(PipelineRefused):
        rebuild(custom)


class Factory(nn.Module):
    """Creates a tensor in its forward (on the input's device): the graph records a device."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(10, dtype=x.dtype, device=x.device)
        return self.fc(x.mean((2, 3))) + steps


def test_moving_a_rebuilt_graph_moves_what_it_creates_too():
    """The GPU branch, checked on the CPU: every tensor the graph makes follows the model's device."""
    graph, tensors = export_model(Factory(), (3, 32, 32), HERE, "eval")
    loaded = load_graph(json.loads(json.dumps(graph)), tensors)
    model = copy.deepcopy(loaded.model).move_to(torch.device("meta"))
    devices = [n.kwargs["device"] for n in model.gm.graph.nodes if n.op == "call_function" and "device" in n.kwargs]
    assert devices and all(d == torch.device("meta") for d in devices)
    assert all(t.device.type == "meta" for t in model.state_dict().values())
    out = model(torch.zeros(2, 3, 32, 32, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (2, 10)
    # The evaluation moves the rebuilt graph the same way (a copy of the CPU one, as for every epoch).
    cpu_copy = copy.deepcopy(loaded.model)
    with pytest.raises(NotImplementedError):  # meta tensors have no values to compare: it got that far
        evaluate(cpu_copy, torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), torch.device("meta"), 2)
    nodes = [n for n in cpu_copy.gm.graph.nodes if n.op == "call_function" and "device" in n.kwargs]
    assert all(n.kwargs["device"] == torch.device("meta") for n in nodes)
