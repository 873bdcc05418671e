"""The kept state of an interrupted training run: one folder per key, whole epochs only."""

from __future__ import annotations

import json

from grader.training.resume import RunStore, run_key


def row(epoch: int) -> dict:
    return {"epoch": epoch, "test_acc": 10.0 * epoch, "elapsed": 3.0 * epoch}


def test_a_run_is_found_under_its_own_key_only(tmp_path):
    a, b = run_key(hyp={"seed": 0}), run_key(hyp={"seed": 1})
    assert a != b and a == run_key(hyp={"seed": 0})
    RunStore(tmp_path / "training_state", a).save([row(1)], b"w1", b"s1")
    saved = RunStore(tmp_path / "training_state", a).load()
    assert saved is not None and saved.rows == [row(1)] and saved.weights == b"w1" and not saved.complete
    assert saved.state_file is not None and saved.state_file.read_bytes() == b"s1"
    assert RunStore(tmp_path / "training_state", b).load() is None
    assert (
        RunStore(tmp_path / "training_state", b).others() == [a]
        and RunStore(tmp_path / "training_state", a).others() == []
    )


def test_each_epoch_replaces_the_last_and_a_complete_schedule_keeps_no_state(tmp_path):
    store = RunStore(tmp_path / "training_state", "k")
    store.save([row(1)], b"w1", b"s1")
    store.save([row(1), row(2)], b"w2", b"s2")
    assert sorted(p.name for p in store.folder.iterdir()) == [
        "epochs.json",
        "state_002.safetensors",
        "weights_002.safetensors",
    ]
    store.save([row(1), row(2)], b"w2", None, complete=True, extra={"wall_s": 6.0})
    saved = store.load()
    assert saved is not None and saved.complete and saved.state_file is None and saved.extra == {"wall_s": 6.0}
    assert saved.weights == b"w2"


def test_a_run_killed_between_two_writes_is_read_as_its_last_whole_epoch(tmp_path):
    store = RunStore(tmp_path / "training_state", "k")
    store.save([row(1)], b"w1", b"s1")
    (store.folder / "state_002.safetensors").write_bytes(b"s2")  # epoch 2's state, epochs.json not yet
    saved = store.load()
    assert saved is not None and [r["epoch"] for r in saved.rows] == [1]
    assert saved.state_file is not None and saved.state_file.read_bytes() == b"s1"


def test_unreadable_or_empty_records_are_no_run(tmp_path):
    store = RunStore(tmp_path / "training_state", "k")
    assert store.load() is None
    store.folder.mkdir(parents=True)
    (store.folder / "epochs.json").write_text("{not json")
    assert store.load() is None
    (store.folder / "epochs.json").write_text(json.dumps({"rows": []}))
    assert store.load() is None
    (store.folder / "epochs.json").write_text(json.dumps({"rows": [row(1)], "weights": "gone.safetensors"}))
    assert store.load() is None


def test_discard_leaves_other_runs_and_the_folder_goes_with_the_last(tmp_path):
    RunStore(tmp_path / "training_state", "a").save([row(1)], b"w", b"s")
    RunStore(tmp_path / "training_state", "b").save([row(1)], b"w", b"s")
    RunStore(tmp_path / "training_state", "a").discard()
    assert (
        RunStore(tmp_path / "training_state", "a").load() is None
        and RunStore(tmp_path / "training_state", "b").load() is not None
    )
    RunStore(tmp_path / "training_state", "b").discard()
    assert not (tmp_path / "training_state").exists()
    RunStore(tmp_path / "training_state", "b").discard()  # already gone: nothing to do
