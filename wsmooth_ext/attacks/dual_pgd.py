"""PGD with dual projection over local couplings (after Wu, Wang & Yu 2020; own implementation).

Same variables as the Frank–Wolfe attack (:mod:`.frank_wolfe`): per example and channel a coupling π[o, i] ≥ 0
over pixels i and offsets o of the k×k window, rows Σ_o π[o, i] = x_i, adversarial image x'(π) = column sums,
budget ⟨π, C⟩ ≤ ε·s (pixel-mass units, s = the clean image's mass). Iteration, gradient g = ∇_{x'} L:

1. Ascent step on π: G[o, i] = g[i + o] is the gradient of L(x'(π)) with respect to π[o, i]; normalized per
   example to max |G| = 1, π̃ = π + step·G.
2. Projection of π̃ onto {π ≥ 0, rows = x, ⟨π, C⟩ ≤ ε·s}. Its KKT conditions give π = P_rows(π̃ − μ·C) with
   one multiplier μ ≥ 0 for the budget, where P_rows projects each row (over the valid offsets) onto the
   simplex {p ≥ 0, Σ p = x_i}: μ = 0 if that already meets the budget, else μ solves cost(μ) = ε·s, found by
   bisection (cost(μ) is non-increasing in μ). A last mix with π⁰ (no mass moved, cost 0) absorbs the
   bisection's rounding, so the budget holds exactly.
3. Pixels ≤ 1: :func:`.frank_wolfe.cap_columns` sends mass arriving over 1 back home (rows kept, cost only
   falls). The iterate is then in the full feasible set, though no longer the exact Euclidean projection
   onto it (that set has a fourth constraint family); no clipping anywhere, mass preserved per channel.

Everything is batched pure torch; the iterate is kept in float64 so that its column sums, rounded to the
input's dtype, stay ≤ 1.
"""

from __future__ import annotations

import math

import torch

from .base import StateAttack, _positive
from .frank_wolfe import cap_columns, column_sums, gather_window, identity_plan, plan_cost, window_cost
from .target import SmoothedTarget

_OUTSIDE = -1e30  # score of offsets that leave the image: never in a projected row's support


def project_rows_to_simplex(values: torch.Tensor, rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row values[..., :, i] (over dim 2, valid entries only) onto
    {p ≥ 0, Σ p = rows[..., i]}.

    values [B, C, K, N]; rows [B, C, 1, N] ≥ 0; valid bool broadcastable to values. Sort-based (Held, Wolfe &
    Crowder 1974): θ = (Σ_{top ρ} v − r)/ρ for the largest ρ with v_(ρ) > θ; p = max(v − θ, 0).
    """
    v = torch.where(valid, values, torch.full_like(values, _OUTSIDE))
    ordered = v.sort(dim=2, descending=True).values
    cumulative = ordered.cumsum(dim=2) - rows
    ranks = torch.arange(1, v.shape[2] + 1, dtype=v.dtype, device=v.device).view(1, 1, -1, 1)
    in_support = ordered * ranks > cumulative  # v_(ρ) > (Σ_{≤ρ} v − r)/ρ
    rho = in_support.sum(dim=2, keepdim=True).clamp_min(1)
    theta = cumulative.gather(2, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp_min(0)


def project_budget(target: torch.Tensor, x: torch.Tensor, valid: torch.Tensor, cost: torch.Tensor,
                   budget: torch.Tensor, *, bisections: int = 50) -> torch.Tensor:
    """Euclidean projection of ``target`` [B, C, k², H·W] onto {π ≥ 0, rows = x, ⟨π, C⟩ ≤ budget} (module doc, 2).

    x [B, C, H, W] row masses; valid bool [1, 1, k², H·W]; cost [k²]; budget [B] ≥ 0 (pixel-mass units).
    """
    bsz, chans, h, w = x.shape
    k = math.isqrt(cost.numel())
    rows = x.reshape(bsz, chans, 1, h * w)
    cost_o = cost[:, None]
    shape = (-1, 1, 1, 1)

    def plan_at(mu):
        return project_rows_to_simplex(target - mu.view(shape) * cost_o, rows, valid)

    zero = torch.zeros(bsz, dtype=x.dtype, device=x.device)
    plan = plan_at(zero)
    over = plan_cost(plan, cost) > budget
    if bool(over.any()):
        # μ_hi: every row's offset-0 entry then leads all others by more than the row's mass, so the
        # projection keeps all mass home (cost 0)
        spread = (target.flatten(1).amax(1) - target.flatten(1).amin(1)).clamp_min(0)
        positive = cost[cost > 0]
        lo, hi = zero.clone(), (spread + x.flatten(1).amax(1) + 1) / float(positive.min())
        for _ in range(bisections):
            mid = (lo + hi) / 2
            ok = plan_cost(plan_at(mid), cost) <= budget
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
        mu = torch.where(over, hi, zero)
        plan = plan_at(mu)
        used = plan_cost(plan, cost)
        still = used > budget  # rounding: land on the budget by mixing with π⁰ (cost 0; rows and π ≥ 0 hold)
        if bool(still.any()):
            tau = torch.where(still, budget / used.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(used))
            home = identity_plan(x, k)
            plan = home + tau.view(shape) * (plan - home)
    return plan


class DualProjectionPGD(StateAttack):
    """Projected gradient ascent on local couplings with the dual (one-multiplier) projection.

    Args:
        model_or_callable: classifier returning logits, or a ``Smooth`` (gradient of ``soft_forward``,
            success by the hard smoothed prediction; abstaining = fooled).
        eps: the radius ε (mass-normalized units; budget ⟨π, C⟩ ≤ ε·s). With ``eps_factor`` > 1 the initial
            radius of the growing-ε mode (as in :class:`.FrankWolfeAttack`); with 1 (default) fixed.
        step: ascent step on π per iteration, in pixel-mass units per coupling entry, after normalizing the
            gradient to max |G| = 1 per example.
        kernel_size: k of the transport window; ground: "l2" (cost ‖o‖₂) or "l1" (‖o‖₁).
        smoothing: with a ``Smooth``, its :class:`~.target.SmoothedTarget` (None: the defaults).
    """

    def __init__(self, model_or_callable, eps: float = 0.3, *, step: float = 0.1, kernel_size: int = 5,
                 ground: str = "l2", max_iter: int = 100, eps_factor: float = 1.0, eps_every: int = 10,
                 smoothing: SmoothedTarget | None = None):
        self._init_target(model_or_callable, smoothing)
        self._init_schedule(_positive("eps", eps), eps_factor, eps_every, max_iter)
        self.cost = window_cost(kernel_size, ground, dtype=torch.float64)  # validates both
        self.kernel_size, self.ground = int(kernel_size), ground
        self.step = _positive("step", step)

    def init_state(self, x):
        return {"plan": identity_plan(x.double(), self.kernel_size)}

    def image(self, x, state):
        return column_sums(state["plan"], x.shape).to(x.dtype)

    def update(self, x, state, grad, eps, t):
        k = self.kernel_size
        xd = x.double()
        scores = gather_window(grad.double(), k)
        scale = scores.flatten(1).abs().amax(1).clamp_min(torch.finfo(torch.float64).tiny)
        target = state["plan"] + self.step * scores / scale.view(-1, 1, 1, 1)
        valid = gather_window(torch.ones_like(xd[:1, :1]), k) > 0.5
        budget = eps.double() * xd.sum(dim=(1, 2, 3))
        plan = project_budget(target, xd, valid, self.cost.to(xd.device), budget)
        return {"plan": cap_columns(plan, xd)}
