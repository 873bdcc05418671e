"""The class index (grades/index.html): a rule the grader could not decide reads as undecided, not as a 0."""

from __future__ import annotations

import json
import re
from pathlib import Path

from grader.batch.classout import write_class_outputs
from grader.batch.inputs import Entry
from grader.batch.results import error_results
from grader.batch.store import Store
from grader.rubric import load_rubric


def test_an_undecided_rule_reads_as_undecided_on_the_class_index(tmp_path: Path) -> None:
    rubric = load_rubric()
    results = error_results("ann", {"type": "x"}, rubric, "h1")
    results["error"] = None
    for check in results["checks"]:
        check.update(status="passed", points=float(check["max_points"]) if not check["extra"] else 0.0)
    undecided = next(c for c in results["checks"] if c["id"] == "augmentations")
    undecided.update(
        status="error",
        points=0.0,
        message="the train transforms could not be analysed: the train pipeline at transforms.py:12 needs mu. Pin it",
    )
    failed = next(c for c in results["checks"] if c["id"] == "params")
    failed.update(status="failed", points=0.0, message="250,000 parameters")
    store = Store(tmp_path)
    store.commit("ann", {"results.json": json.dumps(results).encode()}, {"key": "k"})
    write_class_outputs(store, [Entry("ann", "folder", "/x/ann")], rubric, set())
    index = (tmp_path / "index.html").read_text()
    row = re.search(r'<tr data-student="ann">(.*?)</tr>', index, re.S).group(1)
    cells = re.findall(r"<td[^>]*>.*?</td>", row, re.S)
    rules = list(rubric["rules"])
    aug = cells[4 + rules.index("augmentations")]
    assert ">n/d<" in aug and 'class="undecided"' in aug and "not decided: the train transforms" in aug, aug
    assert 'class="error"' not in aug
    params = cells[4 + rules.index("params")]
    assert 'class="failed"' in params and ">0<" in params  # a failed rule is a real 0
