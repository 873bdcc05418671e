"""The probe keeps the same promises under every layer (bubblewrap, Landlock alone): no network of any kind,
nothing shared between students, no privileges, only what the view names.

Each case is the base fixture with import-time code that tries what a student might, graded through the
`grade` CLI (``--no-train``: the probe is where student code runs): a UDP datagram and a raw socket to
listeners on 127.0.0.1; notes passed between two students of one batch through /dev/shm and /tmp; a child
that fills its /dev/shm and TMPDIR before the next student is graded; the capabilities and uid the code
finds in /proc/self/status; ``PYTHONPATH=.`` in a folder of submissions.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fixtures.submissions import BASE
from grading import run_grade

RAW_PROTOCOL = 253  # "for experimentation" (RFC 3692): nothing else on the machine sends it


def hostile(folder: Path, prelude: str) -> Path:
    shutil.copytree(BASE, folder)
    (folder / "model.py").write_text(prelude + "\n" + (folder / "model.py").read_text())
    return folder


def batch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader", "batch", *args], capture_output=True, text=True, timeout=600, env=env
    )


def printed(output: str, marker: str) -> object:
    """The Python literal the submission printed after ``marker``."""
    line = next(line for line in output.splitlines() if line.startswith(marker + " "))
    return ast.literal_eval(line[len(marker) + 1 :])


_SEND = """
import socket as _socket
_TRIED = {{}}
try:
    _udp = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    _udp.sendto(b"s6-udp-note", ("127.0.0.1", {port}))
    _TRIED["udp"] = "sent"
except OSError as _exc:
    _TRIED["udp"] = _exc.errno
try:
    _raw = _socket.socket(_socket.AF_INET, _socket.SOCK_RAW, {protocol})
    _raw.sendto(b"s6-raw-note", ("127.0.0.1", 0))
    _TRIED["raw"] = "sent"
except OSError as _exc:
    _TRIED["raw"] = _exc.errno
print("NETWORK", _TRIED)
"""


def _nothing_waiting(listener: socket.socket) -> bool:
    listener.setblocking(False)
    try:
        listener.recv(4096)
        return False
    except BlockingIOError:
        return True


def test_no_datagram_and_no_raw_socket_leave_the_probe(tmp_path, layer):
    if os.geteuid() != 0:
        pytest.skip("a raw listener needs root (the grader's usual case in containers)")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, RAW_PROTOCOL)
    raw.bind(("127.0.0.1", 0))
    prelude = _SEND.format(port=udp.getsockname()[1], protocol=RAW_PROTOCOL)
    try:
        _code, results, out = run_grade(
            hostile(tmp_path / "sub", prelude), tmp_path / "out", "--no-train", "--isolation", layer
        )
        assert results["error"] is None, (results["error"], out[-1500:])
        assert results["facts"]["sandbox"]["isolation"] == layer
        # The sockets themselves are refused (not merely unroutable), under bubblewrap's namespace too.
        assert printed(results["output"], "NETWORK") == {"udp": errno.EAFNOSUPPORT, "raw": errno.EAFNOSUPPORT}
        assert _nothing_waiting(udp) and _nothing_waiting(raw)
        # Control: the same code outside the sandbox reaches both listeners, so the checks above can fail.
        subprocess.run([sys.executable, "-c", prelude], check=True, timeout=60, capture_output=True)
        udp.settimeout(5)
        raw.settimeout(5)
        assert udp.recv(4096) == b"s6-udp-note"
        assert raw.recv(4096).endswith(b"s6-raw-note")  # after the IP header
    finally:
        udp.close()
        raw.close()


_STATUS = """
_STATUS = {}
for _line in open("/proc/self/status"):
    _key, _, _value = _line.partition(":")
    if _key in ("Uid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
        _STATUS[_key] = _value.split()
print("STATUS", _STATUS)
"""


def test_the_probe_has_no_capabilities_and_the_report_says_which_uid(tmp_path, layer):
    """Read inside the child; when the grader runs as root (as here), root's capabilities are all gone."""
    _code, results, out = run_grade(
        hostile(tmp_path / "sub", _STATUS), tmp_path / "out", "--no-train", "--isolation", layer
    )
    assert results["error"] is None, (results["error"], out[-1500:])
    status = printed(results["output"], "STATUS")
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[key][0], 16) == 0, (key, status[key])
    if os.geteuid() == 0:
        assert int(status["CapBnd"][0], 16) == 0, status["CapBnd"]  # nothing to regain at execve
    assert status["NoNewPrivs"] == ["1"] and status["Seccomp"] == ["2"]
    uid = int(status["Uid"][1])
    sandbox = results["facts"]["sandbox"]
    assert sandbox["probe"]["uid"] == uid
    assert sandbox["probe"]["capabilities"]["CapEff"] == status["CapEff"][0]
    assert f"uid {uid}" in sandbox["summary"] and "no capabilities" in sandbox["summary"]
    assert "seccomp filter" in sandbox["summary"]


