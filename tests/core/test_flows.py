"""wsmooth_ext.core.flows: L1-ball projection (against an independent bisection and the projection's variational
inequality), applying flow plans (against an edge-by-edge loop), their gradient, and feasible steps."""

import numpy as np
import pytest
import torch

from wsmooth_ext.core.flows import (apply_flow, flow_gradient, flow_l1_norm, nonnegative_step, project_l1_ball,
                               zero_flow)
from wsmooth_ext.core.reference import divergence


def _bisection_projection(v: np.ndarray, r: float) -> np.ndarray:
    """Brute force: θ by bisection on ‖max(|v| − θ, 0)‖₁ = r, in float64 (not the sort-based algorithm)."""
    if np.abs(v).sum() <= r:
        return v.copy()
    lo, hi = 0.0, float(np.abs(v).max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.clip(np.abs(v) - mid, 0, None).sum() > r:
            lo = mid
        else:
            hi = mid
    return np.sign(v) * np.clip(np.abs(v) - hi, 0, None)


@pytest.mark.parametrize("dim", [1, 2, 7, 50])
def test_projection_matches_bisection_and_is_optimal(dim):
    gen = torch.Generator().manual_seed(dim)
    v = torch.randn(64, dim, generator=gen, dtype=torch.float64) * torch.rand(64, 1, generator=gen, dtype=torch.float64) * 3
    radius = torch.rand(64, generator=gen, dtype=torch.float64) * 2
    w = project_l1_ball(v, radius)
    for i in range(64):
        expected = _bisection_projection(v[i].numpy(), float(radius[i]))
        np.testing.assert_allclose(w[i].numpy(), expected, atol=1e-9)
        # variational inequality of the projection onto a convex set: <v − w, z − w> <= 0 for all z in it
        z = torch.randn(200, dim, generator=gen, dtype=torch.float64)
        z = z / z.abs().sum(1, keepdim=True) * radius[i] * torch.rand(200, 1, generator=gen, dtype=torch.float64)
        assert float(((z - w[i]) @ (v[i] - w[i])).max()) <= 1e-9
    assert bool((w.abs().sum(1) <= radius).all())


def test_projection_keeps_inside_rows_and_is_exactly_within_the_ball():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(300, 2 * 27 * 28, generator=gen) * 1e-3
    norms = v.abs().sum(1, dtype=torch.float64)
    radius = torch.where(torch.arange(300) % 2 == 0, norms * 2, norms * 0.3)  # half inside, half outside
    w = project_l1_ball(v, radius)
    torch.testing.assert_close(w[::2], v[::2], rtol=0, atol=0)
    assert bool((w.abs().sum(1, dtype=torch.float64) <= radius).all())  # summed exactly, float32 rows
    assert bool((w[1::2].abs().sum(1, dtype=torch.float64) >= radius[1::2] * (1 - 1e-5)).all())  # on the sphere
    assert bool((w * v >= 0).all())  # signs are kept (or zeroed)
    assert float(project_l1_ball(v[:3], 0.0).abs().max()) == 0.0
    assert project_l1_ball(v[:2].view(2, 6, 9, 28), 0.01).shape == (2, 6, 9, 28)
    for bad in (-1.0, float("nan"), torch.ones(5)):
        with pytest.raises(ValueError, match="radius"):
            project_l1_ball(v[:3], bad)


def _apply_flow_loop(x, fv, fh):
    """Brute force: move the mass of every edge, one at a time (mass-normalized flows times the mass)."""
    out = x.clone()
    b, c, h, w = x.shape
    for n in range(b):
        s = float(x[n].sum())
        for ch in range(c):
            for i in range(h - 1):
                for j in range(w):
                    out[n, ch, i, j] -= s * fv[n, ch, i, j]
                    out[n, ch, i + 1, j] += s * fv[n, ch, i, j]
            for i in range(h):
                for j in range(w - 1):
                    out[n, ch, i, j] -= s * fh[n, ch, i, j]
                    out[n, ch, i, j + 1] += s * fh[n, ch, i, j]
    return out


def test_apply_flow_moves_mass_along_the_edges_and_preserves_it():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 4, 5, generator=gen, dtype=torch.float64)
    fv = torch.randn(3, 2, 3, 5, generator=gen, dtype=torch.float64) * 0.01
    fh = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64) * 0.01
    moved = apply_flow(x, fv, fh)
    torch.testing.assert_close(moved, _apply_flow_loop(x, fv, fh))
    torch.testing.assert_close(moved.sum((2, 3)), x.sum((2, 3)))  # per channel
    torch.testing.assert_close(flow_l1_norm(fv, fh), fv.abs().sum((1, 2, 3)) + fh.abs().sum((1, 2, 3)))
    with pytest.raises(ValueError, match="flows must be"):
        apply_flow(x, fh, fv)


