"""Hostile submissions that try to buy the accuracy verdict or dodge a model rule (the `grade` CLI).

Each is what a student who wants the grade might write once they know how the grader works: patch the
grader from inside the process, carry the public test set in integer tables (in the code, or only in a
checkpoint), read the other images of the batch at evaluation, hide weights in int8 buffers, show the
exporter another network, forge the pipeline's description, or ask grade.toml for a cheaper schedule.
Every one must get a true verdict, typed, whatever the sandbox layer.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.data import make_image_folder
from fixtures.submissions import BASE
from grading import by_id, run_grade

FAST = """
[rules.accuracy]
target = {target}

[rules.params]
hidden_budget = {budget}

[training]
epochs = {epochs}
batch_size = 32
lr = 0.8
"""
GRAPH_RULES = ("no_maxpool", "architecture", "receptive_field", "depthwise_separable", "dilated", "gap", "params")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "tiny")


def rubric(folder: Path, target: float = 99.0, epochs: int = 1, budget: int = 1024) -> str:
    path = folder / "rubric.toml"
    path.write_text(FAST.format(target=target, epochs=epochs, budget=budget))
    return str(path)


def copy_base(tmp_path: Path, name: str = "sub") -> Path:
    sub = tmp_path / name
    shutil.copytree(BASE, sub)
    return sub


def edit(sub: Path, file: str, old: str, new: str) -> None:
    text = (sub / file).read_text()
    assert old in text, f"{old!r} not in {file}"
    (sub / file).write_text(text.replace(old, new, 1))


def checks(results: dict) -> dict[str, dict]:
    return by_id(results)


# ---- no student code where the grader trains ---------------------------------------------------------------

_MARKER = """
import os as _os
with open({marker!r}, "a") as _f:
    _f.write(f"imported in pid {{_os.getpid()}}\\n")
"""


def test_the_students_module_is_imported_once_in_the_probe_and_never_where_the_grader_trains(tmp_path, data):
    """Plain isolation (the child may write anywhere): a module that leaves a mark on import leaves one."""
    marker = tmp_path / "imports.txt"
    sub = copy_base(tmp_path)
    (sub / "model.py").write_text(_MARKER.format(marker=str(marker)) + (sub / "model.py").read_text())
    args = ["--train", "--data", str(data), "--isolation", "plain", "--accept-unsandboxed"]
    _, results, out = run_grade(sub, tmp_path / "out", *args, "--rubric", rubric(tmp_path, epochs=2))
    training = results["facts"]["training"]
    assert training["error"] is None and training["epochs_run"] == 2, (training.get("error"), out[-1500:])
    assert len(marker.read_text().splitlines()) == 1, marker.read_text()


_PATCH = """
import grader.training.recipe as _recipe

_real = _recipe.train


def _train(model, *args, **kwargs):  # would hand back weights trained elsewhere
    yield from _real(model, *args, **kwargs)


_recipe.train = _train
"""


def test_code_that_patches_the_grader_decides_nothing_read_from_the_graph(tmp_path, data, layer):
    sub = copy_base(tmp_path)
    (sub / "model.py").write_text(_PATCH + (sub / "model.py").read_text())
    _, results, _out = run_grade(
        sub, tmp_path / "out", "--train", "--data", str(data), "--isolation", layer, "--rubric", rubric(tmp_path, 50)
    )
    by = checks(results)
    for rule in GRAPH_RULES:
        assert by[rule]["status"] == "error", (rule, by[rule]["message"])
        assert by[rule]["evidence"].get("error_type") == "watches_grader"
        assert "model.py:2: import grader.training.recipe" in by[rule]["message"]
    assert by["accuracy"]["status"] == "error" and "asks whether it is being exported" in by["accuracy"]["message"]
    assert by["accuracy"]["evidence"]["error_type"] == "watches_grader"
    assert results["facts"]["training"] is None


def test_a_max_pool_that_runs_unless_exported_is_not_believed(tmp_path):
    sub = copy_base(tmp_path)
    edit(sub, "model.py", "import torch.nn.functional as F\n", "import torch\nimport torch.nn.functional as F\n")
    edit(
        sub,
        "model.py",
        "        x = self.c4(self.c3(self.c2(self.c1(x))))\n",
        "        x = self.c1(x)\n"
        "        if not torch.compiler.is_exporting():\n"
        "            x = F.max_pool2d(x, 3, stride=1, padding=1)\n"
        "        x = self.c4(self.c3(self.c2(x)))\n",
    )
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train")
    by = checks(results)
    assert by["no_maxpool"]["status"] == "error" and "is_exporting" in by["no_maxpool"]["message"]
    assert by["no_maxpool"]["evidence"]["error_type"] == "watches_grader"
    assert all(by[rule]["status"] != "passed" for rule in GRAPH_RULES)


_FORGE = """
import grader.child.probe as _probe

