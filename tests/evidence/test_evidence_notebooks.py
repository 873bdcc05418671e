"""Notebooks: reading, execution order, and the definitions module of a notebook-only submission."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from grader.evidence.notebooks import NotebookError, definitions_module, read_notebook

NOTEBOOKS = Path(__file__).parent / "fixtures" / "notebooks"


def _write(tmp_path: Path, cells: list, name: str = "nb.ipynb") -> Path:
    nb = new_notebook()
    nb.cells = cells
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_in_order_notebook_cells_outputs_and_counts() -> None:
    nb = read_notebook(NOTEBOOKS / "in_order.ipynb")
    assert [c.kind for c in nb.cells] == ["markdown", "code", "code", "code", "code"]
    assert [c.index for c in nb.cells] == [1, 2, 3, 4, 5]
    assert [c.execution_count for c in nb.code_cells] == [1, 2, 3, None]
    assert nb.cells[1].outputs_text == "ready\n"
    # error tracebacks keep their text but lose the ANSI colour codes
    assert nb.cells[2].outputs_text == "NameError: name 'foo' is not defined\n"
    assert "\x1b" not in "".join(c.outputs_text for c in nb.cells)
    assert "val_acc=76.80" in nb.cells[3].outputs_text
    assert not nb.out_of_order
    assert nb.order_note == "the 3 executed code cells ran in order (execution counts 1–3)"


def test_out_of_order_notebook_names_the_cells() -> None:
    nb = read_notebook(NOTEBOOKS / "out_of_order.ipynb")
    assert nb.out_of_order
    assert "cell 3 ran before cell 2 (execution counts 2 and 5)" in nb.order_note
    assert "cell 6 ran before cell 5 (execution counts 6 and 8)" in nb.order_note
    assert "cell 4" not in nb.order_note  # never executed: says nothing about order
    assert nb.to_dict() == {
        "path": str(NOTEBOOKS / "out_of_order.ipynb"),
        "cells": 6,
        "code_cells": 5,
        "executed_cells": 4,
        "out_of_order": True,
        "order_note": nb.order_note,
    }


def test_restarted_kernel_same_count_is_out_of_order(tmp_path: Path) -> None:
    path = _write(tmp_path, [new_code_cell("a = 1", execution_count=1), new_code_cell("b = 2", execution_count=1)])
    nb = read_notebook(path)
    assert nb.out_of_order
    assert "cells 1 and 2 both have execution count 1" in nb.order_note


def test_never_executed_notebook_is_not_out_of_order(tmp_path: Path) -> None:
    nb = read_notebook(_write(tmp_path, [new_code_cell("a = 1"), new_code_cell("b = 2")]))
    assert not nb.out_of_order
    assert "no code cell has been executed" in nb.order_note


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.ipynb", "not valid JSON (truncated or edited by hand?)"),
        ("not_a_notebook.ipynb", "JSON without notebook cells"),
    ],
)
def test_broken_notebooks_raise_a_one_line_notebook_error(name: str, reason: str) -> None:
    with pytest.raises(NotebookError) as info:
        read_notebook(NOTEBOOKS / name)
    message = str(info.value)
    assert message.startswith(f"{name}: {reason}")
    assert "\n" not in message
    assert info.value.reason in message


def test_empty_and_missing_files_raise_notebook_error(tmp_path: Path) -> None:
    (tmp_path / "empty.ipynb").write_text("  \n")
    with pytest.raises(NotebookError, match="empty"):
        read_notebook(tmp_path / "empty.ipynb")
    with pytest.raises(NotebookError, match="cannot be read"):
        read_notebook(tmp_path / "absent.ipynb")


def test_list_sources_of_hand_written_notebooks_are_joined(tmp_path: Path) -> None:
    text = (
        '{"nbformat": 4, "nbformat_minor": 2, "metadata": {}, "cells": [{"cell_type": "code", "metadata": {},'
        ' "execution_count": 1, "source": ["x = 1\\n", "y = 2"], "outputs": [{"output_type": "stream",'
        ' "name": "stdout", "text": ["a\\n", "b\\n"]}]}]}'
    )
    (tmp_path / "hand.ipynb").write_text(text)
    cell = read_notebook(tmp_path / "hand.ipynb").cells[0]
    assert cell.source == "x = 1\ny = 2"
    assert cell.outputs_text == "a\nb\n"


# --- definitions module ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def notebook_only_defs():
    return definitions_module(read_notebook(NOTEBOOKS / "notebook_only.ipynb"))


def test_definitions_module_compiles_and_keeps_model_and_transforms(notebook_only_defs) -> None:
    src = notebook_only_defs.source
    compile(src, "<defs>", "exec")
    names = _top_level_names(src)
    assert {"Net", "Cifar10", "train", "test", "train_transforms", "test_transforms"} <= names
    assert {"mean", "std", "fill", "EPOCHS", "device"} <= names
    assert "class Net(nn.Module):" in src
    assert "A.CoarseDropout(max_holes=1, max_height=16, max_width=16" in src
    assert "import albumentations as A" in src
    assert "from albumentations.pytorch import ToTensorV2" in src


def test_definitions_module_leaves_out_training_magics_and_colab(notebook_only_defs) -> None:
    src = notebook_only_defs.source
    names = _top_level_names(src)
    # model/dataset instantiation, loaders, optimizer, values computed from the data
    assert not {"model", "train_set", "test_set", "train_loader", "test_loader", "optimizer", "data_mean"} & names
    assert "fill2" not in names  # it reads data_mean, which was left out
    for absent in ("for epoch in", "drive.mount", "google.colab", "!pip", "%cd", "%%", "plt.show", "nvidia-smi"):
        assert absent not in src, absent
    assert "__main__" not in src
    assert "summary(model" not in src


def test_definitions_module_reports_what_it_skipped(notebook_only_defs) -> None:
    skipped = "\n".join(notebook_only_defs.skipped)
    assert "cell 2: IPython lines left out: !pip (line 1), %cd (line 2)" in skipped
    assert (
        "cell 3: left out from google.colab import drive (Colab only) (line 1); call drive.mount() (line 2)" in skipped
    )
    assert "cell 15: skipped, %%bash cell (not Python)" in skipped
    assert "cell 16: skipped, syntax error at line 1" in skipped
    assert "uses data_mean, which was left out (cell 8 line 11)" in skipped
    assert "instantiates the model class Net (line 2)" in skipped
    assert "for loop (line 2)" in skipped
    assert 'if __name__ == "__main__" block' in skipped
    assert all("\n" not in line for line in notebook_only_defs.skipped)


def test_definitions_module_line_map_points_into_cells(notebook_only_defs) -> None:
    lines = notebook_only_defs.source.split("\n")
    net_line = lines.index("class Net(nn.Module):") + 1
    assert notebook_only_defs.line_map[net_line] == (9, 1)
    forward = next(i for i, ln in enumerate(lines, start=1) if "def forward" in ln)
    assert notebook_only_defs.line_map[forward] == (9, 13)
    assert notebook_only_defs.defined["Net"] == (9, 1)
    assert notebook_only_defs.defined["train_transforms"] == (7, 1)


def test_later_cell_definition_wins(notebook_only_defs) -> None:
    src = notebook_only_defs.source
    assigns = [
        n
        for n in ast.parse(src).body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "test_transforms"
    ]
    assert len(assigns) == 2
    last = assigns[-1]
    assert "p=1.0" in ast.unparse(last)  # cell 17's version comes last, so it is the one the module ends with
    assert notebook_only_defs.line_map[last.lineno] == (17, 1)
    assert notebook_only_defs.defined["test_transforms"] == (17, 1)


def test_magic_inside_a_block_keeps_the_block_valid(tmp_path: Path) -> None:
    cells = [
        new_code_cell("import os\nif os.name == 'posix':\n    !echo hi\n"),
        new_code_cell("try:\n    import albumentations as A\nexcept ImportError:\n    !pip install albumentations\n"),
    ]
    defs = definitions_module(read_notebook(_write(tmp_path, cells)))
    compile(defs.source, "<defs>", "exec")
    assert "import albumentations as A" in defs.source  # an import guard is kept
    assert "!" not in defs.source


def test_one_line_statements_writefile_and_transform_builders(tmp_path: Path) -> None:
    cells = [
        new_markdown_cell("notes"),
        new_code_cell("import os; import torch.nn as nn"),
        new_code_cell("%%writefile model.py\nimport torch.nn as nn\nclass Net(nn.Module):\n    pass\n"),
        new_code_cell("from model import Net\nimport albumentations as A"),
        new_code_cell(
            "def get_train_transforms(m):\n    return A.Compose([A.HorizontalFlip()])\n"
            "train_tf = get_train_transforms((0.5,))\n"
            "def make_loaders():\n    return None\n"
            "loaders = make_loaders()\n"
            "class Trainer:\n    pass\n"
            "trainer = Trainer()\n"
            "x = 1\nx += 2\n"
        ),
    ]
    defs = definitions_module(read_notebook(_write(tmp_path, cells)))
    compile(defs.source, "<defs>", "exec")
    names = _top_level_names(defs.source)
    assert "import os" in defs.source and "import torch.nn as nn" in defs.source
    assert "Net" in names  # the %%writefile body is used ...
    assert "from model import Net" not in defs.source  # ... and the import of the written file is not
    assert "train_tf" in names  # a transform builder is called
    assert "loaders" not in names and "trainer" not in names  # other notebook code is not
    assert "x += 2" in defs.source
    skipped = "\n".join(defs.skipped)
    assert "%%writefile model.py: its body is used as notebook code" in skipped
    assert "calls the notebook function make_loaders()" in skipped
    assert "calls the notebook class Trainer()" in skipped


def test_future_import_is_hoisted(tmp_path: Path) -> None:
    cells = [new_code_cell("x = 1"), new_code_cell("from __future__ import annotations\ny = 2")]
    defs = definitions_module(read_notebook(_write(tmp_path, cells)))
    assert defs.source.startswith("from __future__ import annotations\n")
    compile(defs.source, "<defs>", "exec")
    y_line = defs.source.split("\n").index("y = 2") + 1
    assert defs.line_map[y_line] == (2, 2)
