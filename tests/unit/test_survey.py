"""Tests for the CFPB Financial Well-Being Scale scoring (treevu.segmentation.survey).

Expected values are transcribed independently of the module: the scale-score
columns from ``ResultsView.SCORING`` in cfpb/consumerfinance.gov
``cfgov/wellbeing/views.py`` (the module copies ``cfgov/wellbeing/forms.py``), and
the per-answer points from the radio-button values in
``cfgov/wellbeing/jinja2/wellbeing/home.html``.
"""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from treevu.segmentation.survey import (
    AGE_BANDS,
    AGREEMENT_CHOICES,
    FREQUENCY_CHOICES,
    ITEMS,
    MODES,
    SurveyError,
    SurveyItem,
    SurveyScore,
    score_survey,
)

# --- Independent reference data -------------------------------------------------

# Official columns (raw 0..40 -> scale score), keyed (mode, ageBand).
OFFICIAL_COLUMNS: dict[tuple[str, str], list[int]] = {
    ("self", "18-61"): [
        14, 19, 22, 25, 27, 29, 31, 32, 34, 35, 37, 38, 40, 41, 42,
        44, 45, 46, 47, 49, 50, 51, 52, 54, 55, 56, 58, 59, 60, 62,
        63, 65, 66, 68, 69, 71, 73, 75, 78, 81, 86,
    ],
    ("self", "62+"): [
        14, 20, 24, 26, 29, 31, 33, 35, 36, 38, 39, 41, 42, 44, 45,
        46, 48, 49, 50, 52, 53, 54, 56, 57, 58, 60, 61, 63, 64, 66,
        67, 69, 71, 73, 75, 77, 79, 82, 84, 88, 95,
    ],
    ("read", "18-61"): [
        16, 21, 24, 27, 29, 31, 33, 34, 36, 38, 39, 40, 42, 43, 44,
        45, 47, 48, 49, 50, 52, 53, 54, 55, 57, 58, 59, 60, 62, 63,
        65, 66, 68, 70, 71, 73, 76, 78, 81, 85, 91,
    ],
    ("read", "62+"): [
        18, 23, 26, 28, 30, 32, 33, 35, 36, 38, 39, 40, 41, 43, 44,
        45, 46, 47, 48, 49, 50, 52, 53, 54, 55, 56, 57, 58, 60, 61,
        62, 64, 65, 67, 68, 70, 72, 75, 77, 81, 87,
    ],
}  # fmt: skip

# Points per answer for positively worded items (1, 2, 4, 8) ...
POSITIVE_POINTS = {
    "completely": 4, "very_well": 3, "somewhat": 2, "very_little": 1, "not_at_all": 0,
    "always": 4, "often": 3, "sometimes": 2, "rarely": 1, "never": 0,
}  # fmt: skip
# ... and for the reverse-scored, negatively worded items (3, 5, 6, 7, 9, 10).
REVERSED_POINTS = {answer: 4 - points for answer, points in POSITIVE_POINTS.items()}
REVERSED_ITEMS = {3, 5, 6, 7, 9, 10}
AGREEMENT_ITEMS = {1, 2, 3, 4, 5, 6}

EXPECTED_TEXTS = [
    "I could handle a major unexpected expense",
    "I am securing my financial future",
    "Because of my money situation, I feel like I will never have the things I want in life",
    "I can enjoy life because of the way I'm managing my money",
    "I am just getting by financially",
    "I am concerned that the money I have or will save won't last",
    "Giving a gift for a wedding, birthday or other occasion would put a strain on my "
    "finances for the month",
    "I have money left over at the end of the month",
    "I am behind with my finances",
    "My finances control my life",
]


def points(item_number: int, answer: str) -> int:
    table = REVERSED_POINTS if item_number in REVERSED_ITEMS else POSITIVE_POINTS
    return table[answer]


def answer_worth(item_number: int, value: int) -> str:
    choices = (
        ("completely", "very_well", "somewhat", "very_little", "not_at_all")
        if item_number in AGREEMENT_ITEMS
        else ("always", "often", "sometimes", "rarely", "never")
    )
    matches = [answer for answer in choices if points(item_number, answer) == value]
    assert len(matches) == 1
    return matches[0]


def answers_for_raw(raw: int) -> list[str]:
    """Ten valid answers whose total response value is ``raw``."""
    answers = []
    remaining = raw
    for number in range(1, 11):
        value = min(4, remaining)
        remaining -= value
        answers.append(answer_worth(number, value))
    assert remaining == 0
    return answers


