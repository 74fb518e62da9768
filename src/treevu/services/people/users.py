"""Users, employee inputs and survey answers: the ways inputs reach the product."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from treevu.db import AuditLog, EmployeeInputs, SurveyResponse, User
from treevu.segmentation.engine import INPUT_NAMES, InputError, validate_record
from treevu.segmentation.survey import AGE_BANDS, ITEMS, MODES, SurveyError, score_survey
from treevu.services.bounds import MAX_INT
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, bad_request, forbidden, no_inputs, not_found
from treevu.services.rewards.achievements import checks_due
from treevu.services.rewards.points import earn
from treevu.services.segmentation.queries import (
    UserRef,
    WellnessProfile,
    decode_cursor,
    get_wellness_profile,
    page_cursor,
    run_recompute,
)

Role = Literal["employee", "manager", "counselor", "admin"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class UserOut(Model):
    id: int
    email: str
    name: str
    role: str
    manager_id: int | None = Field(alias="managerId")
    department: str | None
    is_active: bool = Field(alias="isActive")


class UserCreate(Model):
    email: EmailStr
    name: str = Field(min_length=1, max_length=255)
    role: Role = "employee"
    manager_id: int | None = Field(default=None, alias="managerId", ge=1, le=MAX_INT)
    department: str | None = Field(default=None, max_length=100)


class UserListInput(Model):
    role: Role | None = None
    department: str | None = None
    manager_id: int | None = Field(default=None, alias="managerId", ge=1, le=MAX_INT)
    cursor: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class UserPage(Model):
    items: list[UserOut]
    next_cursor: str | None = Field(alias="nextCursor")


class EmployeeInputsIn(Model):
    """SPEC §2 inputs; checked by the engine's own validator, so errors name the field."""

    monthly_income: float = Field(alias="monthlyIncome", ge=0)
    monthly_spending: float = Field(alias="monthlySpending", ge=0)
    savings_balance: float = Field(alias="savingsBalance", ge=0)
    monthly_debt_payments: float = Field(alias="monthlyDebtPayments", ge=0)
    ewa_advances_30d: int = Field(alias="ewaAdvances30d", ge=0, le=MAX_INT)
    alerts_30d: int = Field(alias="alerts30d", ge=0, le=MAX_INT)
    survey_score: float | None = Field(default=None, alias="surveyScore", ge=0, le=100)
    active_days_30d: int = Field(alias="activeDays30d", ge=0, le=30)
    goals_completed_90d: int = Field(alias="goalsCompleted90d", ge=0, le=MAX_INT)
    lessons_completed_90d: int = Field(alias="lessonsCompleted90d", ge=0, le=MAX_INT)
    tree_points: int = Field(alias="treePoints", ge=0, le=MAX_INT)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_only(cls, value: object) -> object:
        # Lax mode would turn "3000" into 3000.0 and true into 1; SPEC §3 rejects text.
        if isinstance(value, bool | str):
            raise ValueError(f"must be a number, got {type(value).__name__} {value!r}")
        return value


class PutInputs(Model):
    user_id: int = Field(alias="userId", ge=1, le=MAX_INT)
    inputs: EmployeeInputsIn


class SurveyIn(Model):
    answers: list[str]
    age_band: Literal["18-61", "62+"] = Field(alias="ageBand")
    mode: Literal["self", "read"]


class SubmitSurvey(Model):
    user_id: int = Field(alias="userId", ge=1, le=MAX_INT)
    survey: SurveyIn


class SurveyOut(Model):
    raw: int
    scale_score: int = Field(alias="scaleScore")


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        manager_id=user.manager_id,
        department=user.department,
        is_active=user.is_active,
    )


async def list_users(svc: Services, actor: Actor, inp: UserListInput) -> UserPage:
    actor.require_admin()
    stmt = select(User).order_by(User.id).limit(inp.limit)
    after = decode_cursor(inp.cursor)
    if after is not None:
        stmt = stmt.where(User.id > after)
    if inp.role is not None:
        stmt = stmt.where(User.role == inp.role)
    if inp.department is not None:
        stmt = stmt.where(User.department == inp.department)
    if inp.manager_id is not None:
        stmt = stmt.where(User.manager_id == inp.manager_id)
    async with svc.sessions() as session:
        users = list(await session.scalars(stmt))
    return UserPage(
        items=[user_out(u) for u in users],
        next_cursor=page_cursor([u.id for u in users], inp.limit),
    )


async def create_user(svc: Services, actor: Actor, inp: UserCreate) -> UserOut:
    actor.require_admin()
    async with svc.sessions() as session:
        if inp.manager_id is not None and await session.get(User, inp.manager_id) is None:
            raise bad_request("managerId", f"no user {inp.manager_id}")
        user = User(
            email=str(inp.email).lower(),
            name=inp.name,
            role=inp.role,
            manager_id=inp.manager_id,
            department=inp.department,
            is_active=True,
        )
        session.add(user)
        try:
            await session.flush()
        except IntegrityError as exc:
            raise ServiceError(
                "CONFLICT", f"email: {inp.email} is already taken", field="email"
            ) from exc
        session.add(
            AuditLog(actor_id=actor.user_id, action="user.create", target=f"user:{user.id}")
        )
        await session.commit()
        return user_out(user)


