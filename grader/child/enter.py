"""The first code of every sandboxed child: restrict this process with Landlock, then exec the command.

Untrusted side (runs inside the sandbox next to the student's code).

``python -s <lib>/grader/child/enter.py POLICY -- ARGV...``. POLICY is JSON: the read-only and
read-write paths (the view of ``grader/sandbox/view.py``). Landlock survives ``execve``, so the
command and everything it starts stay restricted. When the policy requires Landlock and the kernel
refuses, the command is not run: exit status 97 and one line on stderr.
"""

import json
import os
import sys

REFUSED = 97


def main() -> None:
    lib = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path[0] = lib  # the grader package, through the child's own lib folder
    policy = json.loads(sys.argv[1])
    argv = sys.argv[3:]
    if policy.get("landlock"):
        from grader.landlock import LandlockError, restrict

        try:
            restrict(policy["read_only"], policy["read_write"])
        except (LandlockError, OSError) as exc:
            sys.stderr.write(f"s6-grader sandbox: Landlock could not be applied ({exc}); the code was not run\n")
            sys.stderr.flush()
            os._exit(REFUSED)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
