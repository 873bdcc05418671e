"""Reading the class (folder or CSV), student names, safe unzip and git clones: no grading, fast."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest
from batch_helpers import git_commit_all, git_repo

from grader.batch.git import CloneError, clone, head_commit, redact
from grader.batch.inputs import InputError, read_input, sanitize, unique_names
from grader.batch.unzip import UnzipError, safe_unzip


def test_names_are_safe_and_unique() -> None:
    assert sanitize("Ana María López") == "Ana_Maria_Lopez"
    assert sanitize("../../etc/passwd") == "etc_passwd"
    assert sanitize(".hidden") == "hidden" and sanitize("") == "student" and sanitize("ø") == "student"
    assert sanitize("index.html") == "index.html_" and sanitize("results.json") == "results.json_"
    assert unique_names(["bob", "Bob", "bob", "bob-2"]) == ["bob", "Bob-2", "bob-3", "bob-2-2"]


def test_folder_input(tmp_path: Path) -> None:
    (tmp_path / "zoe").mkdir()
    (tmp_path / "amy").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "amy.zip").write_bytes(b"")
    (tmp_path / "README.txt").write_text("x")
    entries = read_input(tmp_path, exclude=tmp_path / "out")
    assert [(e.student, e.kind) for e in entries] == [("amy", "folder"), ("amy-2", "zip"), ("zoe", "folder")]


def test_csv_input(tmp_path: Path) -> None:
    path = tmp_path / "class.csv"
    path.write_text("student,git_url,commit\nann,file:///r/a,abc123\n\n# comment\nbob,file:///r/b\nann,file:///r/c,\n")
    entries = read_input(path)
    assert [(e.student, e.source, e.commit) for e in entries] == [
        ("ann", "file:///r/a", "abc123"),
        ("bob", "file:///r/b", None),
        ("ann-2", "file:///r/c", None),
    ]
    headerless = tmp_path / "plain.csv"
    headerless.write_text("carl,file:///r/c\n")
    assert read_input(headerless)[0].student == "carl"
    empty = tmp_path / "empty.csv"
    empty.write_text("student,git_url\n")
    with pytest.raises(InputError):
        read_input(empty)


def _zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return path


def test_unzip_unwraps_one_top_folder_and_skips_links(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "a.zip",
        {"repo-main/model.py": b"x = 1\n", "__MACOSX/._model.py": b"junk"},
        {"repo-main/evil": "/etc/passwd"},
    )
    root, notes = safe_unzip(archive, tmp_path / "out")
    assert root.name == "repo-main" and (root / "model.py").read_text() == "x = 1\n"
    assert not (root / "evil").exists() and not (tmp_path / "out" / "__MACOSX").exists()
    assert notes == ["skipped the link repo-main/evil"]


@pytest.mark.parametrize("name", ["../evil.py", "/abs/evil.py", "a/../../evil.py", "C:\\evil.py"])
def test_unzip_rejects_paths_outside(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnzipError):
        safe_unzip(_zip(tmp_path / "a.zip", {name: b"x"}), tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()


def test_unzip_caps_files_and_bytes(tmp_path: Path) -> None:
    many = _zip(tmp_path / "many.zip", {f"f{i}.py": b"" for i in range(20)})
    with pytest.raises(UnzipError, match="entries"):
        safe_unzip(many, tmp_path / "o1", max_files=10)
    big = _zip(tmp_path / "big.zip", {"big.bin": b"\0" * 5000})
    with pytest.raises(UnzipError, match="bytes"):
        safe_unzip(big, tmp_path / "o2", max_bytes=4000)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(UnzipError, match="not a readable zip"):
        safe_unzip(tmp_path / "junk.zip", tmp_path / "o4")


def test_clone_pinned_commit_and_failures(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "model.py").write_text("v = 1\n")
    url, first = git_repo(repo)
    (repo / "model.py").write_text("v = 2\n")
    second = git_commit_all(repo, "later")
    clone(url, tmp_path / "head")
    assert (tmp_path / "head" / "model.py").read_text() == "v = 2\n"
    assert head_commit(tmp_path / "head") == second
    clone(url, tmp_path / "pinned", first)
    assert (tmp_path / "pinned" / "model.py").read_text() == "v = 1\n"
    clone(url, tmp_path / "short", first[:8])  # an abbreviated SHA: fetched, then resolved locally
    assert head_commit(tmp_path / "short") == first
    with pytest.raises(CloneError, match="failed"):
        clone((tmp_path / "missing").as_uri(), tmp_path / "m")
    with pytest.raises(CloneError, match="not a commit"):
        clone(url, tmp_path / "x", "--upload-pack=touch /tmp/pwned")
    with pytest.raises(CloneError, match="no usable"):
        clone("-oProxyCommand=x", tmp_path / "y")
    assert redact("https://user:tok@host/r.git failed") == "https://***@host/r.git failed"
    assert os.listdir(tmp_path / "pinned")  # nothing else was touched
