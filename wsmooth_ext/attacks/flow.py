"""Flow-space attack: PGD over the local flow plan δ of the certificate's own geometry (``docs/attacks.md``).

Variables per example: flows δ = (δ_v [C, H−1, W] down, δ_h [C, H, W−1] right) in mass-normalized units,
image x'(δ) = x + s·div δ (s = mass of the clean image), constraint ‖δ‖₁ ≤ ε and 0 ≤ x' ≤ 1.
Mass and channel shares are preserved exactly (div sums to zero per channel), and by Lemma 1
W1_L2(X, X') ≤ W1_L1(X, X') ≤ ‖δ‖₁ ≤ ε — no entropic slack.

Iteration, with g = ∇_{x'} L and ∇_δ L = s·div*(g) (``divergence_adjoint``):
1. candidate δ̂ = Proj_{‖·‖₁ ≤ ε}(δ + step·ε·∇_δ L / ‖∇_δ L‖₂), the exact Euclidean projection onto the L1
   ball (sort, threshold, soft-threshold; Duchi et al. 2008);
2. pixel bounds, exactly: the change Δ = δ̂ − δ moves mass out of and into pixels of the current image
   x'(δ) ∈ [0, 1]. Every edge's change is scaled by min(a_source, b_target) with a_p = min(1, x'_p / out_p)
   and b_p = min(1, (1 − x'_p) / in_p) (out/in: the mass Δ moves out of / into p, pixel units), so no pixel
   loses more than it holds or gains more than its room: x'(δ + Δ') ∈ [0, 1] whatever the other edges do;
3. if ‖δ + Δ'‖₁ > ε, scale it by ε/‖δ + Δ'‖₁: the image becomes a convex combination of x and a feasible
   image, so it stays in [0, 1], and the budget holds.
The iterate and the image are computed in float64; the image is rounded to the input's dtype after float64
rounding noise (|v| ≤ 1e-12 below 0 or above 1, checked) is set to the bound.
"""

from __future__ import annotations

import torch

from ..core.flows import project_l1_ball
from ..core.ops import divergence, divergence_adjoint
from .base import StateAttack, _positive
from .target import SmoothedTarget

ROUNDING = 1e-12  # float64 noise of the image tolerated (and set to the bound); more raises RuntimeError


def _split(flat, shape):
    bsz, chans, h, w = shape
    nv = chans * (h - 1) * w
    return flat[:, :nv].reshape(bsz, chans, h - 1, w), flat[:, nv:].reshape(bsz, chans, h, w - 1)


def _flat(fv, fh):
    return torch.cat([fv.flatten(1), fh.flatten(1)], dim=1)


def flow_image(x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """x + s·div δ for flat flows [B, C·r] (float64 if flat is)."""
    fv, fh = _split(flat, x.shape)
    mass = x.to(flat.dtype).sum(dim=(1, 2, 3), keepdim=True)
    return x.to(flat.dtype) + mass * divergence(fv, fh)


def limit_change(current: torch.Tensor, change: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Scale each edge of ``change`` (flat flows, mass-normalized) so current + s·div(change) ∈ [0, 1] (step 2)."""
    shape = current.shape
    cv, ch = _split(change * mass.reshape(-1, 1), shape)  # pixel units
    zero = torch.zeros_like(current)
    out, inn = zero.clone(), zero.clone()
    # vertical edge (i, j) -> (i+1, j): positive moves mass down
    out[..., :-1, :] += cv.clamp_min(0)
    inn[..., 1:, :] += cv.clamp_min(0)
    out[..., 1:, :] += (-cv).clamp_min(0)
    inn[..., :-1, :] += (-cv).clamp_min(0)
    out[..., :, :-1] += ch.clamp_min(0)
    inn[..., :, 1:] += ch.clamp_min(0)
    out[..., :, 1:] += (-ch).clamp_min(0)
    inn[..., :, :-1] += (-ch).clamp_min(0)
    tiny = torch.finfo(current.dtype).tiny
    a = torch.where(out > 0, (current.clamp_min(0) / out.clamp_min(tiny)).clamp(max=1), torch.ones_like(out))
    b = torch.where(inn > 0, ((1 - current).clamp_min(0) / inn.clamp_min(tiny)).clamp(max=1), torch.ones_like(inn))
    up, down = torch.minimum(a[..., :-1, :], b[..., 1:, :]), torch.minimum(a[..., 1:, :], b[..., :-1, :])
    left, right = torch.minimum(a[..., :, :-1], b[..., :, 1:]), torch.minimum(a[..., :, 1:], b[..., :, :-1])
    cv_raw, ch_raw = _split(change, shape)
    fv = cv_raw * torch.where(cv_raw > 0, up, down)
    fh = ch_raw * torch.where(ch_raw > 0, left, right)
    return _flat(fv, fh)


class FlowAttack(StateAttack):
    """PGD over local flows with ‖δ‖₁ ≤ ε and exact pixel bounds (module docstring).

    Args:
        model_or_callable: classifier returning logits, or a ``Smooth``.
        eps: ε, the L1 budget of the flow (mass-normalized units; bounds W1 with either ground metric).
            With eps_factor > 1 the initial radius of a growing schedule (as :class:`FrankWolfeAttack`).
        max_iter, eps_factor, eps_every: the schedule; step: step length as a fraction of ε (L2 norm of the
            gradient step, before projection).
        smoothing: with a ``Smooth``, its :class:`~.target.SmoothedTarget` (None: the defaults).
    """

    def __init__(self, model_or_callable, eps: float = 0.3, *, max_iter: int = 100, eps_factor: float = 1.0,
                 eps_every: int = 10, step: float = 0.05, smoothing: SmoothedTarget | None = None):
        self._init_target(model_or_callable, smoothing)
        self._init_schedule(_positive("eps", eps), eps_factor, eps_every, max_iter)
        self.step = _positive("step", step)

    def init_state(self, x):
        if x.shape[-1] < 2 or x.shape[-2] < 2:
            raise ValueError(f"the flow attack needs images of at least 2x2 pixels, got {tuple(x.shape[-2:])}")
        bsz, chans, h, w = x.shape
        return {"flow": torch.zeros(bsz, chans * ((h - 1) * w + h * (w - 1)), dtype=torch.float64,
                                    device=x.device)}

    def image(self, x, state):
        img = flow_image(x, state["flow"])
        worst = float(torch.maximum(-img.min(), img.max() - 1))
        if worst > ROUNDING:
            raise RuntimeError(f"flow attack left pixel bounds by {worst:.3g} (> rounding {ROUNDING:g})")
        return img.clamp(0, 1).to(x.dtype)  # only rounding noise (≤ ROUNDING, checked above) is affected

    def update(self, x, state, grad, eps, t):
        flow = state["flow"]
        mass = x.double().sum(dim=(1, 2, 3))
        gv, gh = divergence_adjoint(grad.double())
        direction = _flat(gv, gh) * mass[:, None]
        norm = direction.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        eps64 = eps.double()
        candidate = project_l1_ball(flow + self.step * eps64[:, None] * direction / norm, eps64)
        current = flow_image(x, flow)
        new = flow + limit_change(current, candidate - flow, mass)
        l1 = new.abs().sum(dim=1)
        scale = torch.where(l1 > eps64, eps64 / l1.clamp_min(torch.finfo(torch.float64).tiny), torch.ones_like(l1))
        return {"flow": new * scale[:, None]}
