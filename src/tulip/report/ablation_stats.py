"""Statistics of the ablation ladder: spread across seeds and each rung's change with its uncertainty.

Runs of two variants with the same seed share the initial weights of the common towers and the
order of the training data, so a rung's change is measured on seed-paired differences
``after[seed] - before[seed]``. The interval is Student's t interval of their mean, with n - 1
degrees of freedom for n seeds. With one seed there is no interval and no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

HELPED = "helped"
HURT = "hurt"
UNCLEAR = "no clear change"
ONE_SEED = "one seed, no interval"


@dataclass(frozen=True)
class SeedSpread:
    """Mean and spread of one metric over the seeds of one variant."""

    n: int
    mean: float
    std: float | None  # sample standard deviation (n - 1 in the denominator); None for one seed
    minimum: float
    maximum: float


@dataclass(frozen=True)
class StepChange:
    """The change of one metric from one rung of the ladder to the next, over paired seeds."""

    n: int
    mean: float  # mean of after - before
    sem: float | None  # standard error of that mean; None for one seed
    low: float | None  # bounds of the confidence interval of the mean
    high: float | None
    verdict: str  # HELPED, HURT, UNCLEAR or ONE_SEED


def seed_spread(values: Sequence[float]) -> SeedSpread:
    """Summarise one metric over seeds."""
    if not values:
        raise ValueError("seed_spread needs at least one value")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return SeedSpread(n, mean, std, min(values), max(values))


def paired_change(before: Mapping[int, float], after: Mapping[int, float], confidence: float = 0.95) -> StepChange:
    """Return the mean seed-paired difference ``after - before`` with its standard error and t interval.

    Both mappings go from seed to value and must hold the same seeds, so that no run is silently dropped.
    The verdict is HELPED when the interval lies above 0, HURT when it lies below, UNCLEAR otherwise.
    """
    if set(before) != set(after):
        raise ValueError(f"paired seeds differ: before has {sorted(before)}, after has {sorted(after)}; "
                         "every variant needs a result for every seed")
    if not before:
        raise ValueError("paired_change needs at least one seed")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seeds = sorted(before)
    differences = [after[s] - before[s] for s in seeds]
    n = len(differences)
    mean = sum(differences) / n
    if n == 1:
        return StepChange(1, mean, None, None, None, ONE_SEED)
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    sem = std / math.sqrt(n)
    half_width = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    low, high = mean - half_width, mean + half_width
    if low > 0:
        verdict = HELPED
    elif high < 0:
        verdict = HURT
    else:
        verdict = UNCLEAR
    return StepChange(n, mean, sem, low, high, verdict)


def ladder_changes(
    table: Mapping[str, Mapping[str, Mapping[int, float]]], order: Sequence[str], confidence: float = 0.95
) -> list[dict]:
    """Return one row per (rung, metric): the change from the previous variant in ``order`` to the next.

    ``table`` maps metric -> variant -> seed -> value; a metric missing for a variant is skipped for
    the rungs that touch it.
    """
    rows = []
    for before, after in zip(order, order[1:]):
        for metric, by_variant in table.items():
            if before not in by_variant or after not in by_variant:
                continue
            change = paired_change(by_variant[before], by_variant[after], confidence)
            rows.append({"before": before, "after": after, "metric": metric, "change": change})
    return rows
