"""Bulk recompute on every backend: one code path, only changed rows written, history kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, pool, select, update
from sqlalchemy.orm import Session

from tests.conftest import Database
from treevu.db import EmployeeInputs, EmployeeSegment, RecommendationEvent, SegmentHistory, User
from treevu.population import generate_population
from treevu.segmentation.engine import Inputs, profile_at, score
from treevu.segmentation.policy import SEGMENTS, default_policy
from treevu.services.people.seed import write_population
from treevu.services.segmentation import recompute as recompute_module
from treevu.services.segmentation.recompute import recompute

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _engine(db: Database) -> Engine:
    return create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)


def test_recompute_scores_everyone_then_writes_only_changes(database: Database) -> None:
    engine = _engine(database)
    policy = default_policy()
    pop = generate_population(400, 3)
    write_population(engine, pop, now=NOW)

    first = recompute(engine, policy, now=NOW)
    with_inputs = int(pop.has_inputs.sum())
    assert first.scored == with_inputs
    assert first.written == with_inputs
    assert first.segment_changes == []  # first placements are history, not "changes"
    with Session(engine) as s:
        rows = s.scalars(select(EmployeeSegment)).all()
        assert len(rows) == with_inputs
        assert {r.segment for r in rows} == set(SEGMENTS)
        assert all(r.reasons and r.rule and r.policy_version == policy.version for r in rows)
        assert s.query(SegmentHistory).count() == with_inputs

    second = recompute(engine, policy, now=NOW + timedelta(hours=1))
    assert (second.scored, second.written, second.changes) == (with_inputs, 0, [])

    # Push one champion-ish user into crisis: exactly that row changes, with history and event.
    with Session(engine) as s:
        target = s.scalar(
            select(EmployeeSegment.user_id).where(EmployeeSegment.segment != "crisis_intervention")
        )
        assert target is not None
        s.execute(
            update(EmployeeInputs)
            .where(EmployeeInputs.user_id == target)
            .values(
                monthly_spending=50_000,
                savings_balance=0,
                alerts_30d=9,
                ewa_advances_30d=6,
                survey_score=None,
            )
        )
        s.commit()
    third = recompute(engine, policy, now=NOW + timedelta(hours=2))
    assert third.written == 1
    assert [(c.user_id, c.to_segment) for c in third.segment_changes] == [
        (target, "crisis_intervention")
    ]
    with Session(engine) as s:
        hist = s.scalars(
            select(SegmentHistory)
            .where(SegmentHistory.user_id == target)
            .order_by(SegmentHistory.id)
        ).all()
        assert [h.to_segment for h in hist][-1] == "crisis_intervention"
        assert hist[-1].from_segment == hist[-2].to_segment
    engine.dispose()


def test_one_user_path_matches_bulk_path(database: Database) -> None:
    engine = _engine(database)
    policy = default_policy()
    pop = generate_population(200, 5)
    write_population(engine, pop, now=NOW)
    recompute(engine, policy, now=NOW)
    with Session(engine, expire_on_commit=False) as s:
        bulk = {r.user_id: r for r in s.scalars(select(EmployeeSegment))}
        s.execute(update(EmployeeSegment).values(profile_hash=0))  # force rewrite
        s.commit()
    uid = sorted(bulk)[10]
    single = recompute(engine, policy, now=NOW, user_ids=[uid])
    assert single.scored == 1 and single.written == 1
    with Session(engine) as s:
        row = s.scalar(select(EmployeeSegment).where(EmployeeSegment.user_id == uid))
        assert row is not None
        b = bulk[uid]
        assert (row.segment, row.fwi_score, row.wellness_score, row.reasons, row.rule) == (
            b.segment,
            b.fwi_score,
            b.wellness_score,
            b.reasons,
            b.rule,
        )
        # And the pure engine, fed the stored inputs, agrees too.
        i = int(uid) - 1
        one = Inputs.from_columns([getattr(pop.inputs, f)[i : i + 1] for f in pop.inputs.__slots__])
        p = profile_at(score(one, policy), 0, policy)
    assert p.segment == row.segment
    engine.dispose()


def test_stale_survey_is_ignored_and_dismissed_items_reduce_count(database: Database) -> None:
    engine = _engine(database)
    policy = default_policy()
    write_population(engine, generate_population(60, 2), now=NOW)
    with Session(engine) as s:
        uid = s.scalar(select(EmployeeInputs.user_id).order_by(EmployeeInputs.user_id))
        assert uid is not None
        s.execute(
            update(EmployeeInputs)
            .where(EmployeeInputs.user_id == uid)
            .values(survey_score=95, survey_at=NOW - timedelta(days=181))
        )
        s.commit()
    recompute(engine, policy, now=NOW)
    with Session(engine) as s:
        row = s.scalar(select(EmployeeSegment).where(EmployeeSegment.user_id == uid))
        assert row is not None and "survey" not in (row.reasons or "")
        before = row.recommendation_count
    from treevu.segmentation.recommendations import rank_recommendations

    with Session(engine) as s:
        inp = s.get(EmployeeInputs, uid)
        assert inp is not None
    one = Inputs.from_records(
        [
            {
                "monthlyIncome": inp.monthly_income,
                "monthlySpending": inp.monthly_spending,
                "savingsBalance": inp.savings_balance,
                "monthlyDebtPayments": inp.monthly_debt_payments,
                "ewaAdvances30d": inp.ewa_advances_30d,
                "alerts30d": inp.alerts_30d,
                "activeDays30d": inp.active_days_30d,
                "goalsCompleted90d": inp.goals_completed_90d,
                "lessonsCompleted90d": inp.lessons_completed_90d,
                "treePoints": inp.tree_points,
            }
        ]
    )
    top = rank_recommendations(one, score(one, policy), 0, limit=1)[0].item.id
    with Session(engine) as s:
        s.add(
            RecommendationEvent(
                user_id=uid, recommendation_id=top, kind="dismissed", created_at=NOW
            )
        )
        s.commit()
    again = recompute(engine, policy, now=NOW)
    assert again.written == 1
    with Session(engine) as s:
        row = s.scalar(select(EmployeeSegment).where(EmployeeSegment.user_id == uid))
        assert row is not None and row.recommendation_count == before - 1
    engine.dispose()


def test_many_batches_and_inactive_users_match_one_batch(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batching by user id changes nothing: small batches give the very same table."""
    engine = _engine(database)
    policy = default_policy()
    write_population(engine, generate_population(500, 11), now=NOW)
    with Session(engine) as s:
        s.execute(update(User).where(User.id.in_([40, 41, 42])).values(is_active=False))
        s.commit()
    one = recompute(engine, policy, now=NOW)
    with Session(engine) as s:
        first = {
            (r.user_id, r.segment, r.fwi_score, r.reasons)
            for r in s.scalars(select(EmployeeSegment))
        }
        s.execute(update(EmployeeSegment).values(profile_hash=0))
        s.commit()
    monkeypatch.setattr(recompute_module, "BATCH_USERS", 37)
    many = recompute(engine, policy, now=NOW)
    with Session(engine) as s:
        again = {
            (r.user_id, r.segment, r.fwi_score, r.reasons)
            for r in s.scalars(select(EmployeeSegment))
        }
    assert many.scored == one.scored == len(first)
    assert again == first
    assert not {40, 41, 42} & {uid for uid, *_ in first}
    ids = sorted(uid for uid, *_ in first)[:1200:1]
    long_list = recompute(engine, policy, now=NOW, user_ids=[*ids, *range(10**6, 10**6 + 1500)])
    assert long_list.scored == len(ids)
    engine.dispose()
