"""Scoring profiles with the active models, in the recompute's vectorised pass (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from treevu.services.models.features import TARGETS, Target
from treevu.services.models.training import LinearRisk

Floats = npt.NDArray[np.float64]
#: Reasons kept per risk: the features that raise it most.
TOP_REASONS = 3
#: Risks are kept (and compared) to this many decimals: a profile is rewritten when its risk
#: moves by a percentage point, not by every last digit — at the turn of a month, when last
#: month's snapshot changes for everyone, 4 decimals rewrote 79% of the profiles.
RISK_DECIMALS = 2


@dataclass(frozen=True)
class Risks:
    """Per target: the probability (``RISK_DECIMALS`` decimals) of every row, and a function
    giving the comma-separated top reasons of chosen rows (built only for rows written)."""

    probability: dict[Target, Floats]
    contributions: dict[Target, Floats]
    features: list[str]

    def reasons(self, target: Target, rows: npt.NDArray[np.intp]) -> list[str | None]:
        if target not in self.contributions:
            return [None] * len(rows)
        c = self.contributions[target][rows]
        top = np.argsort(-c, axis=1, kind="stable")[:, :TOP_REASONS]
        raising = np.take_along_axis(c, top, axis=1) > 0
        # One code per combination, so that each distinct text is built once.
        code = np.zeros(len(rows), dtype=np.int64)
        for j in range(top.shape[1]):
            code = code * 32 + np.where(raising[:, j], top[:, j] + 1, 0)
        unique, inverse = np.unique(code, return_inverse=True)
        texts = []
        for value in unique.tolist():
            names = []
            while value:
                value, k = divmod(value, 32)
                if k:
                    names.append(self.features[k - 1])
            texts.append(",".join(reversed(names)) or None)
        return [texts[i] for i in inverse.reshape(-1)]


def score_risks(models: dict[Target, LinearRisk], x: Floats) -> Risks:
    probability: dict[Target, Floats] = {}
    contributions: dict[Target, Floats] = {}
    features: list[str] = []
    for target in TARGETS:
        model = models.get(target)
        if model is None:
            continue
        probability[target] = np.round(model.probability(x), RISK_DECIMALS)
        contributions[target] = model.contributions(x)
        features = model.features
    return Risks(probability, contributions, features)
