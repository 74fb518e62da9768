"""What a manager sees of their team (SPEC §5, §9 Managers): aggregates that single no one out,
and the alerts about their direct reports — never an individual's figure.

Small counts are suppressed: a segment with fewer than 5 of the team shows ``"<5"``. A manager
knows the size of their own team, so one suppressed count — or several adding up to less than
5 — could be worked out by subtraction; then the smallest counts shown are suppressed too
(shown ``"suppressed"``) until what is hidden adds up to at least 5 people. A team under 5
shows nothing but its size.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from treevu.db import EmployeeSegment, Intervention, User
from treevu.segmentation.policy import SEGMENTS
from treevu.services.bounds import MIN_CELL, RowId
from treevu.services.context import Actor, Services
from treevu.services.errors import bad_request, forbidden
from treevu.services.interventions import ACTIVE, SUPPORT

Cell = int | Literal["<5", "suppressed"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TeamInput(Model):
    #: Admins name the manager; a manager always sees their own team.
    manager_id: RowId | None = Field(default=None, alias="managerId")


class TeamOverview(Model):
    manager_id: int = Field(alias="managerId")
    team_size: int = Field(alias="teamSize")
    segments: dict[str, Cell]


class TeamAlert(Model):
    employee_id: int = Field(alias="employeeId")
    employee_name: str = Field(alias="employeeName")
    support: str
    since: datetime


class TeamAlerts(Model):
    items: list[TeamAlert]


def suppress(counts: dict[str, int]) -> dict[str, Cell]:
    """Counts under 5 as ``"<5"``, plus complementary suppression (see the module)."""
    cells: dict[str, Cell] = {k: ("<5" if n < MIN_CELL else n) for k, n in counts.items()}
    hidden = sum(n for k, n in counts.items() if cells[k] == "<5")
    if any(c == "<5" for c in cells.values()) and hidden < MIN_CELL:
        for key in sorted((k for k in counts if cells[k] != "<5"), key=lambda k: counts[k]):
            cells[key] = "suppressed"
            hidden += counts[key]
            if hidden >= MIN_CELL:
                break
    return cells


async def _manager(actor: Actor, inp: TeamInput) -> int:
    if actor.role == "manager":
        if inp.manager_id not in (None, actor.user_id):
            raise forbidden("managerId: you may only see your own team")
        return actor.user_id
    if actor.is_admin:
        if inp.manager_id is None:
            raise bad_request("managerId", "admins name the manager whose team to see")
        return inp.manager_id
    raise forbidden("managers and admins only")


async def get_overview(svc: Services, actor: Actor, inp: TeamInput) -> TeamOverview:
    manager = await _manager(actor, inp)
    async with svc.sessions() as session:
        size = await session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.manager_id == manager, User.is_active.is_(True))
        )
        rows = (
            await session.execute(
                select(EmployeeSegment.segment, func.count())
                .join(User, User.id == EmployeeSegment.user_id)
                .where(User.manager_id == manager, User.is_active.is_(True))
                .group_by(EmployeeSegment.segment)
            )
        ).all()
    counts = {s: 0 for s in SEGMENTS} | {str(k): int(n) for k, n in rows}
    return TeamOverview(manager_id=manager, team_size=int(size or 0), segments=suppress(counts))


async def get_alerts(svc: Services, actor: Actor, inp: TeamInput) -> TeamAlerts:
    """Direct reports with an open crisis intervention: who, and the kind of support."""
    manager = await _manager(actor, inp)
    async with svc.sessions() as session:
        rows = (
            await session.execute(
                select(User.id, User.name, Intervention.created_at)
                .join(Intervention, Intervention.user_id == User.id)
                .where(User.manager_id == manager, Intervention.status.in_(ACTIVE))
                .order_by(Intervention.created_at.desc())
            )
        ).all()
    return TeamAlerts(
        items=[
            TeamAlert(employee_id=uid, employee_name=name, support=SUPPORT, since=since)
            for uid, name, since in rows
        ]
    )
