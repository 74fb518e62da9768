"""Recommendations from a catalog (SPEC §3): eligibility in columns, a deterministic ranking.

An item is *eligible* for a person when the person's segment is one of the item's ``segments``
(a theme item) or when one of the item's ``triggers`` fires for the person's situation. Like
:func:`~treevu.segmentation.engine.score`, everything is computed over columns, so the same code
serves one user (arrays of length 1) and a bulk job over a million rows. No I/O happens here.

Ranking, for one row (see :func:`rank_recommendations`; :func:`ranked_indices` is the same over
many rows):

1. Triggered items come first, grouped by their most severe firing trigger, in the severity
   order of :data:`TRIGGERS` (``high_debt`` first). An item that is triggered and also a theme
   item of the person's segment counts as triggered.
2. Then the segment's theme items.
3. Within a group, larger ``priority`` first, ties broken by ``id``, so the order never depends
   on the catalog's order or on anything but the data.

Items the user dismissed or completed are skipped and the next item takes their place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from treevu.segmentation.engine import Inputs, Profiles
from treevu.segmentation.policy import SEGMENTS, SPENDING_LEVELS

BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.int64]
Trigger = Callable[[Inputs, Profiles], BoolArray]

#: Debt payments above this share of income trigger ``high_debt`` (SPEC §3).
HIGH_DEBT_RATIO: Final = 0.4
#: Fewer months of spending saved than this trigger ``low_buffer`` (SPEC §3).
LOW_BUFFER_MONTHS: Final = 1.0
#: This many earned-wage advances in 30 days or more trigger ``ewa_reliance`` (SPEC §3).
EWA_RELIANCE_ADVANCES: Final = 2
#: This many overspending alerts in 30 days or more trigger ``frequent_alerts``.
FREQUENT_ALERTS: Final = 3
#: An engagement score below this triggers ``low_engagement``.
LOW_ENGAGEMENT_SCORE: Final = 30.0


def _high_debt(inputs: Inputs, profiles: Profiles) -> BoolArray:
    # Without income the ratio is undefined (NaN); any debt payment is then unaffordable.
    ratio = profiles.debt_ratio
    no_ratio = np.isnan(ratio)
    return np.asarray(
        np.where(
            no_ratio, inputs.monthly_debt_payments > 0, np.nan_to_num(ratio) > HIGH_DEBT_RATIO
        ),
        dtype=np.bool_,
    )


def _excessive_spending(inputs: Inputs, profiles: Profiles) -> BoolArray:
    return np.asarray(profiles.spending_level == SPENDING_LEVELS.index("excessive"), dtype=np.bool_)


def _low_buffer(inputs: Inputs, profiles: Profiles) -> BoolArray:
    return np.asarray(profiles.buffer_months < LOW_BUFFER_MONTHS, dtype=np.bool_)


def _ewa_reliance(inputs: Inputs, profiles: Profiles) -> BoolArray:
    return np.asarray(inputs.ewa_advances_30d >= EWA_RELIANCE_ADVANCES, dtype=np.bool_)


def _frequent_alerts(inputs: Inputs, profiles: Profiles) -> BoolArray:
    return np.asarray(inputs.alerts_30d >= FREQUENT_ALERTS, dtype=np.bool_)


def _low_engagement(inputs: Inputs, profiles: Profiles) -> BoolArray:
    return np.asarray(profiles.engagement_score < LOW_ENGAGEMENT_SCORE, dtype=np.bool_)


def _no_recent_survey(inputs: Inputs, profiles: Profiles) -> BoolArray:
    return np.asarray(np.isnan(inputs.survey_score), dtype=np.bool_)


#: Trigger name -> row mask, in severity order (most severe first), which is the ranking order:
#:
#: - ``high_debt``: debt payments above 40% of income; missed payments compound quickly.
#: - ``excessive_spending``: spending at or above income; every month adds a deficit.
#: - ``low_buffer``: under a month of spending saved; any surprise bill becomes new debt.
#: - ``ewa_reliance``: two or more salary advances in 30 days; each payday starts short.
#: - ``frequent_alerts``: three or more overspending alerts in 30 days.
#: - ``low_engagement``: engagement score under 30; start with the basics.
#: - ``no_recent_survey``: no recent wellness survey; the FWI rests on behaviour alone.
TRIGGERS: Final[Mapping[str, Trigger]] = MappingProxyType(
    {
        "high_debt": _high_debt,
        "excessive_spending": _excessive_spending,
        "low_buffer": _low_buffer,
        "ewa_reliance": _ewa_reliance,
        "frequent_alerts": _frequent_alerts,
        "low_engagement": _low_engagement,
        "no_recent_survey": _no_recent_survey,
    }
)

_SLUG: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One catalog item; ``segments`` make it a theme item, ``triggers`` make it situational."""

    id: str
    title: str
    description: str
    category: str
    segments: tuple[str, ...]
    triggers: tuple[str, ...]
    priority: int

    def __post_init__(self) -> None:
        if not _SLUG.fullmatch(self.id):
            raise ValueError(f"recommendation id must be a lowercase slug, got {self.id!r}")
        if not self.segments and not self.triggers:
            raise ValueError(f"recommendation {self.id}: needs a segment or a trigger")
        for segment in self.segments:
            if segment not in SEGMENTS:
                raise ValueError(f"recommendation {self.id}: unknown segment {segment!r}")
        for trigger in self.triggers:
            if trigger not in TRIGGERS:
                raise ValueError(f"recommendation {self.id}: unknown trigger {trigger!r}")


