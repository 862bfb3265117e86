"""Clopper–Pearson bound and binomial test: closed forms, inversion checks, coverage (exact and simulated)."""

import math

import numpy as np
import pytest
from scipy import stats

from wsmooth_ext.core.statistics import (binomial_test_pvalue, clopper_pearson_lower, min_samples_to_certify,
                                    min_samples_to_predict)


def test_all_successes_closed_form():
    # k = n: P(Bin(n, p) >= n) = p^n = alpha  =>  p_L = alpha^(1/n)
    for n in (1, 5, 100, 10_000):
        for alpha in (0.001, 0.05, 0.5):
            assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1.0 / n), rel=1e-12)


def test_zero_successes_is_zero():
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0


@pytest.mark.parametrize("k,n,alpha", [(1, 10, 0.05), (7, 10, 0.05), (9000, 10_000, 0.05), (50, 60, 0.001)])
def test_lower_bound_inverts_the_binomial_tail(k, n, alpha):
    # Independent definition: the lower bound is the p with P(X >= k | p) = alpha.
    p_lower = clopper_pearson_lower(k, n, alpha)
    assert isinstance(p_lower, float)
    assert stats.binom.sf(k - 1, n, p_lower) == pytest.approx(alpha, rel=1e-8)
    assert 0.0 < p_lower < k / n


def test_exact_coverage_is_at_most_alpha():
    # P(p_L(K) > p) summed exactly over the binomial law of K, for many p: never above alpha.
    alpha, n = 0.05, 60
    bounds = np.array([clopper_pearson_lower(k, n, alpha) for k in range(n + 1)])
    for p in np.linspace(0.01, 0.99, 99):
        pmf = stats.binom.pmf(np.arange(n + 1), n, p)
        assert pmf[bounds > p].sum() <= alpha + 1e-12


def test_simulated_exceedance_rate_at_most_alpha():
    # Simulated binomial counts (no model): the rate at which p_L exceeds the true p must be <= alpha.
    # The test allows alpha + 4 standard errors of a rate-alpha estimate from M draws: if the true
    # exceedance rate were exactly alpha, a false failure has probability < 4e-5 (one-sided normal tail).
    rng = np.random.default_rng(12345)
    alpha, n, draws = 0.05, 200, 20_000
    bounds = np.array([clopper_pearson_lower(k, n, alpha) for k in range(n + 1)])
    for p in (0.3, 0.5, 0.77, 0.95, 0.995):
        k = rng.binomial(n, p, size=draws)
        rate = float((bounds[k] > p).mean())
        assert rate <= alpha + 4.0 * math.sqrt(alpha * (1 - alpha) / draws), (p, rate)


def test_binomial_pvalue_closed_forms():
    # Two-sided test at 1/2: k = n gives 2 * 2^-n; the symmetric middle gives 1.
    for n in (1, 5, 20):
        assert binomial_test_pvalue(n, n) == pytest.approx(min(1.0, 2.0 * 0.5 ** n), rel=1e-12)
        assert binomial_test_pvalue(0, n) == pytest.approx(min(1.0, 2.0 * 0.5 ** n), rel=1e-12)
    assert binomial_test_pvalue(5, 10) == pytest.approx(1.0)
    # brute force: sum of the probabilities of outcomes no more likely than k (n = 30, k = 21)
    n, k = 30, 21
    pmf = np.array([math.comb(n, j) for j in range(n + 1)], dtype=float) / 2.0 ** n
    assert binomial_test_pvalue(k, n) == pytest.approx(pmf[pmf <= pmf[k] * (1 + 1e-7)].sum(), rel=1e-9)


def test_min_samples_thresholds():
    for alpha in (0.05, 0.01, 0.001, 0.25, 0.5):
        n = min_samples_to_certify(alpha)
        assert clopper_pearson_lower(n, n, alpha) > 0.5
        assert n == 1 or clopper_pearson_lower(n - 1, n - 1, alpha) <= 0.5
        m = min_samples_to_predict(alpha)
        assert binomial_test_pvalue(m, m) <= alpha
        assert m == 1 or binomial_test_pvalue(m - 1, m - 1) > alpha
    assert min_samples_to_certify(0.05) == 5  # 0.05^(1/5) = 0.549 > 1/2 >= 0.05^(1/4) = 0.473
    assert min_samples_to_predict(0.05) == 6  # 2 * 2^-6 = 0.031 <= 0.05 < 2 * 2^-5


@pytest.mark.parametrize("args,name", [((1, 0, 0.05), "n"), ((-1, 5, 0.05), "k"), ((6, 5, 0.05), "k"),
                                       ((1.5, 5, 0.05), "k"), ((1, 5, 0.0), "alpha"), ((1, 5, 1.0), "alpha"),
                                       ((1, 5, float("nan")), "alpha"), ((1, 5, -0.1), "alpha")])
def test_bad_inputs_name_the_argument(args, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        clopper_pearson_lower(*args)


def test_bad_pvalue_inputs():
    with pytest.raises(ValueError, match="^n must"):
        binomial_test_pvalue(0, 0)
    with pytest.raises(ValueError, match="^k must"):
        binomial_test_pvalue(3, 2)
