"""The first code of every sandboxed child: Landlock, no capabilities, the seccomp filter, then exec the command.

Untrusted side (runs inside the sandbox next to the student's code).

``python -s <lib>/grader/child/enter.py POLICY -- ARGV...``. POLICY is JSON: the read-only and
read-write paths (the view of ``grader/sandbox/view.py``), whether to apply Landlock and the seccomp
filter, and ``report_fd``, a pipe to the trusted launcher. In order: Landlock restricts the filesystem
(and TCP); every capability left is dropped (``privileges``); the system-call filter is installed
(``seccomp``, with ``no_new_privs``); then this process reads its own /proc/self/status and writes it,
as one JSON line, to ``report_fd``, which it closes before ``execve``: the trusted side's record of the
uid and capabilities the child had is measured here, before any student code runs, through a pipe no
student code can write to. All of it survives ``execve``, so the command and everything it starts stay
restricted. When any step fails, or a capability is left, the command is not run: exit status 97, one
line on stderr, and ``{"refused": reason}`` on the pipe.
"""

import json
import os
import sys

REFUSED = 97


def _send(fd: int | None, message: dict) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def main() -> None:
    lib = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path[0] = lib  # the grader package, through the child's own lib folder
    policy = json.loads(sys.argv[1])
    argv = sys.argv[3:]
    report = policy.get("report_fd")
    from grader.child import privileges, seccomp

    step = "Landlock"
    try:
        if policy.get("landlock"):
            from grader.landlock import restrict

            restrict(policy["read_only"], policy["read_write"])
        step = "the capability drop"
        privileges.drop_capabilities()
        if policy.get("seccomp", True):
            step = "the seccomp filter"
            seccomp.install()
        step = "the capability drop"
        state = privileges.status()
        left = privileges.problem(state)
        if left:
            raise PermissionError(left)
    except OSError as exc:
        reason = f"{step} could not be applied ({exc})"
        sys.stderr.write(f"s6-grader sandbox: {reason}; the code was not run\n")
        sys.stderr.flush()
        _send(report, {"refused": reason})
        os._exit(REFUSED)
    _send(report, {"applied": state})
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