_real = _probe.describe_pipeline


def _forged(pipeline, site, out):
    import albumentations as A

    shown = A.Compose([A.HorizontalFlip(), A.ShiftScaleRotate(), A.CoarseDropout(num_holes_range=(1, 1),
        hole_height_range=(16, 16), hole_width_range=(16, 16), fill=(125, 123, 114))])
    return _real(shown, site, out)


_probe.describe_pipeline = _forged
"""


def test_a_forged_pipeline_description_does_not_pass_the_augmentations(tmp_path):
    """The pipeline has no augmentation at all; the child is made to describe a perfect one."""
    sub = copy_base(tmp_path)
    (sub / "transforms.py").write_text(
        "import albumentations as A\nfrom albumentations.pytorch import ToTensorV2\n"
        + _FORGE
        + "\ntrain_transforms = A.Compose([A.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), ToTensorV2()])\n"
    )
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train")
    augmentations = checks(results)["augmentations"]
    assert augmentations["status"] != "passed", augmentations["message"]


# ---- the public test set in a table -------------------------------------------------------------------------


def hash_table(data: Path) -> np.ndarray:
    """(hash, label) per test image, as the lookup model below computes the hash after the base's Normalize."""
    import albumentations as A

    from grader.training.data import load_split
    from grader.training.evaluate import preprocess

    spec = importlib.util.spec_from_file_location("_base_transforms", BASE / "transforms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    split = load_split("test", data)
    x = preprocess(split.images, A.to_dict(module.train_transforms))
    weights = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(1, 3, 32, 32) / 3072.0
    hashes = (x * weights).sum(dim=(1, 2, 3)) * 100
    assert float(torch.diff(hashes.sort().values).min()) > 5  # far apart: a tolerance of 2 finds each
    return np.ascontiguousarray(np.stack([hashes.round().numpy().astype(np.int64), split.labels]).T)


_LOOKUP = """
    def forward(self, x):
        import torch

        logits = self.fc(self.gap(self.c4(self.c3(self.c2(self.c1(x))))).view(-1, 64))
        weights = torch.arange(3 * 32 * 32, dtype=x.dtype, device=x.device).reshape(1, 3, 32, 32) / 3072.0
        hashes = (x * weights).sum(dim=(1, 2, 3)) * 100
        table = self.table.to(x.dtype)
        hit = ((hashes[:, None] - table[None, :, 0]).abs() < 2).to(x.dtype)
        label = hit @ table[:, 1]
        classes = torch.arange(10, dtype=x.dtype, device=x.device)
        onehot = (label[:, None] == classes[None, :]).to(x.dtype) * hit.sum(1, keepdim=True)
        return F.log_softmax(logits + 1000.0 * onehot, dim=1)
"""


def lookup_submission(tmp_path: Path, table: str, name: str = "lookup") -> Path:
    """The base with a lookup table of test images added to its logits; ``table`` is the line that
    registers ``self.table`` (its values come from the code, or only from a checkpoint)."""
    sub = copy_base(tmp_path, name)
    model = (sub / "model.py").read_text()
    model = model.replace("        self.fc = nn.Linear(64, 10)\n", f"        self.fc = nn.Linear(64, 10)\n{table}\n")
    model = model[: model.index("    def forward(self, x):")] + _LOOKUP.lstrip("\n")
    (sub / "model.py").write_text("import torch\n" + model)
    return sub


def test_an_integer_table_of_the_test_set_in_the_code_is_hidden_data(tmp_path, data, layer):
    """80 test images: a budget of 100 numbers stands for the default 1,024 against CIFAR-10's 10,000."""
    table = hash_table(data)
    sub = lookup_submission(tmp_path, f"        self.register_buffer('table', torch.tensor({table.tolist()}))")
    _, results, out = run_grade(
        sub,
        tmp_path / "out",
        "--train",
        "--data",
        str(data),
        "--isolation",
        layer,
        "--rubric",
        rubric(tmp_path, budget=100),
    )
    by = checks(results)
    assert by["params"]["status"] == "failed" and by["params"]["message"].startswith("hidden data"), by["params"]
    assert "table (buffer, int64 [80, 2]" in by["params"]["message"]
    assert by["accuracy"]["status"] == "error" and "hidden data" in by["accuracy"]["message"], out[-1500:]
    assert results["facts"]["training"] is None  # no figure is reported for it at all


def test_the_table_only_in_a_checkpoint_is_hidden_data_too(tmp_path, data):
    """The code leaves the int64 table at zero; the submitted checkpoint carries it."""
    table = hash_table(data)
    sub = lookup_submission(tmp_path, "        self.register_buffer('table', torch.zeros(80, 2, dtype=torch.int64))")
    _, first, _ = run_grade(BASE, tmp_path / "base", "--train", "--data", str(data), "--rubric", rubric(tmp_path, 101))
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tmp_path / "base" / "trained.safetensors"))
    weights["table"] = torch.from_numpy(np.ascontiguousarray(table))
    save_file(weights, str(tmp_path / "ckpt.safetensors"))
    _, results, _ = run_grade(
        sub, tmp_path / "out", "--weights", str(tmp_path / "ckpt.safetensors"), "--data", str(data), "--rubric",
        rubric(tmp_path, budget=100),
    )  # fmt: skip
    by = checks(results)
    assert by["params"]["status"] == "failed" and "hidden data" in by["params"]["message"]
    assert by["accuracy"]["status"] == "error" and "hidden data" in by["accuracy"]["message"]
    assert first["facts"]["training"]["error"] is None


