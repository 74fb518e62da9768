"""Inbox use cases (``websocket.*`` of SPEC §5) and admin creation, for both transports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from treevu.db import (
    AuditLog,
    EmployeeSegment,
    IdempotencyKey,
    NotificationPreferences,
    NotificationQueue,
    User,
)
from treevu.notifications.broker import Envelope
from treevu.services.bounds import MAX_INT, RowId
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, bad_request, not_found
from treevu.services.inbox import UNREAD, Inbox, NewNotification
from treevu.services.segmentation import decode_cursor, page_cursor

NotificationType = Literal[
    "tier_upgrade", "milestone", "compliance_alert", "recommendation", "intervention_update"
]
MUTABLE: frozenset[str] = frozenset(
    {"tier_upgrade", "milestone", "recommendation", "intervention_update"}
)
IDEMPOTENCY_WINDOW = timedelta(hours=24)
TOGGLES = {
    "tier_upgrade": "enable_tier_upgrades",
    "milestone": "enable_milestones",
    "recommendation": "enable_recommendations",
}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Empty(Model):
    pass


class Notification(Model):
    id: int
    type: str
    title: str
    message: str
    data: dict[str, Any]
    timestamp: str
    read: bool


class HistoryInput(Model):
    cursor: str | None = None
    limit: int = Field(default=20, ge=1, le=100)
    type: NotificationType | None = None
    unread: bool | None = None


class HistoryPage(Model):
    items: list[Notification]
    next_cursor: str | None = Field(alias="nextCursor")


class MarkAsRead(Model):
    notification_id: int = Field(alias="notificationId", ge=1, le=MAX_INT)


class ReadResult(Model):
    updated: int
    unread_count: int = Field(alias="unreadCount")


class UnreadCount(Model):
    count: int


class Cleared(Model):
    cleared: int


class Preferences(Model):
    enable_tier_upgrades: bool = Field(alias="enableTierUpgrades")
    enable_milestones: bool = Field(alias="enableMilestones")
    enable_recommendations: bool = Field(alias="enableRecommendations")
    muted_types: list[str] = Field(alias="mutedTypes")


class PreferencesUpdate(Model):
    enable_tier_upgrades: bool | None = Field(default=None, alias="enableTierUpgrades")
    enable_milestones: bool | None = Field(default=None, alias="enableMilestones")
    enable_recommendations: bool | None = Field(default=None, alias="enableRecommendations")
    muted_types: list[NotificationType] | None = Field(default=None, alias="mutedTypes")

    @field_validator("muted_types")
    @classmethod
    def _mutable_only(cls, value: list[str] | None) -> list[str] | None:
        for t in value or ():
            if t not in MUTABLE:
                raise ValueError(f"{t} cannot be muted")
        return value


class Stats(Model):
    total: int
    unread: int
    read: int
    by_type: dict[str, int] = Field(alias="byType")
    by_status: dict[str, int] = Field(alias="byStatus")


class CreateNotification(Model):
    user_id: int = Field(alias="userId", ge=1, le=MAX_INT)
    type: NotificationType
    title: str = Field(min_length=1, max_length=255)
    message: str = Field(min_length=1, max_length=10_000)
    data: dict[str, Any] | None = None


class Broadcast(Model):
    user_ids: list[RowId] | None = Field(default=None, alias="userIds", max_length=100_000)
    segment: (
        Literal[
            "crisis_intervention",
            "at_risk",
            "financial_champions",
            "rising_stars",
            "steady_performers",
        ]
        | None
    ) = None
    type: NotificationType
    title: str = Field(min_length=1, max_length=255)
    message: str = Field(min_length=1, max_length=10_000)
    data: dict[str, Any] | None = None


class BroadcastResult(Model):
    created: int
    muted: int
    ids: list[int]


def _inbox(svc: Services) -> Inbox:
    if svc.inbox is None:
        raise RuntimeError("the inbox runs only inside the server")
    return svc.inbox


def _to_model(inbox: Inbox, row: NotificationQueue) -> Notification:
    return Notification.model_validate(inbox.public(row))


async def get_history(svc: Services, actor: Actor, inp: HistoryInput) -> HistoryPage:
    """The user's inbox, newest first; cleared notifications are gone from it."""
    inbox = _inbox(svc)
    before = decode_cursor(inp.cursor)
    stmt = (
        select(NotificationQueue)
        .where(NotificationQueue.user_id == actor.user_id, NotificationQueue.status != "cleared")
        .order_by(NotificationQueue.id.desc())
        .limit(inp.limit)
    )
    if before is not None:
        stmt = stmt.where(NotificationQueue.id < before)
    if inp.type is not None:
        stmt = stmt.where(NotificationQueue.type == inp.type)
    if inp.unread is True:
        stmt = stmt.where(NotificationQueue.status.in_(UNREAD))
    elif inp.unread is False:
        stmt = stmt.where(NotificationQueue.status == "read")
    async with svc.sessions() as session:
        rows = list(await session.scalars(stmt))
    items = [_to_model(inbox, r) for r in rows]
    return HistoryPage(items=items, next_cursor=page_cursor([r.id for r in rows], inp.limit))


