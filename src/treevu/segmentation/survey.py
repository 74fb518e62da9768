"""CFPB Financial Well-Being Scale (standard 10-item version): items and scoring.

Pure module: no I/O and no imports from the rest of treevu.

Scoring follows the CFPB's two-step process:

1. Each answer is worth 0-4 points. For the positively worded items (1, 2, 4, 8)
   "Completely"/"Always" is worth 4 and "Not at all"/"Never" 0. The negatively
   worded items (3, 5, 6, 7, 9, 10) are reverse-scored: "Completely"/"Always" is
   worth 0 and "Not at all"/"Never" 4. The ten values add up to the raw "total
   response value" (0-40).
2. The raw total is converted to the 0-100 financial well-being scale score with
   the CFPB's published table, using the column for the respondent's age group
   (18-61 or 62+) and how the questionnaire was administered (read and answered
   by the respondent, or read to the respondent by someone who recorded the
   answers).

The CFPB requires every question to be answered, so an incomplete survey is
rejected with a ``SurveyError`` and never scored.

Sources (GitHub repository ``cfpb/consumerfinance.gov``, the code behind
consumerfinance.gov; the calculator lives at /consumer-tools/financial-well-being/):

* Raw score -> scale score table: ``cfgov/wellbeing/forms.py``,
  ``ResultsForm.clean()``, ``SCORING`` (commit
  158169aeae475dd84823eb8a13079c846ac039f1). Identical copies of the table are in
  ``cfgov/wellbeing/forms.py`` at commit 94ca3ca1a12487f4c4a1af244b27175a7cdf4f73
  and in ``cfgov/wellbeing/views.py`` (``ResultsView.SCORING``) at commit
  15e8075612f2bdc2c1e163e18d886a87b4ff674b. The table's keys ``read-self`` /
  ``read-to-me`` and ``18-61`` / ``62-plus`` map to ``MODES`` ("self", "read")
  and ``AGE_BANDS`` ("18-61", "62+") here.
* Item wording, answer choices and per-answer point values (which items are
  reverse-scored): ``cfgov/wellbeing/jinja2/wellbeing/home.html`` (commit
  00a3ad6ee9ed1c5efc67b92179ab6a1942da1f44), cross-checked against
  ``ResultsView.QUESTIONS`` in ``cfgov/wellbeing/views.py``. That page writes the
  apostrophes in items 4 and 6 as typographic quotes; here they are ASCII.

The CFPB presents items 1-6 under the prompt "How well does this statement
describe you or your situation?" (answers read "This statement describes me ...")
and items 7-10 under "How often does this statement apply to you?" (answers read
"This statement applies to me ...").

The CFPB also publishes an abbreviated 5-item version with its own scoring
table. That table was not found in the CFPB's public code, so the 5-item version
is deliberately not offered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AGE_BANDS",
    "AGREEMENT_CHOICES",
    "FREQUENCY_CHOICES",
    "ITEMS",
    "MODES",
    "SurveyError",
    "SurveyItem",
    "SurveyScore",
    "score_survey",
]

AGREEMENT_CHOICES: tuple[str, ...] = (
    "completely",
    "very_well",
    "somewhat",
    "very_little",
    "not_at_all",
)
"""Answers for items 1-6 (how well the statement describes the respondent)."""

FREQUENCY_CHOICES: tuple[str, ...] = ("always", "often", "sometimes", "rarely", "never")
"""Answers for items 7-10 (how often the statement applies to the respondent)."""

AGE_BANDS: tuple[str, ...] = ("18-61", "62+")
MODES: tuple[str, ...] = ("self", "read")
"""``self``: respondent read and answered the questions; ``read``: the questions
were read to the respondent and someone else recorded the answers."""


@dataclass(frozen=True)
class SurveyItem:
    """One CFPB statement. ``choices`` are listed as the CFPB lists them."""

    number: int
    text: str
    choices: tuple[str, ...]
    reverse_scored: bool


ITEMS: tuple[SurveyItem, ...] = (
    SurveyItem(1, "I could handle a major unexpected expense", AGREEMENT_CHOICES, False),
    SurveyItem(2, "I am securing my financial future", AGREEMENT_CHOICES, False),
    SurveyItem(
        3,
        "Because of my money situation, I feel like I will never have the things I want in life",
        AGREEMENT_CHOICES,
        True,
    ),
    SurveyItem(
        4,
        "I can enjoy life because of the way I'm managing my money",
        AGREEMENT_CHOICES,
        False,
    ),
    SurveyItem(5, "I am just getting by financially", AGREEMENT_CHOICES, True),
    SurveyItem(
        6,
        "I am concerned that the money I have or will save won't last",
        AGREEMENT_CHOICES,
        True,
    ),
    SurveyItem(
        7,
        "Giving a gift for a wedding, birthday or other occasion would put a strain "
        "on my finances for the month",
        FREQUENCY_CHOICES,
        True,
    ),
    SurveyItem(8, "I have money left over at the end of the month", FREQUENCY_CHOICES, False),
    SurveyItem(9, "I am behind with my finances", FREQUENCY_CHOICES, True),
    SurveyItem(10, "My finances control my life", FREQUENCY_CHOICES, True),
)

_MAX_ITEM_VALUE = 4

# Raw total response value (list index, 0-40) -> scale score, per (mode, age band).
# Copied verbatim from SCORING in cfpb/consumerfinance.gov cfgov/wellbeing/forms.py.
# fmt: off
_SCALE_SCORES: dict[tuple[str, str], tuple[int, ...]] = {
    # "read-self" / "18-61"
    ("self", "18-61"): (
        14, 19, 22, 25, 27, 29, 31, 32, 34, 35, 37, 38, 40, 41, 42,
        44, 45, 46, 47, 49, 50, 51, 52, 54, 55, 56, 58, 59, 60, 62,
        63, 65, 66, 68, 69, 71, 73, 75, 78, 81, 86,
    ),
    # "read-self" / "62-plus"
    ("self", "62+"): (
        14, 20, 24, 26, 29, 31, 33, 35, 36, 38, 39, 41, 42, 44, 45,
        46, 48, 49, 50, 52, 53, 54, 56, 57, 58, 60, 61, 63, 64, 66,
        67, 69, 71, 73, 75, 77, 79, 82, 84, 88, 95,
    ),
    # "read-to-me" / "18-61"
    ("read", "18-61"): (
        16, 21, 24, 27, 29, 31, 33, 34, 36, 38, 39, 40, 42, 43, 44,
        45, 47, 48, 49, 50, 52, 53, 54, 55, 57, 58, 59, 60, 62, 63,
        65, 66, 68, 70, 71, 73, 76, 78, 81, 85, 91,
    ),
    # "read-to-me" / "62-plus"
    ("read", "62+"): (
        18, 23, 26, 28, 30, 32, 33, 35, 36, 38, 39, 40, 41, 43, 44,
        45, 46, 47, 48, 49, 50, 52, 53, 54, 55, 56, 57, 58, 60, 61,
        62, 64, 65, 67, 68, 70, 72, 75, 77, 81, 87,
    ),
}
# fmt: on


class SurveyError(ValueError):
    """A submission that cannot be scored. ``field`` names the offending input.

    ``field`` is ``"answers"`` (not a list, or not exactly 10 answers),
    ``"answers[i]"`` (0-based index of a bad answer; item number ``i + 1``),
    ``"ageBand"`` or ``"mode"``. ``str(error)`` starts with the field name.
    """

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail

    def __reduce__(self) -> tuple[type[SurveyError], tuple[str, str]]:
        return (type(self), (self.field, self.detail))


@dataclass(frozen=True)
class SurveyScore:
    """``raw`` is the total response value (0-40); ``scale_score`` the CFPB score."""

    raw: int
    scale_score: int


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _item_value(index: int, item: SurveyItem, answer: object) -> int:
    field = f"answers[{index}]"
    allowed = ", ".join(item.choices)
    if not isinstance(answer, str):
        raise SurveyError(
            field,
            f"item {item.number} answer must be a string, one of {allowed}; "
            f"got {type(answer).__name__} {_describe(answer)}",
        )
    if answer not in item.choices:
        other = FREQUENCY_CHOICES if item.choices == AGREEMENT_CHOICES else AGREEMENT_CHOICES
        if answer in other:
            problem = f"{answer!r} does not answer item {item.number} ({item.text!r})"
        else:
            problem = f"{_describe(answer)} is not a recognised answer for item {item.number}"
        raise SurveyError(field, f"{problem}; expected one of {allowed}")
    position = item.choices.index(answer)
    return position if item.reverse_scored else _MAX_ITEM_VALUE - position


def score_survey(answers: Sequence[str], age_band: str, mode: str) -> SurveyScore:
    """Score a complete 10-item CFPB Financial Well-Being Scale submission.

    ``answers`` holds one answer per item in the CFPB's item order (see ``ITEMS``):
    items 1-6 take ``AGREEMENT_CHOICES``, items 7-10 ``FREQUENCY_CHOICES``.
    ``age_band`` is one of ``AGE_BANDS`` and ``mode`` one of ``MODES``.

    Raises ``SurveyError`` (a ``ValueError``) naming the offending field if the
    submission is incomplete or invalid; nothing is scored in that case.
    """
    if isinstance(answers, str | bytes) or not isinstance(answers, Sequence):
        raise SurveyError(
            "answers",
            f"must be a list of {len(ITEMS)} answers in CFPB item order; "
            f"got {type(answers).__name__}",
        )
    if len(answers) != len(ITEMS):
        raise SurveyError(
            "answers",
            f"must contain exactly {len(ITEMS)} answers, one per CFPB item in order "
            f"(an incomplete survey cannot be scored); got {len(answers)}",
        )
    raw = sum(
        _item_value(index, item, answer)
        for index, (item, answer) in enumerate(zip(ITEMS, answers, strict=True))
    )
    if not isinstance(age_band, str) or age_band not in AGE_BANDS:
        raise SurveyError(
            "ageBand", f"must be one of {', '.join(AGE_BANDS)}; got {_describe(age_band)}"
        )
    if not isinstance(mode, str) or mode not in MODES:
        raise SurveyError("mode", f"must be one of {', '.join(MODES)}; got {_describe(mode)}")
    return SurveyScore(raw=raw, scale_score=_SCALE_SCORES[(mode, age_band)][raw])