def test_a_table_in_a_float_parameter_is_caught_by_the_consistency_figures(tmp_path, data):
    """Within the parameter budget, in an nn.Parameter: the checkpoint scores 100% on the test images
    and far less on the same images flipped or shifted, and on training images: memorisation suspected.
    Trained by the grader, the table is the grader's own initial values, not the test set."""
    table = hash_table(data).astype(np.float32)
    line = "        self.table = nn.Parameter(torch.zeros(80, 2), requires_grad=False)"
    sub = lookup_submission(tmp_path, line)
    _, trained, out = run_grade(sub, tmp_path / "t", "--train", "--data", str(data), "--rubric", rubric(tmp_path, 101))
    training = trained["facts"]["training"]
    assert training["error"] is None, (training["error"], out[-1500:])
    assert training["initialised"]["table"] == "other weight"  # the grader's values, not the student's
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tmp_path / "t" / "trained.safetensors"))
    weights["table"] = torch.from_numpy(np.ascontiguousarray(table))
    save_file(weights, str(tmp_path / "ckpt.safetensors"))
    _, results, _ = run_grade(
        sub, tmp_path / "out", "--weights", str(tmp_path / "ckpt.safetensors"), "--data", str(data), "--rubric",
        rubric(tmp_path, target=85),
    )  # fmt: skip
    training = results["facts"]["training"]
    assert training["best_test_acc"] == 100.0
    figures = training["consistency"]
    assert figures["suspected"] and figures["flipped"] < 97 and figures["shifted"] < 97, figures
    accuracy = checks(results)["accuracy"]
    assert accuracy["status"] == "failed" and accuracy["message"].startswith("memorisation suspected"), accuracy
    assert "flipped test images" in accuracy["message"]


def test_an_honest_checkpoint_is_consistent(tmp_path, data):
    """The control: the grader's own trained weights, evaluated as a checkpoint, raise no suspicion."""
    _, _trained, _ = run_grade(
        BASE, tmp_path / "t", "--train", "--data", str(data), "--rubric", rubric(tmp_path, 101, 3)
    )
    weights = tmp_path / "t" / "trained.safetensors"
    _, results, _ = run_grade(
        BASE, tmp_path / "out", "--weights", str(weights), "--data", str(data), "--rubric", rubric(tmp_path, 0)
    )
    figures = results["facts"]["training"]["consistency"]
    assert not figures["suspected"], figures
    assert checks(results)["accuracy"]["status"] == "passed"


# ---- the batch at evaluation ----------------------------------------------------------------------------------


def test_a_model_that_reads_its_batch_at_evaluation_is_refused(tmp_path, data, layer):
    """One eval-only line adds the batch mean of the last feature map; the test split is read in class
    order by the image folder: without the shuffle and the check, whole batches would be one class."""
    sub = copy_base(tmp_path)
    edit(
        sub,
        "model.py",
        "        x = self.c4(self.c3(self.c2(self.c1(x))))\n",
        "        x = self.c4(self.c3(self.c2(self.c1(x))))\n"
        "        if not self.training:\n"
        "            x = x + x.mean(0, keepdim=True)\n",
    )
    _, results, out = run_grade(
        sub, tmp_path / "out", "--train", "--data", str(data), "--isolation", layer, "--rubric", rubric(tmp_path, 50)
    )
    accuracy = checks(results)["accuracy"]
    assert accuracy["status"] == "error" and accuracy["message"].startswith("refused: mean takes the batch away")
    assert accuracy["evidence"]["error_type"] == "batch_dependent"
    assert "model.py:" in accuracy["message"]
    assert results["facts"]["batch_mixing"], out[-1000:]


