"""``websocket_connections``: one row per live connection, so operators see who is where.

Rows are written in batches (a burst of ten thousand connects is a few statements), the node
refreshes ``lastHeartbeat`` of all its rows at once, and any node deletes the rows of a node
that stopped heartbeating (it died without cleaning up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, insert, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from treevu.db import WebsocketConnection
from treevu.services.context import Clock

log = logging.getLogger(__name__)


def new_node_id() -> str:
    # nodeId is VARCHAR(64): long host names (Kubernetes pod names) are cut.
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Presence:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        node_id: str,
        *,
        flush_seconds: float = 0.2,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.node_id = node_id
        self._flush_seconds = flush_seconds
        self._added: dict[str, tuple[int, datetime]] = {}
        self._removed: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="presence-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            async with self._sessions() as session:
                await session.execute(
                    delete(WebsocketConnection).where(WebsocketConnection.node_id == self.node_id)
                )
                await session.commit()

    def connected(self, connection_id: str, user_id: int) -> None:
        self._added[connection_id] = (user_id, self._clock())

    def disconnected(self, connection_id: str) -> None:
        if self._added.pop(connection_id, None) is None:
            self._removed.add(connection_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except Exception:
                log.exception("could not write websocket_connections; will retry")

    async def flush(self) -> None:
        added, self._added = self._added, {}
        removed, self._removed = self._removed, set()
        if not added and not removed:
            return
        try:
            async with self._sessions() as session:
                if added:
                    await session.execute(
                        insert(WebsocketConnection),
                        [
                            {
                                "user_id": uid,
                                "connection_id": cid,
                                "connected_at": at,
                                "last_heartbeat": at,
                                "node_id": self.node_id,
                            }
                            for cid, (uid, at) in added.items()
                        ],
                    )
                if removed:
                    ids = sorted(removed)
                    for start in range(0, len(ids), 1000):
                        await session.execute(
                            delete(WebsocketConnection).where(
                                WebsocketConnection.connection_id.in_(ids[start : start + 1000])
                            )
                        )
                await session.commit()
        except Exception:
            self._added = {**added, **self._added}
            self._removed |= removed
            raise

    async def heartbeat(self) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(WebsocketConnection)
                .where(WebsocketConnection.node_id == self.node_id)
                .values(last_heartbeat=self._clock())
            )
            await session.commit()

    async def remove_dead_nodes(self, stale_after: timedelta) -> int:
        """Delete rows whose node has not heartbeated for ``stale_after``."""
        cutoff = self._clock() - stale_after
        async with self._sessions() as session:
            result = await session.execute(
                delete(WebsocketConnection).where(
                    or_(
                        WebsocketConnection.node_id.is_(None),
                        WebsocketConnection.node_id != self.node_id,
                    ),
                    or_(
                        WebsocketConnection.last_heartbeat < cutoff,
                        and_(
                            WebsocketConnection.last_heartbeat.is_(None),
                            WebsocketConnection.connected_at < cutoff,
                        ),
                    ),
                )
            )
            await session.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
