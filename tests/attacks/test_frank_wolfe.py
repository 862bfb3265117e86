"""Frank–Wolfe attack over local couplings: the window operators, the LMO against an LP, the column capping,
feasibility of the returned examples (exact W1 by LP) and a classifier with a known lower bound."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from wsmooth_ext.attacks.frank_wolfe import (FrankWolfeAttack, cap_columns, column_sums, entropic_lmo,
                                             gather_window, identity_plan, max_step_below_one, plan_cost,
                                             window_cost)
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.core.wasserstein import wasserstein_distance

from test_attack import CentreOfMass, _blobs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_window_operators_by_brute_force():
    gen = torch.Generator().manual_seed(0)
    v = torch.rand(2, 2, 5, 6, generator=gen, dtype=torch.float64)
    k, c = 3, 1
    got = gather_window(v, k)
    for a in range(k):
        for b in range(k):
            for i in range(5):
                for j in range(6):
                    ii, jj = i + a - c, j + b - c
                    want = v[:, :, ii, jj] if 0 <= ii < 5 and 0 <= jj < 6 else torch.zeros(2, 2, dtype=v.dtype)
                    torch.testing.assert_close(got[:, :, a * k + b, i * 6 + j], want)
    plan = torch.rand(2, 2, 9, 30, generator=gen, dtype=torch.float64)
    # column_sums is the adjoint of gather_window
    torch.testing.assert_close((gather_window(v, k) * plan).sum(), (v * column_sums(plan, v.shape)).sum())
    assert window_cost(3, "l1").tolist() == [2, 1, 2, 1, 0, 1, 2, 1, 2]
    assert window_cost(3, "l2")[0] == pytest.approx(math.sqrt(2))


def test_entropic_lmo_against_the_linear_program():
    """Entropic LMO value within γ·Σ x·log(#offsets) of the exact LP optimum, budget met, rows = x."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 4, 4, generator=gen, dtype=torch.float64)
    k = 3
    g = torch.randn(1, 1, 4, 4, generator=gen, dtype=torch.float64)
    scores = gather_window(g, k)
    valid = gather_window(torch.ones(1, 1, 4, 4, dtype=torch.float64), k) > 0.5
    cost = window_cost(k, "l2", dtype=torch.float64)
    budget = torch.tensor([0.3], dtype=torch.float64)
    gamma = 1e-3
    plan, mu, _ = entropic_lmo(x, scores, valid, cost, budget, gamma)
    assert float(plan_cost(plan, cost)) <= 0.3 + 1e-12 and float(mu) > 0  # the budget binds here
    torch.testing.assert_close(plan.sum(dim=2).reshape(1, 1, 4, 4), x)
    assert bool((plan[~valid.expand_as(plan)] == 0).all())
    # the LP: max <G, π> s.t. rows = x, <π, C> <= budget, π >= 0 on valid entries
    vmask = valid[0, 0].numpy()
    n_o, n_i = vmask.shape
    idx = [(o, i) for o in range(n_o) for i in range(n_i) if vmask[o, i]]
    c = -np.array([float(scores[0, 0, o, i]) for o, i in idx])
    a_eq = np.zeros((n_i, len(idx)))
    for col, (o, i) in enumerate(idx):
        a_eq[i, col] = 1
    a_ub = np.array([[float(cost[o]) for o, i in idx]])
    lp = linprog(c, A_ub=a_ub, b_ub=[0.3], A_eq=a_eq, b_eq=x.flatten().numpy(), bounds=(0, None), method="highs")
    best = -lp.fun
    value = float((plan * scores).sum())
    slack = gamma * float(x.sum()) * math.log(k * k)
    assert best - slack - 1e-9 <= value <= best + 1e-9


def test_capacity_rounds_flatten_columns_and_keep_the_guarantees():
    """Digits, gradient of a fixed random direction: without ν the LMO piles mass on a few pixels; the
    Bregman rounds on ν bring the largest column down while rows and the budget still hold."""
    x, _ = load_dataset("mnist5k", "test")
    x = x[:2].double()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    k = 5
    scores = gather_window(g, k)
    scores = scores / scores.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    valid = gather_window(torch.ones(1, 1, 28, 28, dtype=torch.float64), k) > 0.5
    cost = window_cost(k, "l2", dtype=torch.float64)
    budget = 0.3 * x.sum(dim=(1, 2, 3))
    free, _, _ = entropic_lmo(x, scores, valid, cost, budget, 0.03)
    capped, _, nu = entropic_lmo(x, scores, valid, cost, budget, 0.03, capacity=0.999, rounds=30)
    assert bool((nu >= 0).all()) and float(nu.max()) > 0
    before = column_sums(free, x.shape).flatten(1).amax(1)
    after = column_sums(capped, x.shape).flatten(1).amax(1)
    assert bool((before > 1.5).all()) and bool((after < before - 0.3).all()), (before, after)
    torch.testing.assert_close(capped.sum(dim=2), x.reshape(2, 1, -1))
    assert bool((plan_cost(capped, cost) <= budget * (1 + 1e-12)).all())


def test_cap_columns_keeps_rows_and_cost():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 6, 6, generator=gen, dtype=torch.float64) * 0.5 + 0.5
    x[:, :, 2:4, 2:4] = 1.0  # saturated pixels
    k = 5
    valid = gather_window(torch.ones(1, 1, 6, 6, dtype=torch.float64), k) > 0.5
    raw = torch.rand(2, 1, k * k, 36, generator=gen, dtype=torch.float64) * valid
    plan = raw / raw.sum(dim=2, keepdim=True) * x.reshape(2, 1, 1, 36)
    assert float(column_sums(plan, x.shape).max()) > 1  # the test has work to do
    cost = window_cost(k, "l2", dtype=torch.float64)
    capped = cap_columns(plan, x)
    assert bool((capped >= 0).all())
    assert float(column_sums(capped, x.shape).max()) <= 1 + 1e-12
    torch.testing.assert_close(capped.sum(dim=2), x.reshape(2, 1, 36))
    assert bool((plan_cost(capped, cost) <= plan_cost(plan, cost) + 1e-12).all())
    assert bool((capped[~valid.expand_as(capped)] == 0).all())