# ---- weights outside the parameters ------------------------------------------------------------------------


def test_int8_weights_dequantised_in_the_forward_count_and_are_hidden_data(tmp_path, layer):
    sub = copy_base(tmp_path)
    edit(sub, "model.py", "import torch.nn.functional as F\n", "import torch\nimport torch.nn.functional as F\n")
    edit(
        sub,
        "model.py",
        "        self.fc = nn.Linear(64, 10)\n",
        "        self.fc = nn.Linear(64, 10)\n"
        "        self.register_buffer('q', torch.randint(-127, 127, (64, 64, 3, 3), dtype=torch.int8))\n",
    )
    edit(
        sub,
        "model.py",
        "        x = self.c4(self.c3(self.c2(self.c1(x))))\n",
        "        x = self.c4(self.c3(self.c2(self.c1(x))))\n"
        "        x = F.conv2d(x, self.q.float() / 127.0, padding=1)\n",
    )
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train", "--isolation", layer)
    params = checks(results)["params"]
    assert params["status"] == "failed" and "hidden data" in params["message"]
    assert "q (buffer, int8 [64, 64, 3, 3]" in params["message"]
    assert params["evidence"]["params"] == params["evidence"]["trainable"] + 64 * 64 * 9


# ---- grade.toml ----------------------------------------------------------------------------------------------


def test_grade_toml_sets_only_what_the_rubric_allows(tmp_path, data):
    sub = copy_base(tmp_path)
    (sub / "grade.toml").write_text(
        "[grade.training]\nbatch_size = 1\nbn_batch = 1\nplain_final_epochs = 20\nepochs = 2\nseed = 4\n"
    )
    _, results, out = run_grade(
        sub, tmp_path / "out", "--train", "--data", str(data), "--rubric", rubric(tmp_path, 101, 6)
    )
    training = results["facts"]["training"]
    assert training["error"] is None, out[-1500:]
    assert training["hyp"]["epochs"] == 2 and training["epochs_run"] == 2  # epochs: allowed, within 1-30
    assert (training["hyp"]["batch_size"], training["hyp"]["bn_batch"], training["hyp"]["plain_final_epochs"]) == (
        32,
        0,
        0,
    )
    notes = " | ".join(training["notes"])
    for key in ("batch_size=1", "bn_batch=1", "plain_final_epochs=20"):
        assert f"training setting {key} ignored: a submission may set epochs" in notes
    assert "seed=4 ignored" in notes
    assert training["compute"] == {"epochs": 2, "images": 2 * 240, "seconds": training["compute_s"]}
    assert any("batch_size=1 ignored" in w for w in checks(results)["accuracy"]["warnings"])


# ---- limits --------------------------------------------------------------------------------------------------


def test_a_graph_over_the_memory_budget_is_a_typed_error_not_a_crash(tmp_path, data):
    path = Path(rubric(tmp_path, 50))
    path.write_text(path.read_text() + "\n[limits]\ntrain_memory_mb = 1\n")
    code, results, out = run_grade(BASE, tmp_path / "out", "--train", "--data", str(data), "--rubric", str(path))
    training = results["facts"]["training"]
    assert training["error"]["type"] == "out_of_memory", (training["error"], out[-1500:])
    assert "train_memory_mb" in training["error"]["message"]
    assert checks(results)["accuracy"]["status"] == "failed" and code == 1
    assert results["error"] is None


def test_a_model_that_exports_only_in_eval_mode_keeps_its_model_rules(tmp_path, data):
    """Data-dependent control flow in training only: the train-mode export fails, the rules stand,
    the accuracy is a typed error."""
    sub = copy_base(tmp_path)
    edit(
        sub,
        "model.py",
        "        x = self.c4(self.c3(self.c2(self.c1(x))))\n",
        "        if self.training and float(x.sum()) > 1e9:\n"
        "            x = x * 0.5\n"
        "        x = self.c4(self.c3(self.c2(self.c1(x))))\n",
    )
    _, results, out = run_grade(sub, tmp_path / "out", "--train", "--data", str(data), "--rubric", rubric(tmp_path, 50))
    by = checks(results)
    assert by["params"]["status"] == "passed" and by["no_maxpool"]["status"] == "passed"
    error = results["facts"]["training"]["error"]
    assert error["type"] == "export_failed" and "train mode" in error["message"], out[-1500:]
    assert by["accuracy"]["status"] == "failed"