_NOTES = """
import os as _os
import time as _time
_MINE, _THEIRS = {mine!r}, {theirs!r}
_PLACES = ["/dev/shm", "/tmp", "/var/tmp", _os.environ.get("TMPDIR", "/tmp")]
_PLACES.append(_os.path.dirname(_PLACES[-1]))
for _place in _PLACES:
    try:
        with open(_os.path.join(_place, _MINE), "w") as _f:
            _f.write("a note")
    except OSError:
        pass
_FOUND, _UNTIL = [], _time.monotonic() + 8  # both students run at once: look for a while
while not _FOUND and _time.monotonic() < _UNTIL:
    _FOUND = [p for p in _PLACES if _os.path.exists(_os.path.join(p, _THEIRS))]
    _time.sleep(0.2)
if _FOUND:
    raise RuntimeError(f"a note from another student in {{_FOUND}}")
"""


def test_two_students_of_one_batch_pass_no_file_through_dev_shm_or_tmp(tmp_path, layer):
    tag = f"s6-note-{uuid.uuid4().hex[:8]}"
    subs = tmp_path / "subs"
    hostile(subs / "alice", _NOTES.format(mine=f"{tag}-alice", theirs=f"{tag}-bob"))
    hostile(subs / "bob", _NOTES.format(mine=f"{tag}-bob", theirs=f"{tag}-alice"))
    out = tmp_path / "grades"
    # Two at work, and a third slot started ahead: the gradings overlap however the batch schedules them.
    proc = batch(str(subs), "--out", str(out), "--no-train", "--jobs", "2", "--ahead", "1", "--isolation", layer)
    for student in ("alice", "bob"):
        results = json.loads((out / student / "results.json").read_text())
        assert results["error"] is None, (student, results["error"], proc.stderr[-1500:])
        assert results["facts"]["sandbox"]["isolation"] == layer
    left = [str(p) for place in ("/dev/shm", "/tmp", "/var/tmp") for p in Path(place).glob(f"{tag}*")]
    assert not left, left  # nothing outlived the batch


_FILL = """
import os as _os
_TAG = {tag!r}
_FILLED = []
for _place in ("/dev/shm", _os.environ.get("TMPDIR", "/tmp")):
    _written, _why = 0, "stopped at the test's cap"
    _folder = _os.path.join(_place, _TAG)
    try:
        _os.makedirs(_folder, exist_ok=True)
        _chunk = b"\\0" * (8 << 20)
        while _written < (320 << 20):
            with open(_os.path.join(_folder, f"part{{_written >> 26}}"), "wb") as _f:
                for _ in range(8):
                    _f.write(_chunk)
                    _written += len(_chunk)
    except OSError as _exc:
        _why = _exc.strerror
    try:
        _os.chmod(_folder, 0)  # and hard to remove
    except OSError:
        pass
    _FILLED.append((_place, _written >> 20, _why))
print("FILLED", _FILLED)
"""


def test_a_child_that_fills_its_dev_shm_and_tmpdir_leaves_nothing_and_the_next_student_is_graded(tmp_path, layer):
    tag = f"s6-fill-{uuid.uuid4().hex[:8]}"
    subs = tmp_path / "subs"
    hostile(subs / "a_filler", _FILL.format(tag=tag))
    shutil.copytree(BASE, subs / "b_next")
    out = tmp_path / "grades"
    # One at work, the next started ahead: its probe child loads while the filler fills its own folders.
    proc = batch(str(subs), "--out", str(out), "--no-train", "--jobs", "1", "--ahead", "1", "--isolation", layer)
    filler = json.loads((out / "a_filler" / "results.json").read_text())
    assert filler["error"] is None, (filler["error"], proc.stderr[-1500:])
    (_shm, shm_mb, shm_why), (tmpdir, tmp_mb, tmp_why) = printed(filler["output"], "FILLED")
    if layer == "bubblewrap":  # its own tmpfs mounts, each full at the size the launcher gave it
        assert shm_why == tmp_why == "No space left on device", (shm_why, tmp_why)
        assert shm_mb <= 256 and tmp_mb <= 256 and tmpdir == "/tmp"
    else:  # no /dev/shm at all; a TMPDIR of its own, removed afterwards, locked folders and all
        assert shm_mb == 0 and shm_why == "Permission denied"
        assert tmpdir != "/tmp" and not os.path.exists(tmpdir)
    following = json.loads((out / "b_next" / "results.json").read_text())
    assert following["error"] is None, (following["error"], proc.stderr[-1500:])
    assert following["score"] == filler["score"] > 0  # graded as the same model always is
    left = [str(p) for place in ("/dev/shm", "/tmp") for p in Path(place).glob(f"{tag}*")]
    assert not left, left


_PEEK = """
import os as _os
_OTHER = {other!r}
try:
    _SEEN = _os.listdir(_OTHER)
except OSError:
    _SEEN = None
try:
    _READ = open(_os.path.join(_OTHER, "model.py")).read(40)
except OSError:
    _READ = None
if _SEEN is not None or _READ is not None:
    raise RuntimeError(f"another submission is visible: {{_SEEN}} {{_READ!r}}")
"""


def test_pythonpath_dot_in_a_folder_of_submissions_shows_no_other_submission(tmp_path, layer):
    """`cd class && PYTHONPATH=. grade alice`: alice is graded as usual and sees nothing of bob."""
    klass = tmp_path / "class"
    hostile(klass / "alice", _PEEK.format(other=str(klass / "bob")))
    shutil.copytree(BASE, klass / "bob")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "alice", "--no-train", "--out", str(out), "--isolation", layer],
        cwd=klass,
        env={**os.environ, "PYTHONPATH": "."},
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["error"] is None, (results["error"], proc.stderr[-1500:])
    assert results["score"] > 0 and results["facts"]["sandbox"]["isolation"] == layer
