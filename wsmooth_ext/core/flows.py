"""Explicit local flow plans: applying them to images, their L1 norm, projecting them onto an L1 ball, and
taking steps that keep the moved image non-negative (docs/math.md §Local flow plans, §Certified training).

A flow plan of a batch is a pair ``(flow_v, flow_h)`` with ``flow_v`` [B, C, H−1, W] (mass moved down) and
``flow_h`` [B, C, H, W−1] (mass moved right), in mass-normalized units: applied to x it gives
x' = x + s·div(δ) with s = Σx per image, so x' has the mass of x (per channel, too) and W1_L1(x/s, x'/s) ≤ ‖δ‖₁
(Lemma 1). These are the perturbations the Wasserstein certificate covers; ``smoothadv`` training
(:mod:`wsmooth_ext.training.smoothadv`) searches over them.
"""

from __future__ import annotations

import torch

from .reference import divergence, divergence_adjoint

__all__ = ["apply_flow", "flow_gradient", "flow_l1_norm", "nonnegative_step", "project_l1_ball", "zero_flow"]

# a projected row that float rounding left above the radius is scaled by this many ulps more than needed
_SHRINK_ULPS = 8


def _mass(x: torch.Tensor) -> torch.Tensor:
    return x.sum(dim=(1, 2, 3), keepdim=True)