_CRISIS: Final = "crisis_intervention"
_AT_RISK: Final = "at_risk"
_CHAMPIONS: Final = "financial_champions"
_RISING: Final = "rising_stars"
_STEADY: Final = "steady_performers"

CATALOG: Final[tuple[Recommendation, ...]] = (
    # Crisis intervention: debt management and emergency support.
    Recommendation(
        id="emergency-hardship-support",
        title="Get emergency hardship support",
        description=(
            "Talk to our financial-wellness team today about hardship assistance, payroll "
            "relief options and community resources that can cover essentials while you "
            "get back on your feet."
        ),
        category="emergency",
        segments=(_CRISIS,),
        triggers=(),
        priority=95,
    ),
    Recommendation(
        id="debt-management-plan",
        title="Build a debt management plan",
        description=(
            "Work with a certified credit counselor to list every debt, ask lenders for lower "
            "rates and combine payments into one monthly amount you can actually afford."
        ),
        category="debt",
        segments=(_CRISIS,),
        triggers=("high_debt",),
        priority=90,
    ),
    Recommendation(
        id="crisis-counseling-session",
        title="Book a one-to-one counseling session",
        description=(
            "A confidential 45-minute session with a certified financial counselor to decide "
            "which bills come first, protect rent, food and utilities, and agree a 30-day "
            "recovery plan."
        ),
        category="counseling",
        segments=(_CRISIS,),
        triggers=(),
        priority=85,
    ),
    Recommendation(
        id="starter-emergency-fund",
        title="Start a starter emergency fund",
        description=(
            "Set aside a small automatic amount every payday until one month of essential "
            "expenses is covered; even a modest cushion keeps a surprise bill from turning "
            "into new debt."
        ),
        category="emergency",
        segments=(_CRISIS, _AT_RISK),
        triggers=("low_buffer",),
        priority=80,
    ),
    Recommendation(
        id="creditor-negotiation-guide",
        title="Negotiate with your creditors",
        description=(
            "Scripts and letter templates for asking lenders about hardship programs, reduced "
            "rates or paused payments before an account falls behind."
        ),
        category="debt",
        segments=(_CRISIS,),
        triggers=("high_debt",),
        priority=70,
    ),
    # At risk: financial counseling and budget optimisation.
    Recommendation(
        id="financial-counseling",
        title="Meet a financial counselor",
        description=(
            "A free, confidential conversation with a certified counselor about your income, "
            "bills and goals, ending with three concrete steps for the next month."
        ),
        category="counseling",
        segments=(_AT_RISK,),
        triggers=(),
        priority=85,
    ),
    Recommendation(
        id="budget-optimization",
        title="Optimize your monthly budget",
        description=(
            "Review last month's spending by category in the budget planner, find the three "
            "expenses easiest to trim and set category limits that keep you below your income."
        ),
        category="budgeting",
        segments=(_AT_RISK,),
        triggers=("excessive_spending",),
        priority=80,
    ),
    Recommendation(
        id="ewa-reduction-plan",
        title="Reduce your reliance on salary advances",
        description=(
            "Step down your earned-wage advances over the next three pay cycles while building "
            "a small buffer, so that each payday covers the whole month again."
        ),
        category="ewa",
        segments=(_AT_RISK,),
        triggers=("ewa_reliance",),
        priority=75,
    ),
    Recommendation(
        id="spending-reset-challenge",
        title="Take the 30-day spending reset",
        description=(
            "Track every purchase for 30 days, pause subscriptions you do not use and earn "
            "TreePoints for each week you stay within your plan."
        ),
        category="budgeting",
        segments=(_AT_RISK,),
        triggers=("excessive_spending",),
        priority=65,
    ),
    Recommendation(
        id="debt-payoff-strategy",
        title="Choose a debt payoff strategy",
        description=(
            "Compare the avalanche method (highest rate first) with the snowball method "
            "(smallest balance first) on your real balances and pick a debt-free date you can "
            "commit to."
        ),
        category="debt",
        segments=(_AT_RISK,),
        triggers=("high_debt",),
        priority=60,
    ),
    Recommendation(
        id="bill-calendar",
        title="Line up your bills with payday",
        description=(
            "Map every due date against your pay schedule and ask providers to move the ones "
            "that fall in the gap before payday."
        ),
        category="budgeting",
        segments=(_AT_RISK,),
        triggers=("ewa_reliance",),
        priority=55,
    ),
    # Steady performers: investment opportunities and savings optimisation.
    Recommendation(
        id="savings-optimization",
        title="Optimize your savings",
        description=(
            "Move idle cash to a higher-yield savings account, automate a fixed transfer on "
            "payday and give each goal its own account and target date."
        ),
        category="savings",
        segments=(_STEADY,),
        triggers=(),
        priority=85,
    ),
    Recommendation(
        id="investment-opportunities",
        title="Explore investment opportunities",
        description=(
            "Learn how diversified, low-cost funds work and how your time horizon and comfort "
            "with risk shape a first portfolio."
        ),
        category="investing",
        segments=(_STEADY,),
        triggers=(),
        priority=80,
    ),
    Recommendation(
        id="retirement-contribution-review",
        title="Review your retirement contributions",
        description=(
            "Make sure you contribute enough to receive any employer match, and see what one "
            "extra percentage point does to your projected retirement balance."
        ),
        category="investing",
        segments=(_STEADY, _RISING),
        triggers=(),
        priority=70,
    ),
    Recommendation(
        id="emergency-fund-three-months",
        title="Grow your emergency fund to three months",
        description=(
            "You have the basics covered; a three-month reserve lets you handle a job change "
            "or a large repair without touching your investments."
        ),
        category="savings",
        segments=(_STEADY,),
        triggers=(),
        priority=65,
    ),
    Recommendation(
        id="goal-based-savings",
        title="Set up goal-based savings",
        description=(
            "Split your savings into named goals such as travel, education or a new car, each "
            "with an automatic contribution and a progress tracker."
        ),
        category="savings",
        segments=(_STEADY,),
        triggers=(),
        priority=60,
    ),
    # Rising stars: advanced wealth planning and mentorship.
    Recommendation(
        id="advanced-wealth-planning",
        title="Book an advanced wealth planning session",
        description=(
            "A session with a planner on asset allocation, tax-efficient investing and long "
            "horizons such as buying a home or funding your children's education."
        ),
        category="wealth_planning",
        segments=(_RISING,),
        triggers=(),
        priority=90,
    ),
    Recommendation(
        id="mentorship-program",
        title="Join the peer mentorship program",
        description=(
            "Get paired with a Financial Champion colleague for monthly check-ins on your "
            "goals, habits and the next milestone in your plan."
        ),
        category="mentorship",
        segments=(_RISING,),
        triggers=(),
        priority=85,
    ),
    Recommendation(
        id="tax-efficient-investing",
        title="Make your investing tax-efficient",
        description=(
            "Use tax-advantaged accounts first, place each holding where it is taxed least and "
            "review your contributions before the end of the tax year."
        ),
        category="wealth_planning",
        segments=(_RISING, _CHAMPIONS),
        triggers=(),
        priority=70,
    ),
    Recommendation(
        id="homeownership-planning",
        title="Plan your path to homeownership",
        description=(
            "Estimate a realistic price range, a down-payment target and a timeline, and learn "
            "what lenders look at before you apply for a mortgage."
        ),
        category="wealth_planning",
        segments=(_RISING,),
        triggers=(),
        priority=60,
    ),
    # Financial champions: leadership programs and exclusive benefits.
    Recommendation(
        id="wellness-ambassador-program",
        title="Become a financial wellness ambassador",
        description=(
            "Lead peer workshops and share what worked for you; ambassadors receive leadership "
            "training and recognition across the company."
        ),
        category="leadership",
        segments=(_CHAMPIONS,),
        triggers=(),
        priority=90,
    ),
    Recommendation(
        id="exclusive-member-benefits",
        title="Unlock exclusive member benefits",
        description=(
            "Preferential rates from partner institutions, early access to new features and "
            "bonus TreePoints rewards, reserved for Financial Champions."
        ),
        category="benefits",
        segments=(_CHAMPIONS,),
        triggers=(),
        priority=85,
    ),
    Recommendation(
        id="mentor-a-colleague",
        title="Mentor a colleague",
        description=(
            "Share your experience with a Rising Star in a 30-minute monthly session; mentors "
            "earn TreePoints and leadership credit."
        ),
        category="mentorship",
        segments=(_CHAMPIONS,),
        triggers=(),
        priority=75,
    ),
    Recommendation(
        id="estate-planning",
        title="Start your estate plan",
        description=(
            "Put a will, beneficiary designations and insurance cover in order so that what "
            "you have built is protected for the people who depend on you."
        ),
        category="wealth_planning",
        segments=(_CHAMPIONS,),
        triggers=(),
        priority=65,
    ),
    # Situational items for everyone.
    Recommendation(
        id="spending-alerts-review",
        title="Review your spending alerts",
        description=(
            "Walk through this month's alerts, see which categories keep going over and adjust "
            "your limits or habits with a guided review."
        ),
        category="budgeting",
        segments=(),
        triggers=("frequent_alerts",),
        priority=50,
    ),
    Recommendation(
        id="money-basics-course",
        title="Start the Money Basics course",
        description=(
            "Six short lessons on budgeting, saving and credit, each under ten minutes, with "
            "TreePoints for every lesson you complete."
        ),
        category="education",
        segments=(),
        triggers=("low_engagement",),
        priority=45,
    ),
    Recommendation(
        id="wellness-check-in-survey",
        title="Take the financial wellness check-in",
        description=(
            "Five minutes of questions about how you feel about money; your answers make your "
            "wellness score and these recommendations more accurate."
        ),
        category="education",
        segments=(),
        triggers=("no_recent_survey",),
        priority=40,
    ),
)


