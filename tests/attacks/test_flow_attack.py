"""Flow-space attack: L1-ball projection against bisection, exact pixel bounds, Lemma 1 checked by the exact
LP, and a known minimal perturbation of a linear classifier."""

import pytest
import torch
from torch import nn

from wsmooth_ext.attacks.flow import FlowAttack, flow_image, limit_change, project_l1_ball
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.core.wasserstein import wasserstein_distance

from test_attack import CentreOfMass, _blobs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_l1_projection_against_bisection():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(5, 40, generator=gen, dtype=torch.float64)
    radius = torch.tensor([0.5, 2.0, 10.0, 100.0, 1e-3], dtype=torch.float64)
    got = project_l1_ball(v, radius)
    for b in range(5):
        if float(v[b].abs().sum()) <= radius[b]:
            assert torch.equal(got[b], v[b])
            continue
        lo, hi = 0.0, float(v[b].abs().max())
        for _ in range(200):  # Σ max(|v| − θ, 0) = radius, decreasing in θ
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float((v[b].abs() - mid).clamp_min(0).sum()) > radius[b] else (lo, mid)
        want = torch.sign(v[b]) * (v[b].abs() - hi).clamp_min(0)
        torch.testing.assert_close(got[b], want, atol=1e-12, rtol=0)
        assert float(got[b].abs().sum()) == pytest.approx(float(radius[b]), rel=1e-12)


def test_limit_change_keeps_pixels_in_bounds():
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(3, 2, 5, 6, generator=gen, dtype=torch.float64) > 0.5).double()  # only 0s and 1s
    mass = x.sum(dim=(1, 2, 3))
    n = 2 * (4 * 6 + 5 * 5)
    change = torch.randn(3, n, generator=gen, dtype=torch.float64) / mass[:, None]
    raw = flow_image(x, change)
    assert float(raw.min()) < -0.1 and float(raw.max()) > 1.1  # unlimited, the change leaves the box
    limited = limit_change(x, change, mass)
    img = flow_image(x, limited)
    assert float(img.min()) >= -1e-15 and float(img.max()) <= 1 + 1e-15
    assert bool((limited.abs() <= change.abs()).all()) and bool((limited * change >= 0).all())
    assert float(limited.abs().sum()) > 0  # not everything was cut


def test_lemma1_bound_by_exact_lp_on_digits(linear_digits):
    x, y = load_dataset("mnist5k", "test")
    x, y = x[:6], y[:6]
    eps = 0.5
    result = FlowAttack(linear_digits, eps=eps, max_iter=30).attack(x, y)
    adv = result.adversarial
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    torch.testing.assert_close(adv.double().sum(dim=(1, 2, 3)), x.double().sum(dim=(1, 2, 3)), rtol=1e-6, atol=0)
    assert bool(result.success.any())
    assert torch.equal(result.success, linear_digits(adv).argmax(1) != y)
    for b in range(6):
        w1_l1 = wasserstein_distance(x[b], adv[b], ground="l1")
        w1_l2 = wasserstein_distance(x[b], adv[b], ground="l2")
        assert w1_l2 <= w1_l1 + 1e-9 and w1_l1 <= eps * (1 + 1e-5), (b, w1_l1)


def test_known_minimal_perturbation_of_a_linear_classifier():
    """Centre of mass m(x') = Σ j·x'/s is linear in the flow: m(x + s·div δ) = m(x) + Σ δ_h, so the smallest
    ‖δ‖₁ that crosses the threshold is exactly the margin t − m(x)."""
    model = CentreOfMass(threshold=3.0)
    x = _blobs()
    y = torch.zeros(6, dtype=torch.int64)
    margin = (3.0 - model.centre(x)).double()
    below = FlowAttack(model, eps=0.97 * float(margin.min()), max_iter=30).attack(x, y)
    assert not bool(below.success.any())
    for b in range(6):
        eps = 1.05 * float(margin[b])
        result = FlowAttack(model, eps=eps, max_iter=60).attack(x[b:b + 1], y[b:b + 1])
        assert bool(result.success.all()), b
        w1_l1 = wasserstein_distance(x[b], result.adversarial[0], ground="l1")
        assert float(margin[b]) - 1e-6 <= w1_l1 <= eps * (1 + 1e-6)


def test_growing_radius_records_the_first_flip():
    model = CentreOfMass(threshold=3.0)
    x = _blobs()
    y = torch.zeros(6, dtype=torch.int64)
    margin = (3.0 - model.centre(x)).double()
    result = FlowAttack(model, eps=0.2, eps_factor=1.3, eps_every=15, max_iter=150).attack(x, y)
    assert bool(result.success.all())
    for b in range(6):
        growths = (int(result.iterations[b]) - 1) // 15
        assert float(result.radius[b]) == pytest.approx(0.2 * 1.3 ** growths, rel=1e-5)
        assert float(result.radius[b]) >= float(margin[b])  # no flow below the margin can flip it
        w1_l1 = wasserstein_distance(x[b], result.adversarial[b], ground="l1")
        assert float(margin[b]) - 1e-6 <= w1_l1 <= float(result.radius[b]) * (1 + 1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="step"):
        FlowAttack(nn.Identity(), step=0)
    with pytest.raises(ValueError, match="eps_factor"):
        FlowAttack(nn.Identity(), eps_factor=0.5)
    with pytest.raises(ValueError, match="2x2"):
        FlowAttack(nn.Flatten(), max_iter=1).attack(torch.ones(1, 1, 1, 4) * 0.5, torch.zeros(1, dtype=torch.int64))