def test_flow_gradient_is_the_autograd_gradient():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 5, 4, generator=gen, dtype=torch.float64)
    fv, fh = (t.requires_grad_() for t in zero_flow(x))
    weights = torch.randn(2, 1, 5, 4, generator=gen, dtype=torch.float64)
    moved = apply_flow(x, fv, fh)
    (moved.tanh() * weights).sum().backward()
    gx = (1 - x.tanh() ** 2) * weights  # gradient with respect to x' at δ = 0
    gv, gh = flow_gradient(x, gx)
    torch.testing.assert_close(gv, fv.grad)
    torch.testing.assert_close(gh, fh.grad)


def test_nonnegative_step_is_always_feasible():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(64, 1, 6, 6, generator=gen)
    x = torch.where(torch.rand(x.shape, generator=gen) < 0.5, torch.zeros_like(x), x)  # many empty pixels
    radius = torch.rand(64, generator=gen, dtype=torch.float64) * 0.2
    fv, fh = zero_flow(x)
    moved_any = False
    for _ in range(5):
        tv = fv + torch.randn(fv.shape, generator=gen) * 0.05
        th = fh + torch.randn(fh.shape, generator=gen) * 0.05
        fv, fh = nonnegative_step(x, fv, fh, tv, th, radius)
        moved = apply_flow(x, fv, fh)
        assert bool((moved >= 0).all())
        assert bool((flow_l1_norm(fv, fh) <= radius).all())
        moved_any |= bool((flow_l1_norm(fv, fh) > 0).any())
    assert moved_any


def test_nonnegative_step_takes_a_feasible_target_in_full():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(4, 1, 5, 5, generator=gen, dtype=torch.float64) + 0.5  # every pixel holds plenty
    fv, fh = zero_flow(x)
    tv = torch.randn(fv.shape, generator=gen, dtype=torch.float64) * 1e-3
    th = torch.randn(fh.shape, generator=gen, dtype=torch.float64) * 1e-3
    nv, nh = nonnegative_step(x, fv, fh, tv, th, 1.0)
    torch.testing.assert_close((nv, nh), (tv, th))
    # a target outside the ball: stops on the segment, at the sphere
    radius = flow_l1_norm(tv, th) / 2
    nv, nh = nonnegative_step(x, fv, fh, tv, th, radius)
    assert bool((flow_l1_norm(nv, nh) <= radius).all()) and bool((flow_l1_norm(nv, nh) > 0.999 * radius).all())
    torch.testing.assert_close(nv / tv, (nv / tv)[:, :1, :1, :1].expand_as(tv))  # the same fraction per image


def test_nonnegative_step_keeps_empty_pixels_from_giving_mass():
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    x[0, 0, 0, 0] = 1.0  # all mass at the top left
    fv, fh = zero_flow(x)
    # the target moves mass out of the empty bottom-left pixel and into it from the top left
    tv = torch.tensor([[[[0.3, 0.0]]]], dtype=torch.float64)  # top left -> bottom left
    th = torch.tensor([[[[0.0], [0.2]]]], dtype=torch.float64)  # bottom left -> bottom right
    nv, nh = nonnegative_step(x, fv, fh, tv, th, 10.0)
    torch.testing.assert_close(nv, tv)  # the full-mass pixel may give 0.3
    assert float(nh.abs().max()) == 0.0  # the empty pixel gives nothing in this step
    assert bool((apply_flow(x, nv, nh) >= 0).all())
    assert float(divergence(nv, nh).sum()) == pytest.approx(0.0)
