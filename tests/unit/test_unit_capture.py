"""The capture run's parts without a grading: a notebook's IPython lines as shims, the hooks of one run
(stopped at the first backward, the trained module and its arguments, every patch undone), and the
labels of generated modules."""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = """
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
import torchvision.transforms as T


class Tiny(nn.Module):
    def __init__(self, width, *, classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))

    def forward(self, x):
        return self.body(x)


def make(width):
    return Tiny(width, classes=10)


mean = datasets.CIFAR10("/content/data", train=True, download=True).data.mean(axis=(0, 1, 2)) / 255
loader = DataLoader(datasets.CIFAR10("x", transform=T.ToTensor()), batch_size=256, num_workers=8, pin_memory=True)
model = make(8).cuda()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(100):
    for x, y in loader:
        assert len(x) <= 4
        loss = nn.functional.cross_entropy(model(x.to("cuda")), y.cuda())
        loss.backward()
        print("TRAINED")
"""


def _line(text: str) -> str:
    return f"train.py:{next(i for i, line in enumerate(SCRIPT.split(chr(10)), 1) if text in line)}"


def test_a_run_stops_at_the_first_backward_and_undoes_every_patch(tmp_path: Path, capsys) -> None:
    import torch
    from torch.utils.data import DataLoader

    from grader.child import capture, runtime

    (tmp_path / "train.py").write_text(SCRIPT)
    spec = {
        "root": str(tmp_path),
        "capture": {"entries": [{"file": "train.py", "shown_as": "train.py", "kind": "script"}], "seconds": 60},
    }
    before = (torch.Tensor.backward, torch.Tensor.to, DataLoader.__init__, DataLoader.__iter__, torch.compile)
    import torchvision.datasets as tvd

    modules = [tvd, tvd.cifar, tvd.folder, tvd.mnist]
    real = [dict(vars(m)) for m in modules]
    saved = sys.path[:]
    try:
        runtime.fake_datasets()
        report, state = capture.run_capture(spec, tmp_path.resolve())
    finally:  # the rest of the session sees torchvision's own datasets
        sys.path[:] = saved
        for module, attrs in zip(modules, real, strict=True):
            for name in ("CIFAR10", "CIFAR100", "MNIST", "ImageFolder"):
                if name in attrs:
                    setattr(module, name, attrs[name])
    assert report["tried"][0]["status"] == "stopped", report
    assert report["stopped"]["what"] == "backward()" and report["stopped"]["at"] == _line("loss.backward()")
    assert "TRAINED" not in capsys.readouterr().out
    [trained, *_] = capture.trained_modules(state)
    assert type(trained).__name__ == "Tiny" and trained._s6_args == ((8,), {"classes": 10})
    assert trained._s6_built_at == (_line("return Tiny(width"), _line("return Tiny(width"))  # within the entry
    assert capture.class_file(type(trained), str(tmp_path.resolve())) == "train.py"
    assert ".cuda() kept on the CPU (no GPU here)" in report["shims"]
    # The grader-made images have CIFAR-10's mean, so a mean computed from the data is the real one.
    assert [round(float(m), 4) for m in state.namespaces[0]["mean"]] == [0.4914, 0.4822, 0.4465]
    after = (torch.Tensor.backward, torch.Tensor.to, DataLoader.__init__, DataLoader.__iter__, torch.compile)
    assert after == before and runtime.CAPTURING == [False]
    x = torch.ones(2, requires_grad=True)
    (x * 2).sum().backward()  # the real backward again
    assert x.grad.tolist() == [2.0, 2.0]


def test_a_notebooks_ipython_lines_become_the_runs_shims_line_for_line():
    from grader.discover import notebook_run_module
    from grader.evidence.notebooks import Cell, Notebook

    sources = [
        "!pip install albumentations\n%cd /content/era-s6\nfiles = !ls\nmodel?",
        "%%writefile net.py\nimport torch\n",
        "%%bash\necho hi",
        "%%time\nif True:\n    !nvidia-smi\nx = 1",
        "import torch",
    ]
    cells = [Cell(i + 1, "code", src) for i, src in enumerate(sources)]
    source, line_map, spans = notebook_run_module(Notebook("S6.ipynb", cells, False, ""))
    lines = source.split("\n")
    first, last, magic, _arg, index = spans[0]
    assert lines[first - 1 : last] == [
        "_s6_shell('pip install albumentations')",
        "_s6_magic('cd', '/content/era-s6')",
        "files = _s6_shell('ls')",
        "pass",
    ]
    assert (magic, index, line_map[first + 1]) == ("", 1, (1, 2))
    assert spans[1][2:4] == ["writefile", "net.py"] and spans[2][2:4] == ["skip", "bash"]
    first, last, magic, _arg, _index = spans[3]
    assert magic == "" and lines[first - 1 : last] == ["", "if True:", "    _s6_shell('nvidia-smi')", "x = 1"]
    assert lines[spans[4][0] - 1] == "import torch" and line_map[spans[4][0]] == (5, 1)


def test_a_generated_module_is_relabelled_by_its_import_name_too():
    from grader.locations import relabel_text

    locations = {
        "_s6_notebook_session_7_colab.py": {"source": "Session 7 colab.ipynb", "lines": {3: [2, 1]}},
        "_s6_pipeline__s6_notebook_session_7_colab.py": {"source": "_s6_notebook_session_7_colab.py", "lines": None},
    }
    text = "CoarseDropout in the train pipeline is the submission's own class (from _s6_pipeline__s6_notebook_session_7_colab)"
    assert relabel_text(text, locations).endswith("own class (from Session 7 colab.ipynb)")
    assert relabel_text("at _s6_notebook_session_7_colab.py:3", locations) == "at Session 7 colab.ipynb cell 2 line 1"
