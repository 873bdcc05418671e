"""The batch's parts without grading: atomic store, process-tree kill, fingerprints and groups, class outputs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from grader.batch.classout import write_class_outputs
from grader.batch.inputs import Entry
from grader.batch.results import error_results, gradescope
from grader.batch.similarity import edit_distance, fingerprint, group_similar
from grader.batch.store import BatchLocked, Store
from grader.batch.unit_process import descendants, kill_tree
from grader.results import status_of
from grader.rubric import load_rubric


def test_commit_replaces_atomically_and_recovers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.commit("ann", {"results.json": b"{}", "gradescope/results.json": b"{}"}, {"key": "k1"})
    assert store.marker("ann") == {"key": "k1"} and (tmp_path / "ann" / "gradescope" / "results.json").is_file()
    store.commit("ann", {"results.json": b'{"score": 1}'}, {"key": "k2"})
    assert store.marker("ann") == {"key": "k2"} and store.results("ann") == {"score": 1}
    assert not (tmp_path / "ann" / "gradescope").exists()  # the folder is replaced whole
    with pytest.raises(ValueError):
        store.commit("bob", {"../escape.json": b"{}"}, {})
    # A crash between the two renames: the old folder sits in .trash and the new one is gone.
    os.rename(tmp_path / "ann", tmp_path / ".trash" / "ann")
    (tmp_path / ".staging" / "half.123").mkdir(parents=True)
    assert store.recover() == ["ann"]
    assert store.marker("ann") == {"key": "k2"} and not (tmp_path / ".staging").exists()


def test_lock_refuses_a_second_batch(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from grader.batch.store import Store
        with Store(Path(sys.argv[1])).locked():
            print("held", flush=True)
            time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BatchLocked), Store(tmp_path).locked():
            pass
    finally:
        holder.kill()
        holder.wait()
    with Store(tmp_path).locked():  # the kernel dropped the dead holder's lock
        pass


def test_kill_tree_reaches_other_sessions(tmp_path: Path) -> None:
    """A grader's sandboxed child runs in its own session: killing the group alone would miss it."""
    code = textwrap.dedent("""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while not descendants(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    children = descendants(proc.pid)
    assert len(children) == 1
    kill_tree(proc.pid)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.2)
    assert not Path(f"/proc/{children[0]}").exists() or "Z" in Path(f"/proc/{children[0]}/stat").read_text().split()[2]


def _graph(convs: list[tuple[int, int, int, int, int]], pool: bool = False) -> dict:
    """A graph.json of 3x3-ish convs: (cin, cout, kernel, stride, dilation)."""
    nodes: list[dict] = [{"name": "x", "op": "placeholder", "args": [], "kwargs": {}, "shape": [2, 3, 32, 32]}]
    prev = "x"
    for i, (cin, cout, k, s, d) in enumerate(convs):
        nodes.append({"name": f"w{i}", "op": "placeholder", "args": [], "kwargs": {}, "shape": [cout, cin, k, k]})
        nodes.append(
            {
                "name": f"c{i}",
                "op": "call_function",
                "target": "aten::conv2d.default",
                "args": [{"node": prev}, {"node": f"w{i}"}, None, [s, s], [d, d], [d, d]],
                "kwargs": {},
                "shape": [2, cout, 8, 8],
            }
        )
        prev = f"c{i}"
        if pool and i == 0:
            nodes.append(
                {
                    "name": "mp",
                    "op": "call_function",
                    "target": "aten::max_pool2d.default",
                    "args": [{"node": prev}, [2, 2], [2, 2]],
                    "kwargs": {},
                    "shape": [2, cout, 4, 4],
                }
            )
            prev = "mp"
    nodes.append(
        {
            "name": "gap",
            "op": "call_function",
            "target": "aten::adaptive_avg_pool2d.default",
            "args": [{"node": prev}, [1, 1]],
            "kwargs": {},
            "shape": [2, 10, 1, 1],
        }
    )
    return {"nodes": nodes}


NET = [(3, 16, 3, 1, 1), (16, 32, 3, 2, 1), (32, 32, 3, 1, 2), (32, 10, 1, 1, 1)]
AUG = {
    "__version__": "2.0.8",
    "transform": {"__class_fullname__": "Compose", "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5}]},
}
AUG2 = {
    "__version__": "1.4.0",
    "transform": {
        "__class_fullname__": "Compose",
        "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5000001}],
    },
}
OTHER_AUG = {"transform": {"__class_fullname__": "Compose", "transforms": []}}


def test_fingerprints_and_groups() -> None:
    base = fingerprint(_graph(NET), AUG)
    assert base is not None and base.layers[2] == "conv 3x3 s1 p2 d2 g1 32->32 ->8x8" and base.layers[-1] == "gap ->1x1"
    assert fingerprint(_graph(NET), AUG2) == base  # the albumentations version and float noise do not count
    assert fingerprint(None, AUG) is None
    pooled = fingerprint(_graph(NET, pool=True), AUG)
    assert "maxpool k2 s2 ->4x4" in pooled.layers and edit_distance(base.layers, pooled.layers, 2) == 1
    wider = fingerprint(_graph([(3, 64, 3, 1, 1), *NET[1:]]), AUG)
    different = fingerprint(
        _graph([(3, 8, 5, 1, 1), (8, 8, 5, 1, 1), (8, 8, 5, 2, 1), (8, 8, 5, 1, 1), (8, 10, 1, 1, 1)]), AUG
    )
    prints = {
        "ann": base,
        "bob": fingerprint(_graph(NET), AUG2),
        "cat": pooled,
        "dan": fingerprint(_graph(NET), OTHER_AUG),  # same net, other transforms: still a lead
        "eve": different,
        "fay": wider,
        "gus": None,
    }
    groups = group_similar(prints, max_edits=1)
    assert [(g["id"], g["kind"], g["students"]) for g in groups] == [
        ("A", "near-identical", ["ann", "bob", "cat", "dan", "fay"])
    ]
    assert groups[0]["transforms_match"] == "some"
    # The graph decides: a pair whose pipeline could not be analysed is still a pair.
    unanalysed = group_similar({"ann": base, "ivy": fingerprint(_graph(NET), None)})
    assert unanalysed[0]["students"] == ["ann", "ivy"] and unanalysed[0]["transforms_match"] == "unknown"
    identical = group_similar({"ann": base, "bob": prints["bob"], "eve": different})
    assert identical == [
        {
            "kind": "identical",
            "students": ["ann", "bob"],
            "layers": 5,
            "max_edits": 0,
            "transforms": base.transforms,
            "transforms_match": "all",
            "id": "A",
        }
    ]


def test_class_outputs_from_committed_results(tmp_path: Path) -> None:
    rubric = load_rubric()
    store = Store(tmp_path)
    ok = error_results("ann", {"type": "x"}, rubric, "h1")
    ok["error"] = None
    for check in ok["checks"]:
        check.update(status="passed", points=float(check["max_points"]) if not check["extra"] else 0.0)
    ok["score"] = sum(c["points"] for c in ok["checks"])
    store.commit("ann", {"results.json": json.dumps(ok).encode()}, {"key": "k"})
    bad = error_results("bob", {"type": "timeout", "message": "killed"}, rubric, "h2")
    store.commit("bob", {"results.json": json.dumps(bad).encode()}, {"key": "k"})
    entries = [Entry("ann", "folder", "/x/ann"), Entry("bob", "zip", "/x/bob.zip"), Entry("cid", "git", "u")]
    table = write_class_outputs(store, entries, rubric, {"gradescope"})
    assert [r["status"] for r in table.rows] == ["passed", "error", "not_graded"]
    assert status_of(ok) == "passed" and status_of(bad) == "error"
    lines = (tmp_path / "grades.csv").read_text().splitlines()
    assert lines[1].startswith(f"ann,passed,{ok['score']:g},700,0,") and ",timeout," in lines[2]
    assert lines[3].startswith("cid,not_graded,")
    index = (tmp_path / "index.html").read_text()
    assert 'href="ann/report.html"' in index and "not graded" in index and "No two submissions" in index
    scope = json.loads((tmp_path / "bob" / "gradescope" / "results.json").read_text())
    assert scope["score"] == 0 and scope["output"] == "timeout: killed" and len(scope["tests"]) == len(rubric["rules"])
    assert gradescope(ok)["tests"][0]["status"] == "passed"


def test_the_gradebook_ends_with_what_training_cost(tmp_path: Path) -> None:
    """compute:epochs/images/seconds, last; blank for a student the grader did not train (a checkpoint too)."""
    rubric = load_rubric()
    store = Store(tmp_path)
    trained = error_results("ann", {"type": "x"}, rubric, "h1")
    trained["error"] = None
    trained["facts"]["training"] = {
        "source": "reproduced by the grader",
        "attempts": [{"epochs_run": 20}, {"epochs_run": 4}],
        "compute_s": 312.4,
        "compute": {"epochs": 24, "images": 1_200_000, "seconds": 312.4},
    }
    checkpoint = error_results("bob", {"type": "x"}, rubric, "h2")
    checkpoint["error"] = None
    checkpoint["facts"]["training"] = {"source": "checkpoint accuracy", "epochs_run": 0, "best_test_acc": 99.5}
    untrained = error_results("cid", {"type": "x"}, rubric, "h3")
    for name, results in (("ann", trained), ("bob", checkpoint), ("cid", untrained)):
        store.commit(name, {"results.json": json.dumps(results).encode()}, {"key": "k"})
    entries = [Entry(s, "folder", f"/x/{s}") for s in ("ann", "bob", "cid", "dan")]
    write_class_outputs(store, entries, rubric, set())
    with open(tmp_path / "grades.csv", newline="") as f:
        header = next(csv.reader(f))
    with open(tmp_path / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert header[-3:] == ["compute:epochs", "compute:images", "compute:seconds"]
    assert header[-6:-3] == ["arch_group", "content_hash", "source"]  # every older column keeps its place
    assert header[:7] == ["student", "status", "score", "max_score", "bonus", "total", "error_type"]
    ann = rows["ann"]
    assert (ann["compute:epochs"], ann["compute:images"], ann["compute:seconds"]) == ("24", "1200000", "312.4")
    assert ann["mode"] == "trained" and ann["train_epochs"] == "24" and ann["train_s"] == "312.4"
    for student in ("bob", "cid", "dan"):  # a checkpoint, no training, not graded
        assert [rows[student][c] for c in header[-3:]] == ["", "", ""], student
    assert rows["bob"]["mode"] == "checkpoint" and rows["dan"]["status"] == "not_graded"
