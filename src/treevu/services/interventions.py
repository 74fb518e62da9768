"""Crisis interventions (SPEC §6.4, §9 Crisis interventions).

Entering ``crisis_intervention`` — from any path, since every path is a recompute that writes a
``segment.changed`` event — reaches :func:`entered_crisis` through the outbox relay, inside the
relay's transaction: it opens one intervention with a plan, assigns the least-loaded counselor
with free capacity (ties: lowest id) or leaves it queued and alerts every admin, and returns
the notifications (employee, manager, counselor or admins) that the relay stores in the same
transaction — so each is sent exactly once. Leaving crisis resolves an intervention nobody has
started working on, or adds a note to one in progress (:func:`left_crisis`).

What a manager is told names the employee and the kind of support, nothing else: no input,
score, level or segment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import AuditLog, EmployeeSegment, Intervention, User
from treevu.services.bounds import RowId
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, forbidden, not_found
from treevu.services.notifications.store import NewNotification
from treevu.services.segmentation.queries import newest_first, page_cursor

Status = Literal["open", "contacted", "in_progress", "resolved", "closed"]
#: The flow of SPEC §9, in order; resolved and closed end it.
FLOW: Final[tuple[Status, ...]] = ("open", "contacted", "in_progress", "resolved", "closed")
ACTIVE: Final = ("open", "contacted", "in_progress")
#: The kind of support a crisis intervention is (what the manager is told).
SUPPORT: Final = "Emergency Counseling"
#: Plan steps for the reasons a profile records (the catalog); every plan starts with the first.
FIRST_STEP: Final = "Meet your counselor within one business day"
PLAN_STEPS: Final[dict[str, str]] = {
    "fwi<30": "Build a one-month emergency budget together",
    "risk=critical": "List the bills to protect first: housing, utilities, food",
    "risk_raised:spending": "Track spending for 30 days and cap the largest categories",
    "risk_raised:alerts": "Set up payment reminders to stop overdraft and late fees",
    "fwi<50": "Agree on a debt-management plan",
    "risk=high": "Review hardship programs and emergency support open to you",
}
DEFAULT_STEP: Final = "Review hardship programs and emergency support open to you"
STATUS_MESSAGES: Final[dict[str, str]] = {
    "open": "A counselor will reach out to you shortly with emergency support options.",
    "contacted": "Your counselor has reached out to you.",
    "in_progress": "Your counselor is working on your support plan with you.",
    "resolved": "Your support case is resolved. Your counselor remains available.",
    "closed": "Your support case is closed.",
}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def plan_for(reasons: list[str]) -> dict[str, Any]:
    steps = [FIRST_STEP]
    for reason in reasons:
        step = PLAN_STEPS.get(reason)
        if step and step not in steps:
            steps.append(step)
    if len(steps) == 1:
        steps.append(DEFAULT_STEP)
    return {"steps": steps}


async def _free_counselor(session: AsyncSession) -> int | None:
    """The least-loaded active counselor with free capacity (ties: lowest id), locked so that
    two assignments at once cannot both take the last slot."""
    counselors = (
        await session.execute(
            select(User.id, User.counselor_capacity)
            .where(User.role == "counselor", User.is_active.is_(True))
            .order_by(User.id)
            .with_for_update()
        )
    ).all()
    if not counselors:
        return None
    load = dict(
        (
            await session.execute(
                select(Intervention.counselor_id, func.count())
                .where(Intervention.status.in_(ACTIVE), Intervention.counselor_id.is_not(None))
                .group_by(Intervention.counselor_id)
            )
        ).all()
    )
    free = [(load.get(cid, 0), cid) for cid, cap in counselors if load.get(cid, 0) < cap]
    return min(free)[1] if free else None


def _employee_notice(intervention: Intervention, status: str, title: str) -> NewNotification:
    return NewNotification(
        intervention.user_id,
        "intervention_update",
        title,
        STATUS_MESSAGES[status],
        {"interventionId": intervention.id, "status": status, "crisis": True},
    )


def _assigned_notice(intervention: Intervention, counselor_id: int, name: str) -> NewNotification:
    return NewNotification(
        counselor_id,
        "intervention_update",
        "New case assigned to you",
        f"{name} needs {SUPPORT.lower()}. Please reach out within one business day.",
        {"interventionId": intervention.id, "employeeId": intervention.user_id},
    )


async def entered_crisis(
    session: AsyncSession, user_id: int, now: datetime, extra: dict[str, Any]
) -> list[NewNotification]:
    """Open (once) the user's intervention and say so to everyone concerned."""
    user = (
        await session.execute(select(User).where(User.id == user_id).with_for_update())
    ).scalar_one_or_none()
    if user is None:
        return []
    already = await session.scalar(
        select(Intervention.id).where(
            Intervention.user_id == user_id, Intervention.status.in_(ACTIVE)
        )
    )
    if already is not None:
        return []  # one open intervention at a time
    reasons = await session.scalar(
        select(EmployeeSegment.reasons).where(EmployeeSegment.user_id == user_id)
    )
    counselor = await _free_counselor(session)
    intervention = Intervention(
        user_id=user_id,
        counselor_id=counselor,
        kind="crisis",
        status="open",
        plan=plan_for((reasons or "").split(",")),
        notes=[],
        created_at=now,
        updated_at=now,
    )
    session.add(intervention)
    await session.flush()
    employee = _employee_notice(intervention, "open", "We're here to help")
    items = [employee._replace(data={**(employee.data or {}), **extra})]
    if user.manager_id is not None:
        items.append(
            NewNotification(
                user.manager_id,
                "intervention_update",
                f"{user.name} is getting support",
                f"{user.name} has been offered {SUPPORT.lower()}. A little flexibility and "
                "understanding from you helps; no action is needed.",
                {
                    "interventionId": intervention.id,
                    "employeeId": user.id,
                    "employeeName": user.name,
                    "support": SUPPORT,
                },
            )
        )
    if counselor is not None:
        items.append(_assigned_notice(intervention, counselor, user.name))
    else:
        admins = await session.scalars(
            select(User.id).where(User.role == "admin", User.is_active.is_(True))
        )
        items.extend(
            NewNotification(
                admin,
                "intervention_update",
                "No counselor is free for a crisis case",
                f"{user.name} waits for a counselor: every counselor is at capacity.",
                {"interventionId": intervention.id, "employeeId": user.id, "queued": True},
            )
            for admin in admins
        )
    return items


