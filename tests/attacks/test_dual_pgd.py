"""Dual-projection PGD on local couplings: the projection against its defining inequality, constraints of the
returned examples, and real digits."""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from wsmooth_ext.attacks.dual_pgd import DualProjectionPGD, project_budget, project_rows_to_simplex
from wsmooth_ext.attacks.frank_wolfe import gather_window, identity_plan, plan_cost, window_cost
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.core.wasserstein import wasserstein_distance


def test_row_projection_matches_brute_force():
    """Against an independent projection: bisection on the threshold θ of Σ max(v − θ, 0) = r."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, 7, 5, generator=g, dtype=torch.float64)
    rows = torch.rand(2, 3, 1, 5, generator=g, dtype=torch.float64)
    rows[0, 0, 0, 0] = 0.0  # an empty row
    valid = torch.rand(1, 1, 7, 5, generator=g) > 0.3
    valid[:, :, 0] = True
    p = project_rows_to_simplex(v, rows, valid)
    vv = torch.where(valid, v, torch.full_like(v, -1e9))
    lo, hi = vv.amin(2, keepdim=True) - 2, vv.amax(2, keepdim=True) + 1
    for _ in range(200):
        mid = (lo + hi) / 2
        too_much = (vv - mid).clamp_min(0).sum(2, keepdim=True) > rows
        lo, hi = torch.where(too_much, mid, lo), torch.where(too_much, hi, mid)
    expected = (vv - hi).clamp_min(0)
    torch.testing.assert_close(p, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(p.sum(2, keepdim=True), rows)
    assert bool((p[~valid.expand_as(p)] == 0).all())


def test_budget_projection_is_the_euclidean_projection():
    """P(v) is the projection onto the convex set K = {π ≥ 0, rows = x, ⟨π, C⟩ ≤ budget} iff P ∈ K and
    max_{q ∈ K} ⟨v − P, q − P⟩ ≤ 0; that maximum is a linear program, solved here exactly (scipy's HiGHS)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 5, 5, generator=g, dtype=torch.float64)
    k = 3
    cost = window_cost(k, "l2", dtype=torch.float64)
    valid = gather_window(torch.ones(1, 1, 5, 5, dtype=torch.float64), k) > 0.5
    budget = 0.05 * x.sum(dim=(1, 2, 3))
    target = identity_plan(x, k) + 0.3 * torch.randn(2, 1, k * k, 25, generator=g, dtype=torch.float64)
    p = project_budget(target, x, valid, cost, budget)
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.sum(2), x.reshape(2, 1, 25))
    assert bool((plan_cost(p, cost) <= budget * (1 + 1e-12)).all())
    assert bool((plan_cost(p, cost) >= budget * (1 - 1e-6)).all())  # the budget binds for this target
    mask = valid[0, 0].numpy()  # [k², N]
    offsets, pixels = np.nonzero(mask)
    for b in range(2):
        direction = (target - p)[b, 0].numpy()[offsets, pixels]
        rows = np.zeros((25, offsets.size))
        rows[pixels, np.arange(offsets.size)] = 1.0
        lp = linprog(-direction, A_ub=cost.numpy()[offsets][None, :], b_ub=[float(budget[b])], A_eq=rows,
                     b_eq=x[b, 0].reshape(-1).numpy(), bounds=(0, None), method="highs")
        assert lp.status == 0
        gap = -lp.fun - float((direction * p[b, 0].numpy()[offsets, pixels]).sum())
        assert gap <= 1e-7, (b, gap)


def test_examples_are_feasible_on_digits(linear_digits):
    x, y = load_dataset("mnist5k", "test")
    x, y = x[:6], y[:6]
    eps = 0.5
    result = DualProjectionPGD(linear_digits, eps=eps, max_iter=15).attack(x, y)
    adv = result.adversarial
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1  # exactly, no clipping
    torch.testing.assert_close(adv.double().sum(dim=(1, 2, 3)), x.double().sum(dim=(1, 2, 3)), rtol=1e-6, atol=0)
    assert bool(result.success.any())
    assert torch.equal(result.success, linear_digits(adv).argmax(1) != y)
    for b in range(6):
        w1 = wasserstein_distance(x[b], adv[b])
        assert w1 <= eps * (1 + 1e-5), (b, w1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="step"):
        DualProjectionPGD(nn.Identity(), step=0)
    with pytest.raises(ValueError, match="kernel_size"):
        DualProjectionPGD(nn.Identity(), kernel_size=2)
    with pytest.raises(ValueError, match="eps must"):
        DualProjectionPGD(nn.Identity(), eps=0)
