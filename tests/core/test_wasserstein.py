"""Exact W1 (wsmooth_ext.core.wasserstein) against closed forms and independent LPs / assignments."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import wasserstein_distance as scipy_w1_1d

import wsmooth_ext
from wsmooth_ext.core.wasserstein import min_cost_flow, transport_lp, wasserstein_distance


def cdf_distance(a, b):
    """Paper Eq. 13-14: W1 on a line = L1 distance between the cumulative sums (unit pixel spacing)."""
    a, b = np.asarray(a, float) / np.sum(a), np.asarray(b, float) / np.sum(b)
    return float(np.abs(np.cumsum(a) - np.cumsum(b)).sum())


@pytest.mark.parametrize("ground", ["l1", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_line_closed_form(ground, seed):
    rng = np.random.default_rng(seed)
    a = rng.random(11) * (rng.random(11) < 0.6)
    b = rng.random(11)
    a[3] += 0.1  # never all-zero
    expected = cdf_distance(a, b)
    # A 1×W image and its W×1 transpose are both lines.
    assert wasserstein_distance(a[None, :], b[None, :], ground=ground) == pytest.approx(expected, abs=1e-7)
    assert wasserstein_distance(a[:, None], b[:, None], ground=ground) == pytest.approx(expected, abs=1e-7)
    # and SciPy's 1-D implementation is a third, independent opinion
    pos = np.arange(11.0)
    assert expected == pytest.approx(scipy_w1_1d(pos, pos, a, b), abs=1e-12)


@pytest.mark.parametrize("offset", [(0, 3), (2, 0), (3, 4), (-2, 1), (1, -4)])
def test_single_mass_move(offset):
    x = torch.zeros(1, 9, 9)
    x[0, 4, 4] = 0.7
    y = torch.zeros(1, 9, 9)
    y[0, 4 + offset[0], 4 + offset[1]] = 0.3  # a different total mass: normalization removes it
    di, dj = abs(offset[0]), abs(offset[1])
    assert wasserstein_distance(x, y, ground="l2") == pytest.approx(math.hypot(di, dj), abs=1e-7)
    assert wasserstein_distance(x, y, ground="l1") == pytest.approx(di + dj, abs=1e-7)
    inside = max(di, dj) <= 2
    windowed = wasserstein_distance(x, y, ground="l2", window=5)
    assert windowed == (pytest.approx(math.hypot(di, dj), abs=1e-7) if inside else math.inf)


def test_split_mass_against_assignment():
    """Uniform mass on n points each: W1 is an assignment problem (linear_sum_assignment, brute force LP-free)."""
    rng = np.random.default_rng(5)
    h = w = 9
    pix = rng.choice(h * w, size=12, replace=False)
    src, dst = pix[:6], pix[6:]
    x, y = np.zeros(h * w), np.zeros(h * w)
    x[src], y[dst] = 1.0, 1.0
    si, sj = np.divmod(src, w)
    ti, tj = np.divmod(dst, w)
    for ground, cost in (("l2", np.hypot(si[:, None] - ti, sj[:, None] - tj)),
                         ("l1", np.abs(si[:, None] - ti) + np.abs(sj[:, None] - tj))):
        r, c = linear_sum_assignment(cost)
        expected = cost[r, c].sum() / 6
        got = wasserstein_distance(x.reshape(h, w), y.reshape(h, w), ground=ground)
        assert got == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lemma1_flow_equals_transport(seed):
    """Lemma 1: W1 with L1 ground = min ‖δ‖₁ over flows; and div(δ*) maps X onto Y."""
    rng = np.random.default_rng(seed)
    x = rng.random((2, 5, 6)) * (rng.random((2, 5, 6)) < 0.7)
    y = rng.random((2, 5, 6))
    # channels need equal mass shares: give y the shares of x
    x[:, 0, 0] += 0.05
    y *= (x.sum(axis=(1, 2)) / y.sum(axis=(1, 2)))[:, None, None]
    X, Y = x / x.sum(), y / y.sum()
    value, flow_v, flow_h = min_cost_flow(x, y)
    transport = sum(transport_lp(X[c], Y[c], ground="l1") for c in range(2))
    assert value == pytest.approx(transport, abs=1e-8)
    assert value == pytest.approx(wasserstein_distance(x, y, ground="l1"), abs=1e-12)
    assert float(flow_v.abs().sum() + flow_h.abs().sum()) == pytest.approx(value, abs=1e-8)
    moved = torch.from_numpy(X) + wsmooth_ext.divergence(flow_v, flow_h)
    torch.testing.assert_close(moved, torch.from_numpy(Y), atol=1e-9, rtol=0)
    # l2 ≤ l1 ground distance, and l1 ≤ √2·l2 (norm equivalence in the plane)
    l2 = wasserstein_distance(x, y, ground="l2")
    assert l2 <= value + 1e-9 and value <= math.sqrt(2) * l2 + 1e-9


def test_window_is_upper_bound_and_equal_when_local():
    rng = np.random.default_rng(7)
    x = rng.random((6, 6))
    y = x.copy()
    y[2, 2] += 0.3  # a change that local moves can reach
    full = wasserstein_distance(x, y)
    assert wasserstein_distance(x, y, window=3) >= full - 1e-9
    assert wasserstein_distance(x, y, window=11) == pytest.approx(full, abs=1e-8)


def test_identical_and_scaled_images_are_at_distance_zero():
    x = torch.rand(3, 5, 5)
    assert wasserstein_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert wasserstein_distance(x, 2.5 * x, ground="l1") == pytest.approx(0.0, abs=1e-9)


def test_channel_share_mismatch():
    x = torch.ones(2, 4, 4)
    y = torch.ones(2, 4, 4)
    y[1] *= 2  # channel 1 holds 2/3 of y's mass but 1/2 of x's
    with pytest.raises(ValueError, match="channels"):
        wasserstein_distance(x, y)
    assert wasserstein_distance(x, y, on_mismatch="inf") == math.inf
    assert wasserstein_distance(x, y, on_mismatch="rescale") == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ground="l3"), "ground"), (dict(window=4), "window"), (dict(ground="l1", window=3), "window"),
    (dict(on_mismatch="x"), "on_mismatch"), (dict(mass_tol=-1), "mass_tol")])
def test_bad_arguments(kwargs, match):
    x = torch.rand(4, 4)
    with pytest.raises(ValueError, match=match):
        wasserstein_distance(x, x, **kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="zero mass"):
        wasserstein_distance(torch.zeros(3, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="non-negative"):
        wasserstein_distance(-torch.ones(3, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="same shape"):
        wasserstein_distance(torch.ones(3, 3), torch.ones(3, 4))
    with pytest.raises(ValueError, match="shape"):
        wasserstein_distance(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3))


def test_top_level_export():
    assert wsmooth_ext.wasserstein_distance is wasserstein_distance
