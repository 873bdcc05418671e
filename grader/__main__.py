"""``python -m grader`` is the ``grade`` command.

Trusted side.
"""

from grader.cli import entry

entry()
