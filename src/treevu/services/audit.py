"""The audit log's read side (``audit.list``): newest first, filtered, cursor-paged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select

from treevu.db import AuditLog
from treevu.services.bounds import RowId
from treevu.services.context import Actor, Services
from treevu.services.segmentation.queries import newest_first, page_cursor


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AuditListInput(Model):
    action: str | None = Field(default=None, min_length=1, max_length=64)
    #: Entries by this user (the actor) or about them (target ``user:ID``).
    user_id: RowId | None = Field(default=None, alias="userId")
    cursor: str | None = None
    limit: int = Field(default=100, ge=1, le=500)


class AuditEntryOut(Model):
    id: int
    actor_id: int | None = Field(alias="actorId")
    action: str
    target: str | None
    detail: dict[str, Any]
    created_at: datetime = Field(alias="createdAt")


class AuditPage(Model):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(alias="nextCursor")


async def list_audit(svc: Services, actor: Actor, inp: AuditListInput) -> AuditPage:
    """Admin: audit entries, newest first; ``action`` matches exactly."""
    actor.require_admin()
    stmt = newest_first(select(AuditLog), AuditLog.id, inp.cursor, inp.limit)
    if inp.action is not None:
        stmt = stmt.where(AuditLog.action == inp.action)
    if inp.user_id is not None:
        stmt = stmt.where(
            or_(AuditLog.actor_id == inp.user_id, AuditLog.target == f"user:{inp.user_id}")
        )
    async with svc.sessions() as session:
        rows = list(await session.scalars(stmt))
    return AuditPage(
        items=[
            AuditEntryOut(
                id=r.id,
                actor_id=r.actor_id,
                action=r.action,
                target=r.target,
                detail=r.detail or {},
                created_at=r.created_at,
            )
            for r in rows
        ],
        next_cursor=page_cursor([r.id for r in rows], inp.limit),
    )