async def left_crisis(session: AsyncSession, user_id: int, now: datetime) -> list[NewNotification]:
    """An intervention nobody has started on is resolved; one in progress gets a note."""
    intervention = await session.scalar(
        select(Intervention).where(Intervention.user_id == user_id, Intervention.status.in_(ACTIVE))
    )
    if intervention is None:
        return []
    note = "left crisis_intervention on a recompute"
    if intervention.status == "in_progress":
        intervention.notes = [*(intervention.notes or []), _note(now, None, None, note)]
        intervention.updated_at = now
        return [_employee_notice(intervention, "in_progress", "Your situation improved")]
    return await _move(session, intervention, "resolved", None, note, now)


def _note(now: datetime, by: int | None, status: str | None, text: str | None) -> dict[str, Any]:
    return {"at": now.isoformat(), "by": by, "status": status, "note": text}


async def _move(
    session: AsyncSession,
    intervention: Intervention,
    status: Status,
    by: int | None,
    note: str | None,
    now: datetime,
) -> list[NewNotification]:
    """Change the status (noted), tell the employee; an ended one frees its counselor's slot,
    which the oldest queued intervention takes."""
    intervention.status = status
    intervention.updated_at = now
    intervention.notes = [*(intervention.notes or []), _note(now, by, status, note)]
    items = [_employee_notice(intervention, status, "Your support case was updated")]
    if status in ("resolved", "closed"):
        intervention.ended_at = now
        await session.flush()
        waiting = await session.scalar(
            select(Intervention)
            .where(Intervention.counselor_id.is_(None), Intervention.status == "open")
            .order_by(Intervention.created_at, Intervention.id)
            .limit(1)
        )
        counselor = await _free_counselor(session) if waiting is not None else None
        if waiting is not None and counselor is not None:
            waiting.counselor_id = counselor
            waiting.updated_at = now
            name = await session.scalar(select(User.name).where(User.id == waiting.user_id))
            items.append(_assigned_notice(waiting, counselor, str(name)))
    return items


# -- operations ---------------------------------------------------------------------------------


class InterventionOut(Model):
    id: int
    user_id: int = Field(alias="userId")
    employee_name: str = Field(alias="employeeName")
    counselor_id: int | None = Field(alias="counselorId")
    kind: str
    status: str
    plan: dict[str, Any]
    notes: list[dict[str, Any]]
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")
    ended_at: datetime | None = Field(alias="endedAt")


class MyIntervention(Model):
    """What the employee sees: status, plan and counselor — not the counselor's notes."""

    id: int
    status: str
    plan: dict[str, Any]
    counselor_id: int | None = Field(alias="counselorId")
    counselor_name: str | None = Field(alias="counselorName")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class InterventionListInput(Model):
    status: Status | None = None
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)