async def _publish_unread(svc: Services, user_id: int) -> int:
    inbox = _inbox(svc)
    count = await inbox.unread_count(user_id)
    await inbox.broker.publish([Envelope("unread", user_id, count=count)])
    return count


async def mark_as_read(svc: Services, actor: Actor, inp: MarkAsRead) -> ReadResult:
    async with svc.sessions() as session:
        row = await session.get(NotificationQueue, inp.notification_id)
        # Someone else's notification is "not found": never confirm it exists.
        if row is None or row.user_id != actor.user_id or row.status == "cleared":
            raise not_found(f"notificationId: no notification {inp.notification_id}")
        updated = 0
        if row.status != "read":
            row.status = "read"
            row.read_at = svc.clock()
            updated = 1
        await session.commit()
    return ReadResult(updated=updated, unread_count=await _publish_unread(svc, actor.user_id))


async def track_click(svc: Services, actor: Actor, inp: MarkAsRead) -> ReadResult:
    """The user followed the notification's link: record the click (it is read, too)."""
    async with svc.sessions() as session:
        row = await session.get(NotificationQueue, inp.notification_id)
        if row is None or row.user_id != actor.user_id or row.status == "cleared":
            raise not_found(f"notificationId: no notification {inp.notification_id}")
        now = svc.clock()
        updated = 0
        if row.clicked_at is None:
            row.clicked_at = now
            updated = 1
        if row.status != "read":
            row.status = "read"
            row.read_at = now
        await session.commit()
    return ReadResult(updated=updated, unread_count=await _publish_unread(svc, actor.user_id))


async def mark_all_as_read(svc: Services, actor: Actor, inp: Empty) -> ReadResult:
    async with svc.sessions() as session:
        result = await session.execute(
            update(NotificationQueue)
            .where(NotificationQueue.user_id == actor.user_id, NotificationQueue.status.in_(UNREAD))
            .values(status="read", read_at=svc.clock())
        )
        await session.commit()
    updated = int(result.rowcount or 0)  # type: ignore[attr-defined]
    return ReadResult(updated=updated, unread_count=await _publish_unread(svc, actor.user_id))


async def get_unread_count(svc: Services, actor: Actor, inp: Empty) -> UnreadCount:
    return UnreadCount(count=await _inbox(svc).unread_count(actor.user_id))


async def clear_all(svc: Services, actor: Actor, inp: Empty) -> Cleared:
    async with svc.sessions() as session:
        result = await session.execute(
            update(NotificationQueue)
            .where(
                NotificationQueue.user_id == actor.user_id, NotificationQueue.status != "cleared"
            )
            .values(status="cleared")
        )
        await session.commit()
    await _publish_unread(svc, actor.user_id)
    return Cleared(cleared=int(result.rowcount or 0))  # type: ignore[attr-defined]


def _prefs_out(row: NotificationPreferences | None) -> Preferences:
    if row is None:
        return Preferences(
            enable_tier_upgrades=True,
            enable_milestones=True,
            enable_recommendations=True,
            muted_types=[],
        )
    return Preferences(
        enable_tier_upgrades=row.enable_tier_upgrades,
        enable_milestones=row.enable_milestones,
        enable_recommendations=row.enable_recommendations,
        muted_types=list(row.muted_types or []),
    )