def _may_write_inputs(actor: Actor) -> None:
    # Integration tokens are admin-role service users (see docs/api.md).
    if not actor.is_admin:
        raise forbidden("only admins and integration tokens may write inputs")


async def put_inputs(svc: Services, actor: Actor, inp: PutInputs) -> WellnessProfile:
    """Replace a user's inputs, recompute their profile, and return it.

    Without ``surveyScore`` the stored survey is kept; with one, it is stamped now.
    """
    _may_write_inputs(actor)
    record = inp.inputs.model_dump(by_alias=True)
    try:
        validate_record(record)
    except InputError as exc:
        raise bad_request(exc.field, exc.message) from exc
    async with svc.sessions() as session:
        user = await session.get(User, inp.user_id)
        if user is None:
            raise not_found(f"no user {inp.user_id}")
        row = await session.get(EmployeeInputs, inp.user_id)
        if row is None:
            row = EmployeeInputs(user_id=inp.user_id)
            session.add(row)
        for name, attr in zip(INPUT_NAMES, _ATTRS, strict=True):
            if name == "surveyScore":
                continue
            setattr(row, attr, record[name])
        if record["surveyScore"] is not None:
            row.survey_score = record["surveyScore"]
            row.survey_at = svc.clock()
        row.updated_at = svc.clock()
        session.add(
            AuditLog(actor_id=actor.user_id, action="inputs.put", target=f"user:{inp.user_id}")
        )
        await session.flush()
        await session.execute(checks_due(svc.clock(), [inp.user_id]))
        await session.commit()
    svc.relay.wake()
    await run_recompute(svc, [inp.user_id])
    return await get_wellness_profile(svc, actor, UserRef(user_id=inp.user_id))


#: Attribute of EmployeeInputs for each input name (its column name).
_ATTR_OF_COLUMN = {p.columns[0].name: p.key for p in inspect(EmployeeInputs).column_attrs}
_ATTRS = tuple(_ATTR_OF_COLUMN[name] for name in INPUT_NAMES)


async def submit_survey(svc: Services, actor: Actor, inp: SubmitSurvey) -> SurveyOut:
    """Score a complete CFPB survey, store it, and recompute the user's profile."""
    if actor.user_id != inp.user_id and not actor.is_admin:
        raise forbidden("you may only answer your own survey")
    try:
        result = score_survey(inp.survey.answers, inp.survey.age_band, inp.survey.mode)
    except SurveyError as exc:
        raise bad_request(f"survey.{exc.field}", str(exc).split(": ", 1)[-1]) from exc
    async with svc.sessions() as session:
        if await session.get(User, inp.user_id) is None:
            raise not_found(f"no user {inp.user_id}")
        row = await session.get(EmployeeInputs, inp.user_id)
        if row is None:
            raise no_inputs(inp.user_id)
        now = svc.clock()
        session.add(
            SurveyResponse(
                user_id=inp.user_id,
                answers=list(inp.survey.answers),
                age_band=inp.survey.age_band,
                mode=inp.survey.mode,
                raw=result.raw,
                scale_score=result.scale_score,
                created_at=now,
            )
        )
        row.survey_score = float(result.scale_score)
        row.survey_at = now
        await earn(session, inp.user_id, "survey_answered", now)
        if actor.user_id != inp.user_id:  # an admin answering for someone
            session.add(
                AuditLog(
                    actor_id=actor.user_id,
                    action="survey.submit",
                    target=f"user:{inp.user_id}",
                    detail={"raw": result.raw},
                    created_at=now,
                )
            )
        await session.commit()
    svc.relay.wake()
    await run_recompute(svc, [inp.user_id])
    return SurveyOut(raw=result.raw, scale_score=result.scale_score)


async def get_user(svc: Services, user_id: int) -> User | None:
    async with svc.sessions() as session:
        return await session.get(User, user_id)


class Me(Model):
    """Who the caller is: what a front end needs to pick their page."""

    id: int
    name: str
    email: str
    role: str
    manager_id: int | None = Field(alias="managerId")


async def get_me(svc: Services, actor: Actor, inp: object = None) -> Me:
    user = await get_user(svc, actor.user_id)
    if user is None:
        raise not_found(f"no user {actor.user_id}")
    return Me(
        id=user.id, name=user.name, email=user.email, role=user.role, manager_id=user.manager_id
    )


class SurveyQuestion(Model):
    number: int
    text: str
    choices: list[str]


class SurveyForm(Model):
    """The CFPB Financial Well-Being Scale as the product asks it (wording, choices, bands)."""

    items: list[SurveyQuestion]
    age_bands: list[str] = Field(alias="ageBands")
    modes: list[str]


async def get_survey_form(svc: Services, actor: Actor, inp: object = None) -> SurveyForm:
    return SurveyForm(
        items=[
            SurveyQuestion(number=i.number, text=i.text, choices=list(i.choices)) for i in ITEMS
        ],
        age_bands=list(AGE_BANDS),
        modes=list(MODES),
    )
