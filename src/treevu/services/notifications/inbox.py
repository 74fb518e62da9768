"""Inbox use cases (``websocket.*`` of SPEC §5) and admin creation, for both transports."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import func, select, update

from treevu.db import EmployeeSegment, NotificationPreferences, NotificationQueue, User
from treevu.notifications.broker import Envelope
from treevu.notifications.wire import UNREAD, NotificationType, check_data, check_text
from treevu.segmentation.policy import SegmentName
from treevu.services.bounds import MAX_INT, RowId, check_idempotency_key
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, bad_request, not_found
from treevu.services.notifications.delivery import public, unread_count
from treevu.services.notifications.preferences import (
    MUTABLE,
    Preferences,
    preferences_out,
    unmuted,
)
from treevu.services.notifications.store import AuditEntry, CreateRequest, NewNotification
from treevu.services.segmentation.queries import decode_cursor, page_cursor

log = logging.getLogger(__name__)


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


class _Content(Model):
    """What a notification carries, checked as strictly as any database would."""

    type: NotificationType
    title: str = Field(min_length=1, max_length=255)
    message: str = Field(min_length=1, max_length=10_000)
    data: dict[str, Any] | None = None

    @field_validator("title", "message")
    @classmethod
    def _storable_text(cls, value: str, info: ValidationInfo) -> str:
        return check_text(str(info.field_name), value)

    @field_validator("data")
    @classmethod
    def _storable_data(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_data(value)


class CreateNotification(_Content):
    user_id: int = Field(alias="userId", ge=1, le=MAX_INT)


class Broadcast(_Content):
    user_ids: list[RowId] | None = Field(default=None, alias="userIds", max_length=100_000)
    segment: SegmentName | None = None


class BroadcastResult(Model):
    created: int
    muted: int
    ids: list[int]


def _to_model(svc: Services, row: NotificationQueue) -> Notification:
    return Notification.model_validate(public(svc.cipher, row))


async def get_history(svc: Services, actor: Actor, inp: HistoryInput) -> HistoryPage:
    """The user's inbox, newest first; cleared notifications are gone from it."""
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
    items = [_to_model(svc, r) for r in rows]
    return HistoryPage(items=items, next_cursor=page_cursor([r.id for r in rows], inp.limit))


async def _publish_unread(svc: Services, user_id: int) -> int:
    """Tell the user's other sockets the new count. The change is committed: a broker that
    cannot carry the news must not make it an error (the next notification corrects them)."""
    count = await unread_count(svc.sessions, user_id)
    try:
        await svc.broker.publish([Envelope("unread", user_id, count=count)])
    except Exception as exc:
        log.warning("could not publish the unread count of user %s: %s", user_id, exc)
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
    return UnreadCount(count=await unread_count(svc.sessions, actor.user_id))


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


async def get_preferences(svc: Services, actor: Actor, inp: Empty) -> Preferences:
    async with svc.sessions() as session:
        return preferences_out(await session.get(NotificationPreferences, actor.user_id))


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
        return preferences_out(row)


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


async def send(svc: Services, request: CreateRequest) -> tuple[list[int], int, bool]:
    """Store, skipping what the recipients muted: (ids, muted count, replayed)."""
    async with svc.sessions() as session:
        wanted = await unmuted(session, request.items)
    muted = len(request.items) - len(wanted)
    created = await svc.store.create(
        CreateRequest(wanted, request.actor_id, request.idempotency_key, request.audit)
    )
    return created.ids, (0 if created.replayed else muted), created.replayed


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


async def _admin_quota(svc: Services, actor: Actor, count: int) -> None:
    retry_after = await svc.limits.admin_send(actor.user_id, count)
    if retry_after is not None:
        limit = svc.limits.admin_notifications.amount
        raise ServiceError(
            "TOO_MANY_REQUESTS",
            f"at most {limit} notifications a minute per admin; retry in {retry_after}s",
            retry_after=retry_after,
        )


async def create_notification(
    svc: Services, actor: Actor, inp: CreateNotification, idempotency_key: str | None = None
) -> Notification:
    """Admin: one notification to one user (``Idempotency-Key``: same key → same result).

    The rows, the key and the audit row commit together; the key's unique constraint decides
    between concurrent requests with one key.
    """
    actor.require_admin()
    check_idempotency_key(idempotency_key)
    ids = (
        None if idempotency_key is None else await svc.store.lookup(actor.user_id, idempotency_key)
    )
    if ids is None:
        if not await _existing_users(svc, [inp.user_id]):
            raise not_found(f"userId: no active user {inp.user_id}")
        await _admin_quota(svc, actor, 1)
        item = NewNotification(
            inp.user_id, inp.type, inp.title, inp.message, inp.data, created_by=actor.user_id
        )
        ids, muted, _ = await send(
            svc,
            CreateRequest(
                [item],
                actor.user_id,
                idempotency_key,
                AuditEntry(actor.user_id, "notification.create", {"userId": inp.user_id}),
            ),
        )
        if muted:
            raise ServiceError(
                "CONFLICT", f"userId: user {inp.user_id} has muted {inp.type} notifications"
            )
    if not ids:
        raise not_found("the notification was removed")
    async with svc.sessions() as session:
        row = await session.get(NotificationQueue, ids[0])
    if row is None:
        raise not_found("the notification was removed")
    return _to_model(svc, row)


async def broadcast(
    svc: Services, actor: Actor, inp: Broadcast, idempotency_key: str | None = None
) -> BroadcastResult:
    """Admin: one notification to each of ``userIds`` or of a segment's members."""
    actor.require_admin()
    check_idempotency_key(idempotency_key)
    if (inp.user_ids is None) == (inp.segment is None):
        raise bad_request("userIds", "give exactly one of userIds or segment")
    if idempotency_key is not None:
        previous = await svc.store.lookup(actor.user_id, idempotency_key)
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
    audit = AuditEntry(
        actor.user_id, "notification.broadcast", {"segment": inp.segment, "type": inp.type}
    )
    ids, muted, _ = await send(svc, CreateRequest(items, actor.user_id, idempotency_key, audit))
    return BroadcastResult(created=len(ids), muted=muted, ids=ids)
