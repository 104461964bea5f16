"""Named points where a test can make this process receive a signal (crash testing).

``HOSTKIT_FAILPOINT=NAME`` (or ``NAME:SIGNAL``, e.g. ``index:SIGINT``) sends
the signal (default SIGKILL) to this process when it reaches the point
``NAME``. The crash loop (``./dev crash N``) uses it to kill ``hostkit
resolve`` exactly during fsync, verification, the rename into ``blobs/`` and
the index writes, moments a random kill rarely hits. Unset, a point costs one
comparison.
"""

from __future__ import annotations

import os
import signal

_NAME, _, _SIGNAL = os.environ.get("HOSTKIT_FAILPOINT", "").partition(":")

#: Every point, in the order a download reaches them.
POINTS = ("fsync", "verify", "rename", "index", "entry", "sidecar", "batch-rename",
          "batch-index")


def failpoint(name: str) -> None:
    """Deliver the configured signal to this process if ``name`` is the armed point."""
    if _NAME and name == _NAME:
        os.kill(os.getpid(), getattr(signal, _SIGNAL or "SIGKILL"))