BEST = [answer_worth(number, 4) for number in range(1, 11)]
WORST = [answer_worth(number, 0) for number in range(1, 11)]


# --- Items and constants ---------------------------------------------------------


def test_choice_and_option_constants() -> None:
    assert AGREEMENT_CHOICES == ("completely", "very_well", "somewhat", "very_little", "not_at_all")
    assert FREQUENCY_CHOICES == ("always", "often", "sometimes", "rarely", "never")
    assert AGE_BANDS == ("18-61", "62+")
    assert MODES == ("self", "read")


def test_items_match_cfpb_questionnaire() -> None:
    assert [item.number for item in ITEMS] == list(range(1, 11))
    assert [item.text for item in ITEMS] == EXPECTED_TEXTS
    for item in ITEMS:
        assert isinstance(item, SurveyItem)
        expected_choices = (
            AGREEMENT_CHOICES if item.number in AGREEMENT_ITEMS else FREQUENCY_CHOICES
        )
        assert item.choices == expected_choices
        assert item.reverse_scored == (item.number in REVERSED_ITEMS)


def test_items_are_immutable() -> None:
    item: Any = ITEMS[0]
    with pytest.raises(FrozenInstanceError):
        item.text = "changed"


# --- Item scoring ----------------------------------------------------------------


@pytest.mark.parametrize("item_number", range(1, 11))
def test_each_answer_is_worth_its_cfpb_points(item_number: int) -> None:
    item = ITEMS[item_number - 1]
    for answer in item.choices:
        submission = list(WORST)  # every other item contributes 0
        submission[item_number - 1] = answer
        result = score_survey(submission, "18-61", "self")
        assert result.raw == points(item_number, answer), (item_number, answer)


def test_reverse_scoring_direction() -> None:
    # Item 1 (positive): "completely" is best. Item 3 (reversed): "not_at_all" is best.
    base = list(WORST)
    base[0] = "completely"
    assert score_survey(base, "18-61", "self").raw == 4
    base = list(WORST)
    base[2] = "completely"
    assert score_survey(base, "18-61", "self").raw == 0
    base[2] = "not_at_all"
    assert score_survey(base, "18-61", "self").raw == 4
    # Item 8 (positive frequency) vs item 9 (reversed frequency).
    base = list(WORST)
    base[7] = "always"
    base[8] = "never"
    assert score_survey(base, "18-61", "self").raw == 8


def test_all_best_answers() -> None:
    assert BEST == [
        "completely", "completely", "not_at_all", "completely", "not_at_all",
        "not_at_all", "never", "always", "never", "never",
    ]  # fmt: skip
    assert score_survey(BEST, "18-61", "self") == SurveyScore(raw=40, scale_score=86)
    assert score_survey(BEST, "62+", "self") == SurveyScore(raw=40, scale_score=95)
    assert score_survey(BEST, "18-61", "read") == SurveyScore(raw=40, scale_score=91)
    assert score_survey(BEST, "62+", "read") == SurveyScore(raw=40, scale_score=87)


def test_all_worst_answers() -> None:
    assert WORST == [
        "not_at_all", "not_at_all", "completely", "not_at_all", "completely",
        "completely", "always", "never", "always", "always",
    ]  # fmt: skip
    assert score_survey(WORST, "18-61", "self") == SurveyScore(raw=0, scale_score=14)
    assert score_survey(WORST, "62+", "self") == SurveyScore(raw=0, scale_score=14)
    assert score_survey(WORST, "18-61", "read") == SurveyScore(raw=0, scale_score=16)
    assert score_survey(WORST, "62+", "read") == SurveyScore(raw=0, scale_score=18)


def test_all_middle_answers() -> None:
    middle = ["somewhat"] * 6 + ["sometimes"] * 4
    assert score_survey(middle, "18-61", "self") == SurveyScore(raw=20, scale_score=50)


# --- Raw -> scale conversion -----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "age_band", "raw", "scale_score"),
    [
        ("self", "18-61", 0, 14),
        ("self", "18-61", 10, 37),
        ("self", "18-61", 20, 50),
        ("self", "18-61", 30, 63),
        ("self", "18-61", 40, 86),
        ("self", "62+", 0, 14),
        ("self", "62+", 10, 39),
        ("self", "62+", 20, 53),
        ("self", "62+", 30, 67),
        ("self", "62+", 40, 95),
        ("read", "18-61", 0, 16),
        ("read", "18-61", 10, 39),
        ("read", "18-61", 20, 52),
        ("read", "18-61", 30, 65),
        ("read", "18-61", 40, 91),
        ("read", "62+", 0, 18),
        ("read", "62+", 10, 39),
        ("read", "62+", 20, 50),
        ("read", "62+", 30, 62),
        ("read", "62+", 40, 87),
    ],
)
def test_known_points_from_official_table(
    mode: str, age_band: str, raw: int, scale_score: int
) -> None:
    result = score_survey(answers_for_raw(raw), age_band, mode)
    assert result == SurveyScore(raw=raw, scale_score=scale_score)