def _check_flows(x: torch.Tensor, flow_v: torch.Tensor, flow_h: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got {tuple(x.shape)}")
    b, c, h, w = x.shape
    if tuple(flow_v.shape) != (b, c, h - 1, w) or tuple(flow_h.shape) != (b, c, h, w - 1):
        raise ValueError(f"for x {tuple(x.shape)} the flows must be [{b}, {c}, {h - 1}, {w}] and "
                         f"[{b}, {c}, {h}, {w - 1}], got {tuple(flow_v.shape)} and {tuple(flow_h.shape)}")


def zero_flow(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero flow plan for images x [B, C, H, W] (H, W ≥ 2)."""
    if x.dim() != 4 or x.shape[-2] < 2 or x.shape[-1] < 2:
        raise ValueError(f"x must be [B, C, H, W] with H, W >= 2, got {tuple(x.shape)}")
    b, c, h, w = x.shape
    return x.new_zeros(b, c, h - 1, w), x.new_zeros(b, c, h, w - 1)


def apply_flow(x: torch.Tensor, flow_v: torch.Tensor, flow_h: torch.Tensor) -> torch.Tensor:
    """x + s·div(δ): the images x [B, C, H, W] with the flow plan δ = (flow_v, flow_h) applied (mass-normalized
    units, s = Σx per image). Differentiable in x and the flows; mass is preserved up to float rounding."""
    _check_flows(x, flow_v, flow_h)
    return x + _mass(x) * divergence(flow_v, flow_h)


def flow_gradient(x: torch.Tensor, grad_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient with respect to the flows of a function of x' = apply_flow(x, δ), given its gradient
    ``grad_x`` with respect to x': s·div*(grad_x) (x held fixed)."""
    if grad_x.shape != x.shape:
        raise ValueError(f"grad_x must be shaped like x {tuple(x.shape)}, got {tuple(grad_x.shape)}")
    gv, gh = divergence_adjoint(grad_x)
    s = _mass(x)
    return s * gv, s * gh


def flow_l1_norm(flow_v: torch.Tensor, flow_h: torch.Tensor) -> torch.Tensor:
    """‖δ‖₁ per image, in float64: [B]."""
    return (flow_v.abs().flatten(1).sum(1, dtype=torch.float64)
            + flow_h.abs().flatten(1).sum(1, dtype=torch.float64))


def project_l1_ball(v: torch.Tensor, radius) -> torch.Tensor:
    """The Euclidean projection of every row v[b] (all dims after the first flattened) onto the L1 ball of
    radius ``radius`` (a number ≥ 0 or a tensor [B] of them): argmin_{‖w‖₁ ≤ r} ‖w − v[b]‖₂.

    Sort-based (Duchi et al. 2008): w = sign(v)·max(|v| − θ, 0) with the θ ≥ 0 that puts ‖w‖₁ on the sphere,
    O(d log d) per row, no Python loop over rows. Rows already inside are returned unchanged. The result
    satisfies ‖w‖₁ ≤ r exactly (summed in float64): a row that float rounding leaves above r is scaled down
    by a further 8 ulps of v's dtype.
    """
    if v.dim() < 1 or not v.is_floating_point():
        raise ValueError(f"v must be a float tensor with a leading batch dim, got {v.dtype} {tuple(v.shape)}")
    b = v.shape[0]
    r = torch.as_tensor(radius, dtype=torch.float64, device=v.device)
    if r.dim() == 0:
        r = r.expand(b)
    if r.shape != (b,) or not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError(f"radius must be a finite number >= 0 or one per row ({b}), got {radius!r}")
    flat = v.reshape(b, -1)
    if flat.shape[1] == 0:
        return v.clone()
    a = flat.abs().to(torch.float64)
    norms = a.sum(1)
    u = a.sort(dim=1, descending=True).values
    css = u.cumsum(1)
    j = torch.arange(1, u.shape[1] + 1, dtype=torch.float64, device=v.device)
    # the largest j (1-based) with u_j > (css_j − r)/j; j = 1 always qualifies when r > 0
    ok = u * j > css - r[:, None]
    rho = (ok * j).amax(1).clamp(min=1).long()
    theta = ((css.gather(1, (rho - 1)[:, None]).squeeze(1) - r) / rho.to(torch.float64)).clamp(min=0)
    w = (torch.sign(flat.to(torch.float64)) * (a - theta[:, None]).clamp(min=0))
    w = torch.where((norms <= r)[:, None], flat.to(torch.float64), w).to(v.dtype)
    out_norm = w.abs().sum(1, dtype=torch.float64)
    over = out_norm > r
    if bool(over.any()):
        factor = torch.where(over, r / out_norm.clamp(min=1e-300) * (1 - _SHRINK_ULPS * torch.finfo(v.dtype).eps), torch.ones_like(r))
        w = w * factor.to(v.dtype)[:, None]
        w = torch.where((r == 0)[:, None], torch.zeros_like(w), w)
    return w.reshape(v.shape)


def nonnegative_step(x: torch.Tensor, flow_v: torch.Tensor, flow_h: torch.Tensor, target_v: torch.Tensor,
                     target_h: torch.Tensor, radius, *, bisections: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the flow plan δ toward ``target`` while keeping x' = apply_flow(x, ·) ≥ 0 and ‖·‖₁ ≤ radius.

    δ must be feasible (apply_flow(x, δ) ≥ 0 and ‖δ‖₁ ≤ radius, e.g. the zero flow for x ≥ 0). The direction
    d = target − δ is first limited per source pixel: every edge's share of d that moves mass *out of* a
    pixel p is scaled by min(1, x'_p / (s·O_p)), where O_p is p's total outflow under d, so no pixel can give
    away more than it holds; the result d' keeps δ + t·d' ≥ 0 for every t ∈ [0, 1]. Then t is the largest
    value in [0, 1] (bisection) with ‖δ + t·d'‖₁ ≤ radius. Finally each row's new image is checked as
    computed: a row with a negative pixel or a norm above the radius (float rounding) keeps δ. So the result
    is always feasible — a sound, if conservative, stand-in for projecting onto the intersection.
    """
    _check_flows(x, flow_v, flow_h)
    _check_flows(x, target_v, target_h)
    b = x.shape[0]
    r = torch.as_tensor(radius, dtype=torch.float64, device=x.device)
    r = r.expand(b) if r.dim() == 0 else r
    s = _mass(x)
    current = apply_flow(x, flow_v, flow_h)
    dv, dh = target_v - flow_v, target_h - flow_h
    # outflow of each pixel under d: a positive vertical flow leaves (i, j) for (i+1, j), a negative one
    # leaves (i+1, j); likewise horizontally
    out = torch.zeros_like(x)
    out[..., :-1, :] += dv.clamp(min=0)
    out[..., 1:, :] += (-dv).clamp(min=0)
    out[..., :, :-1] += dh.clamp(min=0)
    out[..., :, 1:] += (-dh).clamp(min=0)
    available = current.clamp(min=0) / torch.where(s > 0, s, torch.ones_like(s))
    # (1 − 10⁻⁵): a margin so that float rounding does not take a pixel that gives away all it has below 0
    factor = torch.where(out > 0, (available / torch.where(out > 0, out, torch.ones_like(out)) * (1 - 1e-5))
                         .clamp(max=1.0), torch.ones_like(out))
    # each edge takes the factor of the pixel its mass leaves
    dv = torch.where(dv > 0, dv * factor[..., :-1, :], dv * factor[..., 1:, :])
    dh = torch.where(dh > 0, dh * factor[..., :, :-1], dh * factor[..., :, 1:])
    lo = torch.zeros(b, dtype=torch.float64, device=x.device)
    hi = torch.ones_like(lo)
    full_ok = flow_l1_norm(flow_v + dv, flow_h + dh) <= r
    for _ in range(bisections):
        mid = (lo + hi) / 2
        m = mid.to(x.dtype)[:, None, None, None]
        fits = flow_l1_norm(flow_v + m * dv, flow_h + m * dh) <= r
        lo, hi = torch.where(fits, mid, lo), torch.where(fits, hi, mid)
    t = torch.where(full_ok, torch.ones_like(lo), lo).to(x.dtype)[:, None, None, None]
    new_v, new_h = flow_v + t * dv, flow_h + t * dh
    moved = apply_flow(x, new_v, new_h)
    keep = ((moved < 0).flatten(1).any(1) | (flow_l1_norm(new_v, new_h) > r))[:, None, None, None]
    return torch.where(keep, flow_v, new_v), torch.where(keep, flow_h, new_h)