@dataclass(frozen=True, slots=True)
class RankedRecommendation:
    """A recommendation in a person's list; ``reason`` is a trigger name or ``segment:<name>``."""

    item: Recommendation
    rank: int
    reason: str


def eligibility(
    inputs: Inputs, profiles: Profiles, catalog: Sequence[Recommendation] = CATALOG
) -> BoolArray:
    """Boolean matrix (rows, items): the item is a theme item of the row's segment or triggered.

    Same answer as :func:`ranked_indices` without the ranking: one boolean column per item, each
    trigger and segment mask computed once (a million rows take tens of milliseconds).
    """
    _check_rows(inputs, profiles, catalog)
    # Item-major, so that each item fills one contiguous row; returned as its (rows, items) view.
    by_item = np.zeros((len(catalog), len(inputs)), dtype=np.bool_)
    in_segment: dict[str, BoolArray] = {}
    fired: dict[str, BoolArray] = {}
    for column, item in zip(by_item, catalog, strict=True):
        for segment in item.segments:
            if segment not in in_segment:
                in_segment[segment] = profiles.segment == SEGMENTS.index(segment)
            column |= in_segment[segment]
        for trigger in item.triggers:
            if trigger not in fired:
                fired[trigger] = TRIGGERS[trigger](inputs, profiles)
            column |= fired[trigger]
    return by_item.T


