"""uvicorn's httptools protocol with a header timeout.

uvicorn closes a keep-alive connection that stays idle after a response, but not one that
sends nothing after connecting, or half a request line, or headers that never end: each such
connection holds a file descriptor for ever, and a few thousand of them exhaust the process.
Here a connection must finish its request headers within ``header_timeout`` seconds of
connecting, or of the first byte of its next request; otherwise it is closed.
"""

from __future__ import annotations

import asyncio
import os
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: ``TREEVU_HEADER_TIMEOUT`` (seconds); read here because uvicorn builds the protocol itself,
#: in every worker process.
DEFAULT_HEADER_TIMEOUT = 10.0


def _configured_timeout() -> float:
    try:
        value = float(os.environ.get("TREEVU_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT))
    except ValueError:
        return DEFAULT_HEADER_TIMEOUT
    return value if value > 0 else DEFAULT_HEADER_TIMEOUT


class TreevuHttpProtocol(HttpToolsProtocol):
    header_timeout: float = _configured_timeout()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # The keep-alive timer takes over until the next request begins.
        self._disarm()
        super().on_response_complete()
