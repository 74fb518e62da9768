"""Compliance alerts (``notifications.complianceAlert``): unmutable, paced by the admin limit.

An alert to N people is written, in one transaction with its audit row, as ⌈N / L⌉ outbox
events of at most L recipients each (L: ``TREEVU_ADMIN_NOTIFICATIONS_PER_MINUTE``), the k-th
available k minutes after the first. The first batch starts at once, or — when the same admin
has batches still waiting — the minute after their last one, so an admin's alerts together
never go out faster than L a minute. The relay sends each batch when its minute comes, exactly
once, whatever restarts in between (the outbox's promise). The alert's events carry the
sending admin as their ``userId``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import COMPLIANCE_BATCH, AuditLog, EmployeeSegment, OutboxEvent, User
from treevu.notifications.wire import check_text
from treevu.segmentation.policy import SegmentName
from treevu.services.bounds import RowId
from treevu.services.context import Actor, Services
from treevu.services.errors import bad_request
from treevu.services.notifications.store import NewNotification


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ComplianceAlert(Model):
    segment: SegmentName | None = None
    user_ids: list[RowId] | None = Field(default=None, alias="userIds", max_length=100_000)
    title: str = Field(min_length=1, max_length=255)
    message: str = Field(min_length=1, max_length=10_000)

    @field_validator("title", "message")
    @classmethod
    def _storable_text(cls, value: str, info: ValidationInfo) -> str:
        return check_text(str(info.field_name), value)


class ComplianceScheduled(Model):
    targeted: int
    batches: int
    per_minute: int = Field(alias="perMinute")
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime = Field(alias="endsAt")


async def _targets(session: AsyncSession, inp: ComplianceAlert) -> list[int]:
    if inp.user_ids is not None:
        wanted = sorted(set(inp.user_ids))
        active: set[int] = set()
        for start in range(0, len(wanted), 1000):
            active.update(
                await session.scalars(
                    select(User.id).where(
                        User.id.in_(wanted[start : start + 1000]), User.is_active.is_(True)
                    )
                )
            )
        missing = [u for u in wanted if u not in active]
        if missing:
            raise bad_request("userIds", f"no active user {missing[0]}")
        return wanted
    return list(
        await session.scalars(
            select(EmployeeSegment.user_id)
            .join(User, User.id == EmployeeSegment.user_id)
            .where(EmployeeSegment.segment == inp.segment, User.is_active.is_(True))
            .order_by(EmployeeSegment.user_id)
        )
    )


async def compliance_alert(
    svc: Services, actor: Actor, inp: ComplianceAlert
) -> ComplianceScheduled:
    """Admin: schedule an unmutable ``compliance_alert`` to a segment or to listed users."""
    actor.require_admin()
    if (inp.user_ids is None) == (inp.segment is None):
        raise bad_request("userIds", "give exactly one of userIds or segment")
    pace = svc.settings.admin_notifications_per_minute
    async with svc.sessions() as session:
        targets = await _targets(session, inp)
        # Whole seconds: the times answered are those stored (MariaDB's DATETIME keeps no
        # fraction), so a client comparing startsAt to the batches sees the same instants.
        now = svc.clock().replace(microsecond=0)
        waiting = await session.scalar(
            select(func.max(OutboxEvent.available_at)).where(
                OutboxEvent.kind == COMPLIANCE_BATCH,
                OutboxEvent.user_id == actor.user_id,
                OutboxEvent.processed_at.is_(None),
            )
        )
        start = now if waiting is None else max(now, waiting + timedelta(minutes=1))
        batches = [targets[k : k + pace] for k in range(0, len(targets), pace)]
        for k, batch in enumerate(batches):
            session.add(
                OutboxEvent(
                    kind=COMPLIANCE_BATCH,
                    user_id=actor.user_id,
                    payload={"title": inp.title, "message": inp.message, "userIds": batch},
                    created_at=now,
                    available_at=start + timedelta(minutes=k),
                )
            )
        session.add(
            AuditLog(
                actor_id=actor.user_id,
                action="notification.complianceAlert",
                target=f"segment:{inp.segment}" if inp.segment else "users",
                detail={"targeted": len(targets), "batches": len(batches), "title": inp.title},
                created_at=now,
            )
        )
        await session.commit()
    svc.relay.wake()
    return ComplianceScheduled(
        targeted=len(targets),
        batches=len(batches),
        per_minute=pace,
        starts_at=start,
        ends_at=start + timedelta(minutes=max(0, len(batches) - 1)),
    )


async def send_batch(session: AsyncSession, events: Sequence[OutboxEvent]) -> list[NewNotification]:
    """The relay's handler of ``compliance.batch``: one alert to each listed user (never muted)."""
    items = []
    for event in events:
        payload = event.payload
        for uid in payload.get("userIds", []):
            items.append(
                NewNotification(
                    int(uid),
                    "compliance_alert",
                    str(payload["title"]),
                    str(payload["message"]),
                    {"compliance": True},
                    created_by=event.user_id,
                )
            )
    return items
