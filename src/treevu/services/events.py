"""In-process domain events, published by services after their transaction commits."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from treevu.services.recompute import SegmentChange

log = logging.getLogger(__name__)
SegmentChangedHandler = Callable[[Sequence[SegmentChange]], Awaitable[None]]


class EventBus:
    """Subscribers to "segment changed"; the notification side subscribes at start-up."""

    def __init__(self) -> None:
        self._segment_changed: list[SegmentChangedHandler] = []

    def on_segment_changed(self, handler: SegmentChangedHandler) -> None:
        self._segment_changed.append(handler)

    async def segment_changed(self, changes: Sequence[SegmentChange]) -> None:
        """Call only after the commit that stored ``changes``."""
        if not changes:
            return
        for handler in self._segment_changed:
            try:
                await handler(changes)
            except Exception:
                log.exception("segment-changed handler %r failed", handler)
