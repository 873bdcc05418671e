"""Hostile submissions against the whole grader (`grade` CLI), under every sandbox layer this machine has.

Each case is the base fixture with import-time code that tries what a student who wants the grade
might: read the test split (or any data folder), memorise it, reach the host through links, plant
links in the children's output folders, pass notes from one child to the next, unpickle a
checkpoint. The grader must give the true verdict and put nothing of the host into any output.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fixtures.data import make_image_folder
from fixtures.submissions import BASE
from grading import REPO, by_id, run_grade
from layers import require

FAST = """
[rules.accuracy]
target = {target}

[training]
epochs = {epochs}
batch_size = 32
lr = 0.8

[limits]
probe_seconds = 60
"""
SECRET = "s6-host-secret-" + "7f3a9c"  # what a host file holds; it must reach no output


@pytest.fixture(scope="module")
def outside():
    """A folder outside /tmp and the home folder (where a TA keeps a private test split)."""
    base = "/var/tmp" if os.path.isdir("/var/tmp") else None
    if base is None:
        pytest.skip("no /var/tmp for a folder outside /tmp")
    folder = Path(tempfile.mkdtemp(prefix="s6-hostile-", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def data(outside):
    return make_image_folder(outside / "private-test")


@pytest.fixture(scope="module")
def host_file(outside):
    path = outside / "host-secret.txt"
    path.write_text(SECRET + "\n")
    return path


def rubric(folder: Path, target: float = 99.0, epochs: int = 1) -> str:
    path = folder / "rubric.toml"
    path.write_text(FAST.format(target=target, epochs=epochs))
    return str(path)


def hostile(tmp_path: Path, prelude: str, name: str = "sub") -> Path:
    sub = tmp_path / name
    shutil.copytree(BASE, sub)
    (sub / "model.py").write_text(prelude + "\n" + (sub / "model.py").read_text())
    return sub


def outputs_text(out: Path) -> str:
    return "\n".join(p.read_bytes().decode(errors="replace") for p in out.rglob("*") if p.is_file())


_SNOOP = """
import os, sys
_FOUND = []
for _folder in {folders!r}:
    try:
        _FOUND.append((_folder, sorted(os.listdir(_folder))))
    except OSError:
        pass
if _FOUND:
    raise RuntimeError(f"data readable from the sandbox: {{_FOUND}}")
"""


def test_the_data_folders_are_invisible_to_the_probe(tmp_path, data, outside, layer):
    """`--data` (a private test split outside /tmp) and `--data-dir`: no file of them in the probe."""
    cache = outside / "cifar-cache"
    (cache / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
    folders = [
        str(data),
        str(data / "test"),
        str(data / "test" / "cat"),
        str(cache),
        str(cache / "cifar-10-batches-py"),
    ]
    sub = hostile(tmp_path, _SNOOP.format(folders=folders))
    _code, results, out = run_grade(
        sub,
        tmp_path / "out",
        "--train",
        "--data",
        str(data),
        "--data-dir",
        str(cache),
        "--isolation",
        layer,
        "--rubric",
        rubric(tmp_path),
    )
    assert results["error"] is None, (results["error"], out[-2000:])  # the probe read nothing
    training = results["facts"]["training"]
    assert training["error"] is None and training["epochs_run"] == 1, (training.get("error"), out[-2000:])
    assert results["facts"]["sandbox"]["isolation"] == layer
    assert "private-test" not in results["output"]
    # What Landlock alone cannot hide is said: on the isolation line, and next to the accuracy.
    summary, accuracy = results["facts"]["sandbox"]["summary"], by_id(results)["accuracy"]
    said = [w for w in accuracy.get("warnings", []) if "names and sizes" in w]
    if layer == "landlock":
        assert "names and sizes of files outside it can be seen, not read" in summary, summary
        assert said and "--data" in said[0], accuracy.get("warnings")
    else:
        assert "names and sizes" not in summary and not said


_MEMORISE = """
import os
import numpy as _np
import torch as _torch
from PIL import Image as _Image
from transforms import mean as _MEAN, std as _STD

_TEST = {test!r}
_images, _labels = [], []
try:
    for _label, _cls in enumerate(sorted(os.listdir(_TEST))):
        for _f in sorted(os.listdir(os.path.join(_TEST, _cls))):
            _x = _np.asarray(_Image.open(os.path.join(_TEST, _cls, _f)).convert("RGB"), dtype=_np.float32) / 255.0
            _images.append(((_x - _np.array(_MEAN)) / _np.array(_STD)).transpose(2, 0, 1).reshape(-1))
            _labels.append(_label)
except OSError:
    pass