@pytest.mark.parametrize(("mode", "age_band"), sorted(OFFICIAL_COLUMNS))
def test_every_raw_value_matches_official_column(mode: str, age_band: str) -> None:
    column = OFFICIAL_COLUMNS[(mode, age_band)]
    assert len(column) == 41
    for raw in range(41):
        result = score_survey(answers_for_raw(raw), age_band, mode)
        assert result == SurveyScore(raw=raw, scale_score=column[raw]), (mode, age_band, raw)


def test_accepts_tuple_and_result_is_immutable() -> None:
    result: Any = score_survey(tuple(BEST), "62+", "self")
    assert result == SurveyScore(raw=40, scale_score=95)
    with pytest.raises(FrozenInstanceError):
        result.raw = 0


# --- Rejections ------------------------------------------------------------------


def reject(answers: Any, age_band: Any = "18-61", mode: Any = "self") -> SurveyError:
    with pytest.raises(SurveyError) as info:
        score_survey(answers, age_band, mode)
    return info.value


def test_survey_error_is_value_error_naming_field() -> None:
    error = reject(BEST[:9])
    assert isinstance(error, ValueError)
    assert error.field == "answers"
    assert str(error).startswith("answers: ")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - round-trip of our own object
    assert isinstance(copy, SurveyError)
    assert (copy.field, str(copy)) == (error.field, str(error))


def test_rejects_nine_answers() -> None:
    error = reject(BEST[:9])
    assert error.field == "answers"
    assert "10" in str(error) and "9" in str(error)


def test_rejects_eleven_answers() -> None:
    error = reject([*BEST, "never"])
    assert error.field == "answers"
    assert "11" in str(error)


def test_rejects_empty_submission() -> None:
    assert reject([]).field == "answers"


@pytest.mark.parametrize("answers", [None, "completely", 40, {"1": "completely"}])
def test_rejects_answers_that_are_not_a_list(answers: Any) -> None:
    assert reject(answers).field == "answers"


def test_rejects_unknown_answer_word() -> None:
    answers = list(BEST)
    answers[3] = "totally"
    error = reject(answers)
    assert error.field == "answers[3]"
    assert "'totally'" in str(error)
    assert "item 4" in str(error)


@pytest.mark.parametrize("word", ["Completely", " completely", "very well", ""])
def test_answer_words_are_exact(word: str) -> None:
    answers = list(BEST)
    answers[0] = word
    assert reject(answers).field == "answers[0]"


def test_rejects_frequency_answer_for_agreement_item() -> None:
    answers = list(BEST)
    answers[0] = "always"
    error = reject(answers)
    assert error.field == "answers[0]"
    assert "item 1" in str(error)
    assert "completely" in str(error)


def test_rejects_agreement_answer_for_frequency_item() -> None:
    answers = list(BEST)
    answers[9] = "completely"
    error = reject(answers)
    assert error.field == "answers[9]"
    assert "item 10" in str(error)
    assert "never" in str(error)


@pytest.mark.parametrize(("index", "value"), [(0, None), (2, 4), (6, True), (9, ["never"])])
def test_rejects_non_string_answers(index: int, value: Any) -> None:
    answers: list[Any] = list(BEST)
    answers[index] = value
    error = reject(answers)
    assert error.field == f"answers[{index}]"
    assert "string" in str(error)


def test_first_bad_answer_is_reported() -> None:
    answers: list[Any] = list(BEST)
    answers[4] = "nope"
    answers[7] = None
    assert reject(answers).field == "answers[4]"


@pytest.mark.parametrize("age_band", ["18-64", "62-plus", "62", "", None, 62])
def test_rejects_bad_age_band(age_band: Any) -> None:
    error = reject(BEST, age_band=age_band)
    assert error.field == "ageBand"
    assert str(error).startswith("ageBand: ")


@pytest.mark.parametrize("mode", ["read-self", "read-to-me", "Self", "", None, 1])
def test_rejects_bad_mode(mode: Any) -> None:
    error = reject(BEST, mode=mode)
    assert error.field == "mode"
    assert str(error).startswith("mode: ")