def _cap_columns_every_round(plan, x, rounds=100):
    """cap_columns as it was before its fixed-point exit: all rounds run unless every column is <= 1."""
    k = math.isqrt(plan.shape[2])
    centre = k * k // 2
    for _ in range(rounds):
        col = column_sums(plan, x.shape)
        if not bool((col > 1).any()):
            return plan
        moved = plan.clone()
        moved[:, :, centre] = 0
        incoming = column_sums(moved, x.shape)
        stay = plan[:, :, centre].reshape(x.shape)
        factor = torch.where(col > 1, ((1 - stay) / incoming.clamp_min(torch.finfo(x.dtype).tiny)).clamp(0, 1),
                             torch.ones_like(col))
        keep = moved * gather_window(factor, k)
        back = (moved - keep).sum(dim=2)
        plan = keep
        plan[:, :, centre] = stay.flatten(2) + back
    tau = max_step_below_one(x, column_sums(plan, x.shape))
    return identity_plan(x, k) + tau.view(-1, 1, 1, 1) * (plan - identity_plan(x, k))


def test_cap_columns_fixed_point_exit_changes_no_bit():
    # digits with LMO-like plans that pile mass onto pixels: the rounds reach a fixed point with columns an ulp
    # over 1, stop there, and return bit for bit what 100 rounds returned
    x, _ = load_dataset("mnist5k", "test")
    x = x[:6].double()
    k = 5
    gen = torch.Generator().manual_seed(4)
    valid = gather_window(torch.ones(1, 1, 28, 28, dtype=torch.float64), k) > 0.5
    raw = torch.rand(6, 1, k * k, 784, generator=gen, dtype=torch.float64).pow(8) * valid
    plan = raw / raw.sum(dim=2, keepdim=True) * x.reshape(6, 1, 1, 784)
    assert float(column_sums(plan, x.shape).max()) > 1
    for rounds in (3, 100):
        ours, reference = cap_columns(plan, x, rounds=rounds), _cap_columns_every_round(plan, x, rounds=rounds)
        assert torch.equal(ours.view(torch.int64), reference.view(torch.int64))

@pytest.mark.parametrize("ground", ["l2", "l1"])
def test_examples_are_feasible_on_digits(linear_digits, ground):
    x, y = load_dataset("mnist5k", "test")
    x, y = x[:6], y[:6]
    eps = 0.5
    attack = FrankWolfeAttack(linear_digits, eps=eps, max_iter=15, ground=ground)
    result = attack.attack(x, y)
    adv = result.adversarial
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1  # exactly, no clipping
    torch.testing.assert_close(adv.double().sum(dim=(1, 2, 3)), x.double().sum(dim=(1, 2, 3)), rtol=1e-6, atol=0)
    assert bool(result.success.any())
    assert torch.equal(result.success, linear_digits(adv).argmax(1) != y)
    for b in range(6):
        if result.iterations[b] > 0:
            assert float(result.radius[b]) == eps
        w1 = wasserstein_distance(x[b], adv[b], ground=ground)
        assert w1 <= eps * (1 + 1e-5), (b, w1)


def test_growing_radius_and_known_lower_bound():
    """Centre-of-mass classifier: no example can flip below the Kantorovich–Rubinstein margin."""
    model = CentreOfMass(threshold=3.0)
    x = _blobs()
    y = torch.zeros(6, dtype=torch.int64)
    margin = (3.0 - model.centre(x)).tolist()
    small = FrankWolfeAttack(model, eps=0.9 * min(margin), kernel_size=7, max_iter=10).attack(x, y)
    assert not bool(small.success.any())
    grow = FrankWolfeAttack(model, eps=0.2, eps_factor=1.3, eps_every=3, kernel_size=7, max_iter=40).attack(x, y)
    assert bool(grow.success.all())
    for b in range(6):
        growths = (int(grow.iterations[b]) - 1) // 3
        assert float(grow.radius[b]) == pytest.approx(0.2 * 1.3 ** growths, rel=1e-5)
        w1 = wasserstein_distance(x[b], grow.adversarial[b])
        assert margin[b] - 1e-6 <= w1 <= float(grow.radius[b]) * (1 + 1e-5)


def test_identity_plan_and_bad_arguments():
    x = torch.rand(1, 1, 4, 4)
    torch.testing.assert_close(column_sums(identity_plan(x, 3), x.shape), x)
    with pytest.raises(ValueError, match="ground"):
        FrankWolfeAttack(nn.Identity(), ground="linf")
    with pytest.raises(ValueError, match="kernel_size"):
        FrankWolfeAttack(nn.Identity(), kernel_size=4)
    with pytest.raises(ValueError, match="gamma"):
        FrankWolfeAttack(nn.Identity(), gamma=0)
    with pytest.raises(ValueError, match="eps must"):
        FrankWolfeAttack(nn.Identity(), eps=-1)