async def get_preferences(svc: Services, actor: Actor, inp: Empty) -> Preferences:
    async with svc.sessions() as session:
        return _prefs_out(await session.get(NotificationPreferences, actor.user_id))


async def update_preferences(svc: Services, actor: Actor, inp: PreferencesUpdate) -> Preferences:
    async with svc.sessions() as session:
        row = await session.get(NotificationPreferences, actor.user_id)
        if row is None:
            row = NotificationPreferences(
                user_id=actor.user_id,
                enable_tier_upgrades=True,
                enable_milestones=True,
                enable_recommendations=True,
                muted_types=[],
            )
            session.add(row)
        for field in ("enable_tier_upgrades", "enable_milestones", "enable_recommendations"):
            value = getattr(inp, field)
            if value is not None:
                setattr(row, field, value)
        if inp.muted_types is not None:
            row.muted_types = sorted(set(inp.muted_types))
        row.updated_at = svc.clock()
        await session.commit()
        return _prefs_out(row)


async def get_stats(svc: Services, actor: Actor, inp: Empty) -> Stats:
    stmt = (
        select(NotificationQueue.type, NotificationQueue.status, func.count())
        .where(NotificationQueue.user_id == actor.user_id)
        .group_by(NotificationQueue.type, NotificationQueue.status)
    )
    async with svc.sessions() as session:
        rows = (await session.execute(stmt)).all()
    by_type: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for type_, status, count in rows:
        by_type[str(type_)] = by_type.get(str(type_), 0) + int(count)
        by_status[str(status)] = by_status.get(str(status), 0) + int(count)
    return Stats(
        total=sum(by_status.values()),
        unread=sum(by_status.get(s, 0) for s in UNREAD),
        read=by_status.get("read", 0),
        by_type=by_type,
        by_status=by_status,
    )


def is_muted(prefs: Preferences, type_: str, data: dict[str, Any] | None) -> bool:
    """compliance_alert and crisis intervention_update are never muted."""
    if type_ not in MUTABLE:
        return False
    if type_ == "intervention_update" and (data or {}).get("crisis") is True:
        return False
    toggle = TOGGLES.get(type_)
    if toggle is not None and not getattr(prefs, toggle):
        return True
    return type_ in prefs.muted_types


async def preferences_of(svc: Services, user_ids: list[int]) -> dict[int, Preferences]:
    found: dict[int, Preferences] = {}
    async with svc.sessions() as session:
        for start in range(0, len(user_ids), 1000):
            rows = await session.scalars(
                select(NotificationPreferences).where(
                    NotificationPreferences.user_id.in_(user_ids[start : start + 1000])
                )
            )
            found.update({r.user_id: _prefs_out(r) for r in rows})
    default = _prefs_out(None)
    return {uid: found.get(uid, default) for uid in user_ids}


async def send(svc: Services, items: list[NewNotification]) -> tuple[list[int], int]:
    """Store and deliver, skipping what the recipients muted; returns (ids, muted count)."""
    prefs = await preferences_of(svc, sorted({n.user_id for n in items}))
    wanted = [n for n in items if not is_muted(prefs[n.user_id], n.type, n.data)]
    ids = await _inbox(svc).create(wanted)
    return ids, len(items) - len(wanted)


async def _existing_users(svc: Services, user_ids: list[int]) -> set[int]:
    found: set[int] = set()
    async with svc.sessions() as session:
        for start in range(0, len(user_ids), 1000):
            found.update(
                await session.scalars(
                    select(User.id).where(
                        User.id.in_(user_ids[start : start + 1000]), User.is_active.is_(True)
                    )
                )
            )
    return found


async def _idempotent(svc: Services, actor: Actor, key: str | None) -> list[int] | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise bad_request("Idempotency-Key", "must be 1 to 255 characters")
    async with svc.sessions() as session:
        row = await session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.actor_id == actor.user_id,
                IdempotencyKey.key == key,
                IdempotencyKey.created_at >= svc.clock() - IDEMPOTENCY_WINDOW,
            )
        )
    return None if row is None else list(row.notification_ids)