def recommendation_counts(
    inputs: Inputs,
    profiles: Profiles,
    catalog: Sequence[Recommendation] = CATALOG,
    *,
    excluded: tuple[IndexArray, IndexArray] | None = None,
) -> IndexArray:
    """How many catalog items each row is eligible for, less the ``excluded`` (row, item)
    pairs (recommendations the user dismissed or completed)."""
    eligible = eligibility(inputs, profiles, catalog)
    counts = np.asarray(np.count_nonzero(eligible, axis=1), dtype=np.int64)
    if excluded is not None and len(excluded[0]):
        rows, items = excluded
        np.subtract.at(counts, rows, eligible[rows, items].astype(np.int64))
    return counts


def _check_rows(inputs: Inputs, profiles: Profiles, catalog: Sequence[Recommendation]) -> None:
    """The checks of :func:`_matches`: rows line up, catalog ids are unique."""
    if len(profiles) != len(inputs):
        raise ValueError(f"inputs have {len(inputs)} rows but profiles have {len(profiles)}")
    ids = [item.id for item in catalog]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"catalog ids must be unique; {duplicate!r} repeats")


def ranked_indices(
    inputs: Inputs,
    profiles: Profiles,
    *,
    excluded: BoolArray | None = None,
    limit: int = 5,
    catalog: Sequence[Recommendation] = CATALOG,
) -> IndexArray:
    """The ranking of every row at once: catalog indices, shape (rows, limit), -1 padded.

    ``excluded`` is an optional (rows, items) mask of dismissed or completed items. Row ``i``
    equals :func:`rank_recommendations` for row ``i`` (see the module docstring for the order).
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    trigger_rank, theme = _matches(inputs, profiles, catalog)
    n, m = trigger_rank.shape
    none = len(TRIGGERS)
    # Match kind: 0..none-1 = triggered (by severity), none = theme item, none + 1 = not shown.
    kind = np.where(trigger_rank < none, trigger_rank, np.where(theme, none, none + 1))
    if excluded is not None:
        if excluded.shape != (n, m):
            raise ValueError(f"excluded must have shape {(n, m)}, got {excluded.shape}")
        kind = np.where(excluded, none + 1, kind)
    # Keys are unique within a row (ids are unique), so the order is total.
    keys = kind * m + _static_order(catalog)
    order = np.argsort(keys, axis=1, kind="stable")[:, :limit]
    shown = np.take_along_axis(kind, order, axis=1) <= none
    return np.where(shown, order, np.int64(-1)).astype(np.int64)


def rank_recommendations(
    inputs: Inputs,
    profiles: Profiles,
    row: int,
    *,
    excluded: Collection[str] = (),
    limit: int = 5,
    catalog: Sequence[Recommendation] = CATALOG,
) -> list[RankedRecommendation]:
    """Up to ``limit`` recommendations for ``row``, best first, skipping ``excluded`` ids.

    Triggered items come first, by the severity of their most severe firing trigger (the order
    of :data:`TRIGGERS`), then the segment's theme items; within each group larger ``priority``
    first, ties by ``id``. Ids in ``excluded`` that are not in the catalog are ignored (an item
    may have been retired since the user dismissed it).
    """
    one_input = _take(inputs, row)
    one_profile = _take(profiles, row)
    skip = np.array([[item.id in excluded for item in catalog]], dtype=np.bool_)
    order = ranked_indices(one_input, one_profile, excluded=skip, limit=limit, catalog=catalog)[0]
    trigger_rank, _ = _matches(one_input, one_profile, catalog)
    names = tuple(TRIGGERS)
    segment_reason = f"segment:{SEGMENTS[int(one_profile.segment[0])]}"
    ranked: list[RankedRecommendation] = []
    for index in order[order >= 0]:
        severity = int(trigger_rank[0, index])
        reason = names[severity] if severity < len(names) else segment_reason
        ranked.append(RankedRecommendation(catalog[index], len(ranked) + 1, reason))
    return ranked


def _matches(
    inputs: Inputs, profiles: Profiles, catalog: Sequence[Recommendation]
) -> tuple[IndexArray, BoolArray]:
    """Per (row, item): the severity index of the item's most severe firing trigger
    (``len(TRIGGERS)`` when none fires), and whether it is a theme item of the row's segment.
    """
    n = len(inputs)
    if len(profiles) != n:
        raise ValueError(f"inputs have {n} rows but profiles have {len(profiles)}")
    ids = [item.id for item in catalog]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"catalog ids must be unique; {duplicate!r} repeats")
    m = len(catalog)
    trigger_rank = np.full((n, m), len(TRIGGERS), dtype=np.int64)
    # Most severe last, so that it overwrites the milder triggers of the same item.
    for severity, (name, trigger) in reversed(list(enumerate(TRIGGERS.items()))):
        items = np.array([name in item.triggers for item in catalog], dtype=np.bool_)
        if not items.any():
            continue
        fired = trigger(inputs, profiles)
        trigger_rank[np.outer(fired, items)] = severity
    themes = np.array(
        [[segment in item.segments for item in catalog] for segment in SEGMENTS],
        dtype=np.bool_,
    ).reshape(len(SEGMENTS), m)
    theme = themes[profiles.segment.astype(np.intp)]
    return trigger_rank, theme


def _static_order(catalog: Sequence[Recommendation]) -> IndexArray:
    """Each item's position when sorted by priority (descending), then id."""
    order = sorted(range(len(catalog)), key=lambda j: (-catalog[j].priority, catalog[j].id))
    position = np.empty(len(catalog), dtype=np.int64)
    position[order] = np.arange(len(catalog), dtype=np.int64)
    return position


_Columns = TypeVar("_Columns", Inputs, Profiles)


def _take(columns: _Columns, row: int) -> _Columns:
    """Row ``row`` of columns as a one-row instance (negative rows count from the end)."""
    index = np.array([row], dtype=np.intp)
    return replace(columns, **{f.name: getattr(columns, f.name)[index] for f in fields(columns)})
