"""Sound binomial statistics for the smoothed classifier (Cohen et al. 2019), in float64.

* :func:`clopper_pearson_lower` — the one-sided (1 − α) lower confidence bound on a binomial proportion,
  used by ``certify`` to bound the top class's probability from below.
* :func:`binomial_test_pvalue` — the two-sided exact binomial test at 1/2, used by ``predict`` to decide
  whether the top class really beats the runner-up.
* :func:`min_samples_to_certify` / :func:`min_samples_to_predict` — the smallest n that can ever give a
  certificate / a non-abstaining prediction at level α; below them the procedures abstain on every input.
* :func:`sequential_looks` / :func:`decide_look` — the group-sequential variant of ``predict`` (a few looks at
  prefixes of the n votes, α split over the looks by Bonferroni), used where most calls are clear-cut: the
  success test of attacks on smoothed classifiers.
"""

from __future__ import annotations

import functools
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
    return _binomial_test_pvalue(k, n)


@functools.lru_cache(maxsize=1 << 16)
def _binomial_test_pvalue(k: int, n: int) -> float:
    # cached: SciPy takes ~0.5 ms a call, and an attack's success tests see the same few (k, n) again and again
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


# The group-sequential predict (``sequential_looks``): early looks after these fractions of the n votes, which
# together spend this share of α; the last look, at all n votes, spends the rest.
SEQUENTIAL_FRACTIONS = (0.01, 0.03, 0.1, 0.3)
SEQUENTIAL_EARLY_ALPHA_SHARE = 1e-3
SEQUENTIAL_MIN_LOOK = 100  # fewer votes are cheap to count in full, and too few for a test at ~α/4000


def sequential_looks(n: int, alpha: float, fractions=SEQUENTIAL_FRACTIONS,
                     early_share: float = SEQUENTIAL_EARLY_ALPHA_SHARE,
                     min_look: int = SEQUENTIAL_MIN_LOOK) -> list[tuple[int, float]]:
    """The looks [(m_1, α_1), …, (m_K = n, α_K)] of the group-sequential ``predict`` test.

    At look k the votes on samples [0, m_k) are tested as ``predict`` tests all n (top two counts, two-sided
    binomial test) at level α_k; the first look whose p-value is ≤ α_k returns its top class, and if none
    does (the last included) the answer is ABSTAIN. Looks are prefixes of one sample range, so votes counted
    for one look are reused by the next and an undecided image costs n votes, as the fixed test.

    Soundness (Bonferroni over a fixed set of looks): each look on its own returns a class other than the
    smoothed classifier's with probability ≤ α_k (Cohen et al. 2019, Prop. 1), so the probability that *any*
    look does — hence that the procedure does, whenever it stops — is ≤ Σ α_k = α, however the looks depend on
    each other. (Repeating the test at level α after every chunk would not be sound: under a tie it returns a
    class far more often than α.)

    Early looks at ⌈f·n⌉ for f in ``fractions`` with at least ``min_look`` votes (and enough to ever decide at
    their level, :func:`min_samples_to_predict`) share ``early_share``·α equally; the last look gets
    (1 − early_share)·α, so it differs from the fixed test only when that test's p-value lies in
    ((1 − early_share)·α, α]. Without early looks (n ≤ 330 by default) the single look is (n, α): the fixed
    test exactly.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    alpha = _check_alpha(alpha)
    if not 0.0 < early_share < 1.0:
        raise ValueError(f"early_share must be in (0, 1), got {early_share!r}")
    sizes = sorted(m for m in {math.ceil(f * n) for f in fractions if 0.0 < f < 1.0} if min_look <= m < n)
    if sizes:
        each = alpha * early_share / len(sizes)
        sizes = [m for m in sizes if m >= min_samples_to_predict(each)]
    if not sizes:
        return [(int(n), alpha)]
    each = alpha * early_share / len(sizes)
    return [(m, each) for m in sizes] + [(int(n), alpha - alpha * early_share)]


def decide_look(counts, alpha: float) -> tuple[int, bool]:
    """One look of ``predict`` on class counts (a sequence of ints): (top class, whether the two-sided test of
    the top two counts at level ``alpha`` decides, i.e. the class may be returned). Equal top counts have
    p-value 1 and never decide, so which of them is called the top does not matter."""
    counts = [int(c) for c in counts]
    top = max(range(len(counts)), key=lambda c: (counts[c], -c))
    n_a = counts[top]
    n_b = max((c for i, c in enumerate(counts) if i != top), default=0)
    if n_a + n_b == 0:
        return top, False
    return top, binomial_test_pvalue(n_a, n_a + n_b) <= alpha
