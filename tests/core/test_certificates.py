"""Certified radii: closed forms, rounding down, validity rules, and soundness against computable worst cases."""

import decimal
import itertools
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from wsmooth_ext.core import noises, reference
from wsmooth_ext.core.certificates import certified_radius, resolve_certificate

CASES = [(name, cert) for name, family in noises.FAMILIES.items() for cert in family.certificates]


def noise_scale(noise, sigma):
    return noises.get(noise).scale(sigma)
PS = [0.5000001, 0.51, 0.6, 0.75, 0.9, 0.99, 0.999, 0.99999]


def _exact_rho1(p: float, sigma: float, noise: str, cert: str) -> decimal.Decimal:
    """ρ₁ in 50-digit decimal arithmetic from the table of docs/math.md (independent of the float64 code)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        d_p, d_s = decimal.Decimal(p), decimal.Decimal(sigma)
        lam = d_s * decimal.Decimal(3).sqrt() if noise.endswith("uniform") else d_s / decimal.Decimal(2).sqrt()
        if cert == "uniform":
            return 2 * lam * (d_p - decimal.Decimal("0.5"))
        if cert == "paper":
            return lam / 2 * (d_p / (1 - d_p)).ln()
        return -lam * (2 * (1 - d_p)).ln()


def _exact_radius(p, sigma, noise, cert, ground) -> decimal.Decimal:
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        rho1 = _exact_rho1(p, sigma, noise, cert)
        if noise.startswith("pixel-"):
            return rho1 / 2
        return rho1 / decimal.Decimal(2).sqrt() if ground == "l2" else rho1


@pytest.mark.parametrize("noise,cert", CASES)
@pytest.mark.parametrize("ground", ["l2", "l1"])
def test_closed_form_and_rounded_down(noise, cert, ground):
    for p, sigma in itertools.product(PS, [0.005, 0.01, 0.5, 3.0]):
        got = certified_radius(p, sigma, noise, cert, ground)
        exact = _exact_radius(p, sigma, noise, cert, ground)
        assert isinstance(got, float)
        assert decimal.Decimal(got) <= exact, (p, sigma)  # never rounded up
        assert got == pytest.approx(float(exact), rel=1e-13)


def test_table_values_by_hand():
    # σ = 0.01, p = 0.99: λ = 0.01/√2; paper ρ₁ = (λ/2)·ln 99, tight ρ₁ = −λ·ln 0.02
    lam = 0.01 / math.sqrt(2)
    assert certified_radius(0.99, 0.01, "flow-laplace", "paper") == pytest.approx(lam / 2 * math.log(99) / math.sqrt(2))
    assert certified_radius(0.99, 0.01, "flow-laplace", "tight", "l1") == pytest.approx(-lam * math.log(0.02))
    assert certified_radius(0.99, 0.01, "pixel-laplace", "paper") == pytest.approx(lam / 4 * math.log(99))
    assert certified_radius(0.99, 0.01, "pixel-laplace", "tight", "l1") == pytest.approx(-lam / 2 * math.log(0.02))
    assert certified_radius(0.9, 0.01, "flow-uniform", "uniform", "l1") == pytest.approx(2 * math.sqrt(3) * 0.01 * 0.4)
    # the paper's Eq. 20 directly: p = e^{4ρ₂/σ}(1 − p)  <=>  ρ₂ = (σ/4)·ln(p/(1−p))
    assert certified_radius(0.99, 0.01, "flow-laplace", "paper") == pytest.approx(0.01 / 4 * math.log(99))
    # Eq. 21: p = e^{4√2ρ₂/σ}(1 − p)
    assert certified_radius(0.99, 0.01, "pixel-laplace", "paper") == pytest.approx(
        0.01 / (4 * math.sqrt(2)) * math.log(99))


def test_noise_scale_matches_the_noise_op():
    for sigma in (0.01, 0.3):
        assert noise_scale("flow-laplace", sigma) == reference.noise_scale("laplace", sigma)
        assert noise_scale("pixel-laplace", sigma) == reference.noise_scale("laplace", sigma)
        assert noise_scale("flow-uniform", sigma) == reference.noise_scale("uniform", sigma)
        assert noise_scale("pixel-uniform", sigma) == reference.noise_scale("uniform", sigma)


def test_tight_beats_paper_by_the_expected_factor():
    for p in np.linspace(0.5001, 0.99999, 200):
        assert certified_radius(p, 0.01, "flow-laplace", "tight") >= certified_radius(p, 0.01, "flow-laplace", "paper")
    for p in (0.97, 0.99, 0.995, 0.999):  # "1.6–1.8× larger at the p values seen in practice"
        ratio = certified_radius(p, 0.01, "flow-laplace", "tight") / certified_radius(p, 0.01, "flow-laplace", "paper")
        assert 1.6 <= ratio <= 1.81


def test_no_certificate_at_or_below_half_and_infinite_at_one():
    for noise, cert in CASES:
        for p in (0.0, 0.3, 0.5):
            assert certified_radius(p, 0.1, noise, cert) == 0.0
    assert certified_radius(1.0, 0.1, "flow-laplace", "tight") == math.inf
    assert certified_radius(1.0, 0.1, "flow-laplace", "paper") == math.inf
    # the uniform certificate saturates at λ/√2 (L2 ground): the noise is bounded
    assert certified_radius(1.0, 0.1, "flow-uniform", None) == pytest.approx(math.sqrt(3) * 0.1 / math.sqrt(2))


def test_defaults_and_invalid_pairs():
    defaults = {name: family.default_certificate for name, family in noises.FAMILIES.items()}
    assert defaults == {"flow-laplace": "tight", "flow-uniform": "uniform", "pixel-laplace": "tight",
                        "pixel-uniform": "uniform"}
    assert resolve_certificate("flow-laplace", None) == "tight"
    assert certified_radius(0.9, 0.1, "flow-laplace", None) == certified_radius(0.9, 0.1, "flow-laplace", "tight")
    for noise, cert in [("flow-uniform", "tight"), ("flow-uniform", "paper"), ("flow-laplace", "uniform"),
                        ("pixel-laplace", "uniform"), ("pixel-uniform", "tight")]:
        with pytest.raises(ValueError, match="not valid for noise"):
            certified_radius(0.9, 0.1, noise, cert)


@pytest.mark.parametrize("kwargs,name", [
    (dict(p_lower=1.5), "p_lower"), (dict(p_lower=-0.1), "p_lower"), (dict(p_lower=float("nan")), "p_lower"),
    (dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"), (dict(sigma=float("inf")), "sigma"),
    (dict(noise="gaussian"), "noise"), (dict(certificate="best"), "certificate"), (dict(ground="linf"), "ground")])
def test_bad_inputs_name_the_argument(kwargs, name):
    args = dict(p_lower=0.9, sigma=0.1, noise="flow-laplace", certificate="tight", ground="l2")
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name} must"):
        certified_radius(**args)


# ------------------------------------------------------------------------------------------------------
# Soundness in the noise space. The smoothed classifier at an attacked image x' = Δ(x, δ) sees the noise
# shifted by δ, with ‖δ‖₁ = ρ₁ (L1 W1 radius). For base classifiers whose smoothed probability under a shift
# is available in closed form, the worst case over ‖δ‖₁ = ρ₁ is computed directly and must stay >= 1/2.

def _dist(noise, sigma):
    lam = noise_scale(noise, sigma)
    return stats.uniform(-lam, 2 * lam) if noise.endswith("uniform") else stats.laplace(0, lam)


@pytest.mark.parametrize("noise,cert", CASES)
def test_half_space_on_one_coordinate_is_the_tight_worst_case(noise, cert):
    # h(z) = 1[z1 <= t]: p = F(t); shifting z1 by ρ gives F(t − ρ). The tight/uniform certificate is
    # exactly the ρ with F(t − ρ) = 1/2; the paper's is smaller.
    sigma = 0.2
    dist = _dist(noise, sigma)
    for t in np.linspace(0.01, 0.3, 12):
        p = dist.cdf(t)
        if p >= 1.0:
            continue
        rho1 = certified_radius(p, sigma, noise, cert, "l1") * (2 if noise.startswith("pixel-") else 1)
        assert dist.cdf(t - rho1) >= 0.5 - 1e-12
        if cert != "paper":
            assert dist.cdf(t - rho1) == pytest.approx(0.5, abs=1e-9)
            assert dist.cdf(t - rho1 * (1 + 1e-4) - 1e-9) < 0.5  # not certifiable any further


@pytest.mark.parametrize("noise,cert", CASES)
def test_two_coordinate_classifiers_worst_case_by_grid_search(noise, cert):
    # h(z) = 1[z1 <= t1 and z2 <= t2]: p(δ) = F(t1 − δ1)·F(t2 − δ2); the worst shift with ‖δ‖₁ = ρ has
    # δ ≥ 0 and is found by a fine grid over δ1 ∈ [0, ρ].
    # h(z) = 1[z1 + z2 <= t] (the corner pixel of a flow sample depends on two edges): p(δ) = G(t − δ1 − δ2),
    # G the CDF of a sum of two noises, computed by numerical convolution; worst case G(t − ρ).
    sigma = 0.2
    dist = _dist(noise, sigma)
    lo, hi = dist.support()
    lo, hi = max(lo, -5), min(hi, 5)

    def sum_cdf(u):
        return integrate.quad(lambda z: dist.pdf(z) * dist.cdf(u - z), lo, hi, limit=200, points=[0.0])[0]

    for t1, t2 in [(0.3, 0.3), (0.5, 0.2), (0.25, 0.6)]:
        p = dist.cdf(t1) * dist.cdf(t2)
        rho1 = certified_radius(p, sigma, noise, cert, "l1") * (2 if noise.startswith("pixel-") else 1)
        d1 = np.linspace(0.0, rho1, 2001)
        worst = (dist.cdf(t1 - d1) * dist.cdf(t2 - (rho1 - d1))).min()
        assert worst >= 0.5 - 1e-9, (t1, t2, p, worst)
    for t in (0.2, 0.35):
        p = sum_cdf(t)
        rho1 = certified_radius(p, sigma, noise, cert, "l1") * (2 if noise.startswith("pixel-") else 1)
        assert sum_cdf(t - rho1) >= 0.5 - 1e-7


def test_sum_of_two_laplace_cdf_closed_form():
    # used by test_smooth: P(Z1 + Z2 <= u) = 1 − (1/4)e^{−u/λ}(2 + u/λ) for u >= 0, Z_i ~ Laplace(0, λ)
    lam = 0.3
    dist = stats.laplace(0, lam)
    for u in (0.0, 0.1, 0.7):
        numeric = integrate.quad(lambda z: dist.pdf(z) * dist.cdf(u - z), -10, 10, points=[0.0])[0]
        assert numeric == pytest.approx(1 - 0.25 * math.exp(-u / lam) * (2 + u / lam), abs=1e-9)


# ------------------------------------------------------------------------------------------------------
# The ground-metric conversions of the table, checked with exact transport LPs on small grids:
# W1_L1 <= √2·W1_L2 (so W1_L2 <= ρ₁/√2 implies W1_L1 <= ρ₁), and ‖a − b‖₁ <= 2·W1 for either metric.

def _w1(a, b, coords, ground):
    n = len(a)
    diff = coords[:, None, :] - coords[None, :, :]
    cost = np.abs(diff).sum(-1) if ground == "l1" else np.sqrt((diff ** 2).sum(-1))
    a_eq = np.zeros((2 * n, n * n))
    for i in range(n):
        a_eq[i, i * n:(i + 1) * n] = 1
        a_eq[n + i, i::n] = 1
    res = optimize.linprog(cost.ravel(), A_eq=a_eq, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    assert res.status == 0
    return res.fun


def test_ground_metric_conversions_by_linear_programming():
    rng = np.random.default_rng(7)
    coords = np.array([(i, j) for i in range(3) for j in range(3)], dtype=float)
    for _ in range(25):
        a, b = rng.random(9) ** 3, rng.random(9) ** 3
        a, b = a / a.sum(), b / b.sum()
        w_l1, w_l2 = _w1(a, b, coords, "l1"), _w1(a, b, coords, "l2")
        assert w_l1 <= math.sqrt(2) * w_l2 + 1e-9
        assert np.abs(a - b).sum() <= 2 * min(w_l1, w_l2) + 1e-9
    # diagonal move: the √2 factor is attained, so ρ₁/√2 is the right (not over-cautious) L2 conversion
    a, b = np.eye(9)[0], np.eye(9)[4]
    assert _w1(a, b, coords, "l1") == pytest.approx(math.sqrt(2) * _w1(a, b, coords, "l2"))
