"""``python -m grader.batch.launch --parent PID [--memory-mb N] -- COMMAND...``: limit, then exec COMMAND.

Trusted side.

Set in the new process itself, before it becomes the grader: it dies when the batch dies (even from
``kill -9``: the kernel sends SIGKILL on the parent's death) and its data memory is capped.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1


def limit_data(memory_mb: int) -> None:
    """RLIMIT_DATA (heap and private mappings; RLIMIT_AS would break torch), within the hard limit."""
    size = memory_mb << 20
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        size = min(size, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (size, hard))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.batch.launch")
    parser.add_argument("--parent", type=int, required=True, help="the batch's pid: exit if it is already gone")
    parser.add_argument("--memory-mb", type=int, help="RLIMIT_DATA for the grader (RLIMIT_AS breaks torch)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    # The batch may have died between our fork and the prctl: then nobody would kill us later.
    if os.getppid() != args.parent:
        return 1
    if args.memory_mb:
        limit_data(args.memory_mb)
    os.execv(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