async def _remember(svc: Services, actor: Actor, key: str | None, ids: list[int]) -> list[int]:
    """Record the key; if a concurrent request won the race, return its ids instead."""
    if key is None:
        return ids
    async with svc.sessions() as session:
        stale = await session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.actor_id == actor.user_id, IdempotencyKey.key == key
            )
        )
        if stale is not None:  # older than the window: the key may be used again
            await session.delete(stale)
            await session.flush()
        session.add(
            IdempotencyKey(
                actor_id=actor.user_id, key=key, notification_ids=ids, created_at=svc.clock()
            )
        )
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            first = await _idempotent(svc, actor, key)
            return ids if first is None else first
    return ids


async def _admin_quota(svc: Services, actor: Actor, count: int) -> None:
    retry_after = await svc.limits.admin_send(actor.user_id, count)
    if retry_after is not None:
        limit = svc.limits.admin_notifications.amount
        raise ServiceError(
            "TOO_MANY_REQUESTS",
            f"at most {limit} notifications a minute per admin; retry in {retry_after}s",
            retry_after=retry_after,
        )


async def _audit(svc: Services, actor: Actor, action: str, detail: dict[str, Any]) -> None:
    async with svc.sessions() as session:
        session.add(
            AuditLog(actor_id=actor.user_id, action=action, detail=detail, created_at=svc.clock())
        )
        await session.commit()


async def create_notification(
    svc: Services, actor: Actor, inp: CreateNotification, idempotency_key: str | None = None
) -> Notification:
    """Admin: one notification to one user (``Idempotency-Key``: same key → same result)."""
    actor.require_admin()
    inbox = _inbox(svc)
    ids = await _idempotent(svc, actor, idempotency_key)
    if ids is None:
        if not await _existing_users(svc, [inp.user_id]):
            raise not_found(f"userId: no active user {inp.user_id}")
        await _admin_quota(svc, actor, 1)
        item = NewNotification(
            inp.user_id, inp.type, inp.title, inp.message, inp.data, created_by=actor.user_id
        )
        ids, muted = await send(svc, [item])
        if muted:
            raise ServiceError(
                "CONFLICT", f"userId: user {inp.user_id} has muted {inp.type} notifications"
            )
        ids = await _remember(svc, actor, idempotency_key, ids)
        await _audit(svc, actor, "notification.create", {"ids": ids, "userId": inp.user_id})
    async with svc.sessions() as session:
        row = await session.get(NotificationQueue, ids[0])
    if row is None:
        raise not_found("the notification was removed")
    return _to_model(inbox, row)


async def broadcast(
    svc: Services, actor: Actor, inp: Broadcast, idempotency_key: str | None = None
) -> BroadcastResult:
    """Admin: one notification to each of ``userIds`` or of a segment's members."""
    actor.require_admin()
    if (inp.user_ids is None) == (inp.segment is None):
        raise bad_request("userIds", "give exactly one of userIds or segment")
    previous = await _idempotent(svc, actor, idempotency_key)
    if previous is not None:
        return BroadcastResult(created=len(previous), muted=0, ids=previous)
    if inp.user_ids is not None:
        targets = sorted(set(inp.user_ids))
        existing = await _existing_users(svc, targets)
        missing = [u for u in targets if u not in existing]
        if missing:
            raise bad_request("userIds", f"no active user {missing[0]}")
    else:
        async with svc.sessions() as session:
            targets = list(
                await session.scalars(
                    select(EmployeeSegment.user_id)
                    .join(User, User.id == EmployeeSegment.user_id)
                    .where(EmployeeSegment.segment == inp.segment, User.is_active.is_(True))
                    .order_by(EmployeeSegment.user_id)
                )
            )
    await _admin_quota(svc, actor, len(targets))
    items = [
        NewNotification(u, inp.type, inp.title, inp.message, inp.data, created_by=actor.user_id)
        for u in targets
    ]
    ids, muted = await send(svc, items)
    ids = await _remember(svc, actor, idempotency_key, ids)
    await _audit(
        svc,
        actor,
        "notification.broadcast",
        {"count": len(ids), "segment": inp.segment, "type": inp.type},
    )
    return BroadcastResult(created=len(ids), muted=muted, ids=ids)