print("MEMORISED", len(_images))
if _images:
    _m = _torch.tensor(_np.stack(_images), dtype=_torch.float32)
    _MEMORY = _m / _m.norm(dim=1, keepdim=True)
    _ANSWERS = _torch.nn.functional.one_hot(_torch.tensor(_labels), 10).float()
else:  # the same graph either way: only what could be read differs
    _MEMORY = _torch.nn.functional.normalize(_torch.randn(80, 3 * 32 * 32), dim=1)
    _ANSWERS = _torch.zeros(80, 10)
"""
_RECALL = """
    def forward(self, x):
        similarity = _torch.nn.functional.linear(x.flatten(1), _MEMORY)
        recalled = _torch.nn.functional.linear(_torch.softmax(similarity * 1000.0, dim=1), _ANSWERS.t())
        x = self.c4(self.c3(self.c2(self.c1(x))))
        x = self.gap(x).view(-1, 64)
        return F.log_softmax(self.fc(x) + 100.0 * recalled, dim=1)
"""


def test_a_memorising_model_reads_nothing_and_is_refused_as_hidden_data(tmp_path, data, layer):
    """A model carrying the test images as a constant (built at import) would score 100%: under the
    sandbox it reads none of them, and the constant it carries is hidden data all the same."""
    sub = hostile(tmp_path, _MEMORISE.format(test=str(data / "test")))
    model = (sub / "model.py").read_text()
    start = model.index("    def forward(self, x):")
    (sub / "model.py").write_text(model[:start] + _RECALL.lstrip("\n"))
    _code, results, out = run_grade(
        sub, tmp_path / "out", "--train", "--data", str(data), "--isolation", layer, "--rubric", rubric(tmp_path)
    )
    assert "MEMORISED 0" in results["output"], results["output"][-1000:]
    assert results["facts"]["training"] is None, out[-1500:]
    accuracy = by_id(results)["accuracy"]
    assert accuracy["status"] == "error" and accuracy["evidence"]["error_type"] == "hidden_data"


def test_the_memorising_model_that_could_read_is_refused_as_hidden_data(tmp_path, data):
    """Control for the test above: with the test split in reach (plain, risk accepted) the model does
    memorise it, as a constant of 80 images; the forward reading it is hidden data, so no accuracy."""
    sub = hostile(tmp_path, _MEMORISE.format(test=str(data / "test")))
    model = (sub / "model.py").read_text()
    start = model.index("    def forward(self, x):")
    (sub / "model.py").write_text(model[:start] + _RECALL.lstrip("\n"))
    _, results, out = run_grade(
        sub,
        tmp_path / "out",
        "--train",
        "--data",
        str(data),
        "--isolation",
        "plain",
        "--accept-unsandboxed",
        "--rubric",
        rubric(tmp_path),
    )
    assert "MEMORISED 80" in results["output"]
    assert results["facts"]["training"] is None, out[-1500:]
    accuracy = by_id(results)["accuracy"]
    assert accuracy["status"] == "error" and accuracy["evidence"]["error_type"] == "hidden_data"
    assert by_id(results)["params"]["message"].startswith("hidden data")


def test_plain_isolation_does_not_decide_accuracy(tmp_path, data):
    _, results, _ = run_grade(
        BASE,
        tmp_path / "out",
        "--train",
        "--data",
        str(data),
        "--isolation",
        "plain",
        "--rubric",
        rubric(tmp_path, target=50),
    )
    accuracy = by_id(results)["accuracy"]
    assert accuracy["status"] == "skipped"
    assert "--accept-unsandboxed" in accuracy["message"]
    assert results["facts"]["training"] is None


_LINKS = """
import os, sys
_LINK_TO = {host!r}
for _name in ({home_link!r}, {data_link!r}):
    try:
        print("LINK READ", open(_name).read()[:40])
    except OSError:
        pass
"""


def test_links_in_the_submission_reach_nothing(tmp_path, data, host_file, layer):
    """Links to the data and to a host file, as files of the submission and as its README: not followed."""
    sub = hostile(
        tmp_path, _LINKS.format(host=str(host_file), home_link="home_link.txt", data_link="data_link/cat/0000.png")
    )
    os.symlink(host_file, sub / "home_link.txt")
    os.symlink(data / "test", sub / "data_link")
    (sub / "README.md").unlink()
    os.symlink(host_file, sub / "README.md")
    _, results, out = run_grade(sub, tmp_path / "out", "--no-train", "--isolation", layer)
    assert results["error"] is None, results["error"]
    assert "LINK READ" not in results["output"]
    assert SECRET not in outputs_text(tmp_path / "out") and SECRET not in out


_PLANT = """
import glob, os, threading, time
_HOST = {host!r}
# The probe's output folder lies beside the working copy this module was imported from.
_outs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out-*"))
_out = _outs[0] if len(_outs) == 1 else None
_NAMES = ["probe.json", "graph.json", "graph_train.json", "weights.safetensors", "summary.txt", "augmented.npy"]

