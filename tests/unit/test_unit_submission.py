"""The one walk of a submission (grader/submission.py): what every stage sees, read once, by value."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import grader.submission as submission_module
from grader.discover import discover
from grader.evidence import collect
from grader.evidence.logs import find_logs
from grader.submission import Submission

NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {},
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# S6"},
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": 1,
            "source": "import torch.nn as nn\nclass Net(nn.Module):\n    pass\n",
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": "Epoch 1 Test Acc: 50.0\nEpoch 2 Test Acc: 60.0\n"}
            ],
        },
    ],
}


def _tree(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "model.py").write_text("import torch.nn as nn\n\nclass Net(nn.Module):\n    pass\n")
    (root / "train.log").write_text("Epoch 1 Test Acc: 40.0\nEpoch 2 Test Acc: 45.0\n")
    (root / "S6.ipynb").write_text(json.dumps(NOTEBOOK))
    for skipped in (".git", "venv", "__pycache__", "wandb", "node_modules"):
        (root / skipped).mkdir()
        (root / skipped / "model.py").write_text("class Hidden: pass\n")
    return root


def test_one_skip_list_for_every_stage(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sub")
    index = Submission.scan(root)
    assert index.files() == ["S6.ipynb", "src/model.py", "train.log"]
    disc = discover(index)
    assert disc.py_files == ["src/model.py"] and disc.notebooks == ["S6.ipynb"]
    assert {p.source for p in find_logs(index)} == {"train.log", "S6.ipynb cell 2"}


def test_links_are_not_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sub")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (root / "notes.txt").symlink_to(secret)
    (root / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    index = Submission.scan(root)
    assert "notes.txt" not in index.files() and not any(f.startswith("linked_dir") for f in index.files())
    with pytest.raises(OSError):
        index.read_bytes("notes.txt")


def test_a_file_swapped_for_a_link_after_the_walk_is_not_read_or_copied(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sub")
    secret = tmp_path / "secret.log"
    secret.write_text("Epoch 1 Test Acc: 99.0\n")
    index = Submission.scan(root)
    os.unlink(root / "train.log")
    (root / "train.log").symlink_to(secret)
    snapshot = index.copy_to(tmp_path / "snapshot")
    assert "train.log" not in snapshot.files()
    assert not (tmp_path / "snapshot" / "train.log").exists()
    with pytest.raises(OSError):
        index.read_bytes("train.log")


def test_each_file_is_read_once_and_notebooks_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "sub")
    opened: list[str] = []
    real_open = submission_module._open_regular

    def counting_open(path: Path) -> int:
        opened.append(Path(path).name)
        return real_open(path)

    monkeypatch.setattr(submission_module, "_open_regular", counting_open)
    import grader.evidence.notebooks as notebooks

    parsed: list[str] = []
    real_parse = notebooks.parse_notebook

    def counting_parse(raw: bytes, path: Path):
        parsed.append(Path(path).name)
        return real_parse(raw, path)

    monkeypatch.setattr(notebooks, "parse_notebook", counting_parse)
    snapshot = Submission.scan(root).copy_to(tmp_path / "snapshot")
    snapshot.content_hash({})
    disc = discover(snapshot)
    collect(snapshot)
    from grader.analysis.source import read_sources

    read_sources(snapshot, disc.py_files, disc.notebooks)
    assert sorted(opened) == ["S6.ipynb", "model.py", "train.log"]  # by the copy, once each
    assert parsed == ["S6.ipynb"]


def test_the_hash_follows_the_content_and_ignores_what_is_skipped(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sub")
    first = Submission.scan(root).content_hash({"a": 1})
    assert Submission.scan(root).copy_to(tmp_path / "copy").content_hash({"a": 1}) == first
    (root / "venv" / "model.py").write_text("changed = True\n")
    assert Submission.scan(root).content_hash({"a": 1}) == first
    assert Submission.scan(root).content_hash({"a": 2}) != first
    (root / "train.log").write_text("Epoch 1 Test Acc: 41.0\n")
    assert Submission.scan(root).content_hash({"a": 1}) != first


def test_size_caps_and_file_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "sub")
    (root / "weights.bin").write_bytes(b"\0" * 2048)
    monkeypatch.setattr(submission_module, "MAX_FILE_BYTES", 1024)
    index = Submission.scan(root)
    assert "weights.bin" not in index.files()
    assert any("left out for their size" in n and "weights.bin" in n for n in index.notes)
    monkeypatch.setattr(submission_module, "MAX_FILES", 2)
    index = Submission.scan(root)
    # Breadth first: the files at the top come before the ones in folders.
    assert index.files() == ["S6.ipynb", "train.log"]
    assert any("stopped reading after 2 files" in n for n in index.notes)


def test_paths_out_of_the_root_name_nothing(tmp_path: Path) -> None:
    root = _tree(tmp_path / "sub")
    (tmp_path / "outside.png").write_bytes(b"png")
    (root / "README.md").write_text("![a](../outside.png)\n![b](src/../src/model.py)\n")
    index = Submission.scan(root)
    assert not index.has("../outside.png") and index.has("./src/../src/model.py")
    from grader.evidence.readme import analyze_readme

    images = analyze_readme(index).images
    assert [i.exists for i in images] == [False, True]


def test_a_model_file_named_by_the_probe_is_read_from_the_index_only(tmp_path: Path) -> None:
    """probe.json is the child's (untrusted) output: a file it names outside the index puts nothing in the report."""
    from grader.facts import Facts
    from grader.pipeline import _qa

    root = _tree(tmp_path / "sub")
    (tmp_path / "secret.txt").write_text("host secret")
    disc = discover(root)
    for named, shown in [("../secret.txt", ""), ("src/../src/model.py", (root / "src" / "model.py").read_text())]:
        probe = {"candidates": [{"chosen": True, "class": "Net", "file": named}]}
        facts = Facts(submission=root, rubric={}, discovery=disc, probe=probe)
        assert _qa(facts)["model_code"]["text"] == shown
