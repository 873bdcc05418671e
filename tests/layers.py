"""The sandbox layers this machine offers, for tests that must run under each of them.

Where a layer is missing the test skips with the reason, except under CI (``CI`` set), where
``.ci/run`` installs what every layer needs: there a missing layer fails the run instead of letting
every hostile test skip while CI stays green.
"""

from __future__ import annotations

import os

import pytest

from grader.sandbox.layers import available

FILESYSTEM_LAYERS = ("bubblewrap", "landlock")


def require(layer: str) -> None:
    if available(layer):
        return
    reason = f"the {layer} sandbox is not available on this machine"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, but .ci/run should have made it available")
    pytest.skip(reason)
