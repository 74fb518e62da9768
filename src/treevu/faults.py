"""Crash points for fault tests: ``TREEVU_CRASH_AT=NAME`` makes the process kill itself with
SIGKILL when it reaches the point named NAME — a real ``kill -9`` at an exact moment (after a
commit, before anything else happens), which a test cannot hit reliably from outside.

Points: ``store.committed`` (notifications, key and audit row committed; nothing published or
answered), ``recompute.committed`` (profiles and outbox events committed; nothing relayed).
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("TREEVU_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
