"""Per-student overrides: a TA pins what discovery cannot guess, without editing the submission."""

from __future__ import annotations

import json
import shutil

from batch_helpers import run_batch
from fixtures.submissions import BASE, build


def test_overrides_pin_kwargs_and_the_folder_per_student(tmp_path):
    subs = tmp_path / "subs"
    build("unused_required_arg", subs / "alice")
    shutil.copytree(BASE, subs / "bob" / "work" / "s6")  # bob's assignment sits two folders down
    (subs / "bob" / "README.md").write_text("# all my courses\n")
    overrides = tmp_path / "overrides.toml"
    overrides.write_text('[alice]\nmodel_kwargs = { norm_type = "GN" }\n\n[bob]\nfolder = "work/s6"\n')
    out = tmp_path / "grades"
    proc = run_batch(subs, "--out", out, "--no-train", "--jobs", "2", "--overrides", overrides)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    alice = json.loads((out / "alice" / "results.json").read_text())
    chosen = next(c for c in alice["facts"]["model"]["candidates"] if c.get("chosen"))
    assert chosen["kwargs"] == {"norm_type": "GN"}
    bob = json.loads((out / "bob" / "results.json").read_text())
    assert bob["error"] is None and bob["submission"]["path"].endswith("work/s6")
    # The submissions themselves are untouched.
    assert not (subs / "alice" / "grade.toml").exists()


def test_overrides_naming_unknown_students_or_keys_are_usage_errors(tmp_path):
    subs = tmp_path / "subs"
    shutil.copytree(BASE, subs / "alice")
    bad = tmp_path / "o.toml"
    bad.write_text('[carol]\nmodel = "model.py:Net"\n')
    proc = run_batch(subs, "--out", tmp_path / "g", "--no-train", "--overrides", bad)
    assert proc.returncode == 2 and "carol" in proc.stderr
    bad.write_text('[alice]\nmodle = "model.py:Net"\n')
    proc = run_batch(subs, "--out", tmp_path / "g", "--no-train", "--overrides", bad)
    assert proc.returncode == 2 and "modle" in proc.stderr and "model_kwargs" in proc.stderr
