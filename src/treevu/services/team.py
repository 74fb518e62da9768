"""What a manager sees of their team (SPEC §5, §9 Managers): aggregates that single no one out,
and the alerts about their direct reports — never an individual's figure.

What the manager can put together at one moment — the overview, their team's size, and the
alerts, which name the reports getting emergency support — never gives the number of their
other reports in a segment, or in any set of segments, when it is 1 to 4:

- A report the alerts name is counted under ``crisis_intervention`` until their intervention
  ends, whatever their segment now: the manager already knows they are getting emergency
  support, and the overview does not tell whether they have left crisis.
- A segment's count is shown only when it is 5 or more and, without the people the alerts
  name, 0 or 5 or more; otherwise ``"<5"`` (fewer than 5 in it) or ``"suppressed"``.
- What is hidden can be worked out by subtraction from the team's size; when that would be 1
  to 4 people the alerts do not name (reports without a profile included), the smallest counts
  shown are hidden too (``"suppressed"``) until it is 0 or 5 or more.

An empty segment shows ``"<5"`` like any count under 5 (SPEC §9); when what is hidden adds up
to 0 people, the manager may work out that those segments are empty, which reveals no one.
Two overviews taken at different times differ by who moved in between: see docs/workflows.md
§"Managers" for why that is not hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select

from treevu.db import EmployeeSegment, Intervention, User
from treevu.segmentation.policy import SEGMENTS
from treevu.services.bounds import MIN_CELL, RowId
from treevu.services.context import Actor, Services
from treevu.services.errors import bad_request, forbidden
from treevu.services.interventions import ACTIVE, SUPPORT

Cell = int | Literal["<5", "suppressed"]
#: Where a report the alerts name is counted.
CRISIS: Literal["crisis_intervention"] = "crisis_intervention"


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


def _small(n: int) -> bool:
    return 0 < n < MIN_CELL


def suppress(
    counts: Mapping[str, int], known: Mapping[str, int] | None = None, unplaced: int = 0
) -> dict[str, Cell]:
    """The cells of a breakdown (see the module): ``known[k]`` of the ``counts[k]`` people in
    ``k`` are named elsewhere; ``unplaced`` people are in no cell but in the team's size."""
    unknown = {k: n - (known or {}).get(k, 0) for k, n in counts.items()}
    cells: dict[str, Cell] = {}
    for k, n in counts.items():
        if n < MIN_CELL:
            cells[k] = "<5"
        else:
            cells[k] = "suppressed" if _small(unknown[k]) else n
    hidden = unplaced + sum(unknown[k] for k, c in cells.items() if not isinstance(c, int))
    shown = sorted(
        (k for k, c in cells.items() if isinstance(c, int)),
        key=lambda k: (unknown[k] == 0, unknown[k], k),
    )
    for key in shown:
        if not _small(hidden):
            break
        cells[key] = "suppressed"
        hidden += unknown[key]
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


def _alerted(manager: int) -> tuple[ColumnElement[bool], ...]:
    """Active direct reports of ``manager`` with an open, contacted or in-progress
    intervention: whom :func:`get_alerts` names."""
    return (
        User.manager_id == manager,
        User.is_active.is_(True),
        Intervention.status.in_(ACTIVE),
    )


async def get_overview(svc: Services, actor: Actor, inp: TeamInput) -> TeamOverview:
    manager = await _manager(actor, inp)
    async with svc.sessions() as session:
        size = await session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.manager_id == manager, User.is_active.is_(True))
        )
        placed = (
            await session.execute(
                select(EmployeeSegment.user_id, EmployeeSegment.segment)
                .join(User, User.id == EmployeeSegment.user_id)
                .where(User.manager_id == manager, User.is_active.is_(True))
            )
        ).all()
        named = set(
            await session.scalars(
                select(Intervention.user_id)
                .join(User, User.id == Intervention.user_id)
                .where(*_alerted(manager))
            )
        )
    counts: dict[str, int] = dict.fromkeys(SEGMENTS, 0)
    for uid, segment in placed:
        counts[CRISIS if uid in named else str(segment)] += 1
    known = sum(1 for uid, _ in placed if uid in named)
    team_size = int(size or 0)
    cells = suppress(counts, {CRISIS: known}, team_size - len(placed))
    return TeamOverview(manager_id=manager, team_size=team_size, segments=cells)


async def get_alerts(svc: Services, actor: Actor, inp: TeamInput) -> TeamAlerts:
    """Active direct reports with an open crisis intervention: who, and the kind of support."""
    manager = await _manager(actor, inp)
    async with svc.sessions() as session:
        rows = (
            await session.execute(
                select(User.id, User.name, Intervention.created_at)
                .join(Intervention, Intervention.user_id == User.id)
                .where(*_alerted(manager))
                .order_by(Intervention.created_at.desc(), Intervention.id.desc())
            )
        ).all()
    return TeamAlerts(
        items=[
            TeamAlert(employee_id=uid, employee_name=name, support=SUPPORT, since=since)
            for uid, name, since in rows
        ]
    )
