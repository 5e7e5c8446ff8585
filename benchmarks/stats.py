"""Statistics across runs, after Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice").

- IQM: the mean of the middle 50% of all runs' scores pooled over tasks (scipy's trim_mean cutting 25% each end,
  as rliable's `aggregate_iqm`).
- Stratified percentile bootstrap: resample runs with replacement within each task, recompute the statistic on
  the pooled resample, and take the 2.5th and 97.5th percentiles (rliable's `StratifiedBootstrap` with
  `method='percentile'`). Written out here because a sweep with a failed job leaves tasks with different numbers
  of runs, which rliable's runs x tasks matrix cannot hold; tests/test_report.py checks both agree.
With one task, the bootstrap is the ordinary bootstrap of the mean over seeds.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy.stats import trim_mean


class Statistic(Protocol):
    """A statistic over the runs axis: (reps, runs) -> (reps,) with axis=1."""

    def __call__(self, scores: np.ndarray, /, axis: int = ...) -> np.ndarray: ...


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    return trim_mean(scores, proportiontocut=0.25, axis=axis)


def mean(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(scores, axis=axis)


def stratified_bootstrap_ci(
    scores_per_task: list[np.ndarray], statistic: Statistic, reps: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile confidence interval of `statistic` over the pooled runs of all tasks."""
    rng = np.random.default_rng(seed)
    resampled = np.concatenate(
        [np.asarray(x, dtype=float)[rng.integers(0, len(x), size=(reps, len(x)))] for x in scores_per_task], axis=1
    )
    values = statistic(resampled, axis=1)
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def bootstrap_mean_bands(
    curves: np.ndarray, reps: int = 2_000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile bootstrap band of the mean over runs, for curves shaped (runs, points)."""
    rng = np.random.default_rng(seed)
    means = curves[rng.integers(0, len(curves), size=(reps, len(curves)))].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return low, high