def _plant(name):
    # The link is made beside the output and renamed over it: the output is never absent, so what the
    # grader finds is always the child's file or the link (an unlink-then-link would leave a moment
    # with no file at all, and a child that exits then reads as one that wrote nothing).
    path = os.path.join(_out, name)
    spare = os.path.join(_out, f".{{name}}.{{os.getpid()}}.lnk")
    try:
        if os.path.islink(path):
            return
        os.symlink(_HOST, spare)
        os.replace(spare, path)
    except OSError:
        try:
            os.unlink(spare)
        except OSError:
            pass

if _out and {when!r} == "before":
    for _n in _NAMES:
        _plant(_n)
if _out and {when!r} == "after":
    def _keep_planting():
        while True:
            for _n in _NAMES:
                if os.path.isfile(os.path.join(_out, _n)) and not os.path.islink(os.path.join(_out, _n)):
                    _plant(_n)
            time.sleep(0.02)
    threading.Thread(target=_keep_planting, daemon=True).start()
"""


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("isolation", ["bubblewrap", "landlock", "plain"])
def test_links_planted_in_the_outputs_bring_in_no_host_file(tmp_path, data, host_file, when, isolation):
    """Links under every output name of the probe, before and after it writes: no content crosses."""
    require(isolation)
    sub = hostile(tmp_path, _PLANT.format(host=str(host_file), when=when))
    args = ["--train", "--data", str(data), "--isolation", isolation, "--rubric", rubric(tmp_path)]
    if isolation == "plain":
        args.append("--accept-unsandboxed")
    _code, results, out = run_grade(sub, tmp_path / "out", *args)
    assert results, out[-2000:]
    assert SECRET not in outputs_text(tmp_path / "out"), "a host file reached the outputs"
    assert SECRET not in out
    assert host_file.read_text() == SECRET + "\n"  # and the grader's own writes never went through a link
    if when == "before":  # the probe replaces the links with its outputs: grading goes on
        assert results["error"] is None, results["error"]
        assert results["facts"]["training"]["error"] is None, results["facts"]["training"]["error"]
    else:  # refused, and said so
        refused = (
            str(results.get("error"))
            + str(results.get("warnings"))
            + str((results["facts"].get("training") or {}).get("error"))
        )
        assert "link" in refused, refused[-2000:]


_MARK = """
open("left_by_the_probe.txt", "w").write("x")
"""


def test_the_probe_writes_into_a_copy_never_the_submission(tmp_path, data, layer):
    sub = hostile(tmp_path, _MARK)
    _, results, out = run_grade(
        sub, tmp_path / "out", "--train", "--data", str(data), "--isolation", layer, "--rubric", rubric(tmp_path)
    )
    assert results["error"] is None
    assert results["facts"]["training"]["error"] is None, (results["facts"]["training"]["error"], out[-1500:])
    assert not (sub / "left_by_the_probe.txt").exists()  # nor the submission itself


class _Evil:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_whose_unpickling_writes_a_file_is_refused(tmp_path, data):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _Evil(str(marker))}, f)
    _, results, _ = run_grade(
        BASE, tmp_path / "out", "--weights", str(evil), "--data", str(data), "--rubric", rubric(tmp_path)
    )
    assert results["facts"]["training"]["error"]["type"] == "bad_checkpoint"
    assert not marker.exists()


def test_an_import_that_never_returns_times_out_typed(tmp_path):
    sub = hostile(tmp_path, "import time\nwhile True:\n    time.sleep(1)\n")
    limits = tmp_path / "limits.toml"
    limits.write_text("[limits]\nprobe_seconds = 5\n")
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train", "--rubric", str(limits))
    assert results["error"]["type"] == "timeout"
    assert results["timings"]["total_s"] < 5 + 30


def test_a_grader_only_on_pythonpath_runs_its_children(tmp_path):
    """`pip install --target DIR` + PYTHONPATH: the children find the very package the parent runs."""
    lib = tmp_path / "lib"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "grader", lib / "grader", ignore=ignore)  # the wheel's layout
    shutil.copytree(REPO / "checks", lib / "grader" / "checks", ignore=ignore)
    shutil.copytree(REPO / "templates", lib / "grader" / "templates", ignore=ignore)
    env = {**os.environ, "PYTHONPATH": str(lib)}
    probe = subprocess.run(
        [sys.executable, "-c", "import grader; print(grader.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert probe.stdout.startswith(str(lib)), probe.stdout + probe.stderr
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "grader", str(BASE), "--no-train", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["error"] is None, (results["error"], r.stderr[-1500:])
