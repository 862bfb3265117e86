"""Sound binomial statistics for the smoothed classifier (Cohen et al. 2019), in float64.

* :func:`clopper_pearson_lower` — the one-sided (1 − α) lower confidence bound on a binomial proportion,
  used by ``certify`` to bound the top class's probability from below.
* :func:`binomial_test_pvalue` — the two-sided exact binomial test at 1/2, used by ``predict`` to decide
  whether the top class really beats the runner-up.
* :func:`min_samples_to_certify` / :func:`min_samples_to_predict` — the smallest n that can ever give a
  certificate / a non-abstaining prediction at level α; below them the procedures abstain on every input.
"""

from __future__ import annotations

import math
import numbers

from scipy import stats


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a number in the open interval (0, 1), got {alpha!r}")
    return float(alpha)


def _check_counts(k, n) -> tuple[int, int]:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in [0, n={n}], got {k!r}")
    return int(k), int(n)


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower bound on p from k successes in n trials.

    The exact bound: the p_L with P(Binomial(n, p_L) ≥ k) = α, i.e. the α-quantile of Beta(k, n − k + 1)
    (0 when k = 0). For every true p, P(bound > p) ≤ α. Returned as a Python float (float64).
    """
    k, n = _check_counts(k, n)
    alpha = _check_alpha(alpha)
    if k == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, k, n - k + 1))


def binomial_test_pvalue(k: int, n: int) -> float:
    """Two-sided p-value of the exact binomial test of k successes in n trials against p = 1/2."""
    k, n = _check_counts(k, n)
    return float(stats.binomtest(k, n, 0.5, alternative="two-sided").pvalue)


def min_samples_to_certify(alpha: float) -> int:
    """Smallest n for which k = n successes give a lower bound above 1/2 (so some input can be certified).

    With k = n the Clopper–Pearson bound is α^(1/n), which exceeds 1/2 iff n > log2(1/α).
    """
    alpha = _check_alpha(alpha)
    n = max(1, math.floor(math.log2(1.0 / alpha)) + 1)
    while clopper_pearson_lower(n, n, alpha) <= 0.5:  # guard against log2 rounding at exact powers of 2
        n += 1
    return n


def min_samples_to_predict(alpha: float) -> int:
    """Smallest n for which n votes for one class (0 for the others) pass the two-sided test at level α.

    The smallest possible p-value with n samples is 2·2^(−n), so n ≥ 1 + log2(1/α).
    """
    alpha = _check_alpha(alpha)
    n = max(1, math.ceil(1.0 + math.log2(1.0 / alpha)) - 1)
    while binomial_test_pvalue(n, n) > alpha:
        n += 1
    return n