class InterventionPage(Model):
    items: list[InterventionOut]
    next_cursor: str | None = Field(alias="nextCursor")


class InterventionRef(Model):
    intervention_id: RowId = Field(alias="interventionId")


class InterventionChange(Model):
    """A change's body over REST (the intervention is in the path)."""

    status: Status
    note: str | None = Field(default=None, min_length=1, max_length=2000)


class InterventionUpdate(InterventionChange):
    intervention_id: RowId = Field(alias="interventionId")


class Empty(Model):
    pass


def _require_counselor_or_admin(actor: Actor) -> None:
    if actor.role not in ("counselor", "admin"):
        raise forbidden("counselors and admins only")


async def _out(session: AsyncSession, rows: list[Intervention]) -> list[InterventionOut]:
    names = dict(
        (
            await session.execute(
                select(User.id, User.name).where(User.id.in_([r.user_id for r in rows] or [0]))
            )
        ).all()
    )
    return [
        InterventionOut(
            id=r.id,
            user_id=r.user_id,
            employee_name=str(names.get(r.user_id, "")),
            counselor_id=r.counselor_id,
            kind=r.kind,
            status=r.status,
            plan=r.plan or {},
            notes=list(r.notes or []),
            created_at=r.created_at,
            updated_at=r.updated_at,
            ended_at=r.ended_at,
        )
        for r in rows
    ]


async def list_interventions(
    svc: Services, actor: Actor, inp: InterventionListInput
) -> InterventionPage:
    """A counselor's own interventions; every one for an admin. Newest first."""
    _require_counselor_or_admin(actor)
    stmt = newest_first(select(Intervention), Intervention.id, inp.cursor, inp.limit)
    if actor.role == "counselor":
        stmt = stmt.where(Intervention.counselor_id == actor.user_id)
    if inp.status is not None:
        stmt = stmt.where(Intervention.status == inp.status)
    async with svc.sessions() as session:
        rows = list(await session.scalars(stmt))
        items = await _out(session, rows)
    return InterventionPage(items=items, next_cursor=page_cursor([r.id for r in rows], inp.limit))


async def _visible(session: AsyncSession, actor: Actor, intervention_id: int) -> Intervention:
    _require_counselor_or_admin(actor)
    found = await session.get(Intervention, intervention_id)
    if found is None:
        raise not_found(f"interventionId: no intervention {intervention_id}")
    if actor.role == "counselor" and found.counselor_id != actor.user_id:
        raise forbidden("interventionId: this intervention is not assigned to you")
    return found


async def get_intervention(svc: Services, actor: Actor, inp: InterventionRef) -> InterventionOut:
    async with svc.sessions() as session:
        found = await _visible(session, actor, inp.intervention_id)
        return (await _out(session, [found]))[0]


async def update_intervention(
    svc: Services, actor: Actor, inp: InterventionUpdate
) -> InterventionOut:
    """Move along the flow (never back; resolved and closed are final), with a note; the
    employee is told of each change."""
    async with svc.sessions() as session:
        found = await _visible(session, actor, inp.intervention_id)
        current = FLOW.index(found.status)
        wanted = FLOW.index(inp.status)
        if found.status in ("resolved", "closed") or wanted <= current:
            raise ServiceError(
                "CONFLICT",
                f"status: an intervention that is {found.status} cannot become {inp.status}",
                field="status",
            )
        now = svc.clock()
        items = await _move(session, found, inp.status, actor.user_id, inp.note, now)
        async with svc.store.committing(session, items, now):
            session.add(
                AuditLog(
                    actor_id=actor.user_id,
                    action="intervention.update",
                    target=f"intervention:{found.id}",
                    detail={"status": inp.status},
                    created_at=now,
                )
            )
        await session.refresh(found)
        return (await _out(session, [found]))[0]


async def get_my_intervention(svc: Services, actor: Actor, inp: Empty) -> MyIntervention:
    """The caller's current intervention (or the latest one), without the counselor's notes."""
    async with svc.sessions() as session:
        found = await session.scalar(
            select(Intervention)
            .where(Intervention.user_id == actor.user_id)
            .order_by(Intervention.id.desc())
            .limit(1)
        )
        if found is None:
            raise not_found("you have no intervention")
        counselor = (
            await session.scalar(select(User.name).where(User.id == found.counselor_id))
            if found.counselor_id is not None
            else None
        )
    return MyIntervention(
        id=found.id,
        status=found.status,
        plan=found.plan or {},
        counselor_id=found.counselor_id,
        counselor_name=counselor,
        created_at=found.created_at,
        updated_at=found.updated_at,
    )
