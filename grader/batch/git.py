"""Fetch a student's repository: shallow, at a pinned commit when given, never prompting, bounded in time.

Trusted side.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

CLONE_TIMEOUT_S = 300.0
# A ref or commit as a CSV may give it; no leading dash, so it can never be read as an option.
REF_RE = re.compile(r"^[A-Za-z0-9._/][A-Za-z0-9._/-]{0,199}$")
FULL_SHA_RE = re.compile(r"^[0-9a-fA-F]{40}([0-9a-fA-F]{24})?$")


class CloneError(Exception):
    """The repository could not be fetched; the student gets a typed ``clone_failed`` result."""


def git_env() -> dict[str, str]:
    """No prompt for credentials (a missing repo must fail, not hang), no LFS downloads, no system hooks."""
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="/bin/false",
        SSH_ASKPASS="/bin/false",
        GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=20",
        GIT_LFS_SKIP_SMUDGE="1",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


# Config that holds for every git command here: hooks and fsmonitor off (a repo's config must run nothing).
SAFE_CONFIG = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "protocol.ext.allow=never"]


def clone(url: str, dest: Path, commit: str | None = None, timeout_s: float = CLONE_TIMEOUT_S) -> None:
    """Clone ``url`` into ``dest`` (which must not exist); ``commit`` pins a commit, branch or tag."""
    if not url or url.startswith("-"):
        raise CloneError(f"no usable git URL: {url!r}")
    if commit is not None and not REF_RE.match(commit):
        raise CloneError(f"not a commit or ref: {commit!r}")
    deadline = time.monotonic() + timeout_s
    if commit is None:
        _git(["clone", "--depth", "1", "--no-tags", "--template=", "--", url, str(dest)], None, deadline, url)
        return
    dest.mkdir(parents=True)
    _git(["init", "-q", "--template=", str(dest)], None, deadline, url)
    try:
        _git(["fetch", "-q", "--depth", "1", "--no-tags", "--", url, commit], dest, deadline, url)
    except CloneError:
        if FULL_SHA_RE.match(commit):
            raise
        # An abbreviated SHA cannot be fetched by name: fetch the branches and resolve it locally.
        _git(["fetch", "-q", "--no-tags", "--", url, "+refs/heads/*:refs/remotes/origin/*"], dest, deadline, url)
        _git(["-c", "advice.detachedHead=false", "checkout", "-q", commit], dest, deadline, url)
        return
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD"], dest, deadline, url)


def head_commit(repo: Path) -> str | None:
    """The commit that was checked out (recorded in the student's result)."""
    try:
        r = subprocess.run(
            ["git", *SAFE_CONFIG, "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            env=git_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return r.stdout.strip() or None


def _git(args: list[str], cwd: Path | None, deadline: float, url: str) -> None:
    if shutil.which("git") is None:
        raise CloneError("git is not installed on this machine")
    left = deadline - time.monotonic()
    if left <= 0:
        raise CloneError("timed out fetching the repository")
    command = ["git", *SAFE_CONFIG, *(["-C", str(cwd)] if cwd else []), *args]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=git_env(),
        start_new_session=True,  # so that a timeout kills ssh and the helpers too
    )
    try:
        _, err = proc.communicate(timeout=left)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CloneError(f"timed out fetching {redact(url)}") from None
    if proc.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        raise CloneError(f"git {args[0]} failed: {redact(lines[-1] if lines else f'status {proc.returncode}')}")


def redact(text: str) -> str:
    """Hide ``user:token@`` in URLs: error messages end up in reports a student sees."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)
