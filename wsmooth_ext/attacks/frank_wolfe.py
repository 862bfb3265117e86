"""Frank–Wolfe Wasserstein attack over local couplings (after Wu, Wang & Yu 2020; own implementation).

Variables, per example and channel: a coupling π[o, i] ≥ 0 over pixels i and offsets o of the k×k window
(π[o, i] = 0 where i + o leaves the image), rows summing to the clean pixels (Σ_o π[o, i] = x_i). The
adversarial image is the column sums x'(π)_j = Σ_o π[o, j − o] (``F.fold``); the budget is
⟨π, C⟩ ≤ ε·s in pixel-mass units (s = mass of the clean image), C[o] = ‖o‖₂ (``ground="l2"``) or ‖o‖₁.
So x' ≥ 0, mass (per channel) is preserved, and W1(X, X') ≤ ⟨π, C⟩/s ≤ ε for that ground metric.

Start: π⁰ = no mass moved. Iteration t (t counts from the last change of ε), gradient g = ∇_{x'} L:
1. LMO: maximize ⟨G, π⟩ + γ·H(π) over rows = x and ⟨π, C⟩ ≤ ε·s, with G[o, i] = g[i + o] / max|g|
   (per example): row i = x_i·softmax_o((G[o, i] − μ·C[o] − ν[i + o])/γ) over the valid offsets. ν ≥ 0
   (capacity multipliers, warm-started across iterations) takes ``capacity_rounds`` Bregman steps
   ν ← max(0, ν + γ·log(col/(1 − 10⁻³))) per LMO, which keep the LMO from piling mass onto a few pixels
   (without them, at ε = 0.3 on digits, the column capping of step 2 discarded ~75% of the budget). μ ≥ 0 by
   bisection,
   keeping the end of the bracket whose budget holds (μ = 0 if that already does; if the kept end misses the
   budget by rounding, the point is mixed with π⁰ to land on it exactly).
2. Pixels ≤ 1: the LMO point is corrected by :func:`cap_columns` — mass arriving at a pixel over 1 from
   other pixels is sent back home (rows kept, cost only falls) — so it lies in the full feasible set
   {π ≥ 0, rows = x, ⟨π, C⟩ ≤ ε·s, x'(π) ≤ 1}. (This corrected oracle is not the exact LMO of that set:
   Frank–Wolfe's convergence guarantee does not carry over, only feasibility does.)
3. Step π ← π + (2/(t+2))(π_LMO − π): a convex combination of feasible points, so every iterate meets
   rows = x, π ≥ 0, the budget and 0 ≤ x' ≤ 1. No clipping anywhere.
The LMO's softmaxes run in the input's dtype (log-sum-exp stable in float32); the iterate π and the column
capping are kept in float64, so the returned image, rounded to the input's dtype, has pixels ≤ 1 exactly; everything is batched pure torch (CPU and GPU).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from .base import StateAttack, _positive
from .target import SmoothedTarget

GROUNDS = ("l2", "l1")


def window_cost(kernel_size: int, ground: str = "l2", *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Cost per offset [k²] in unfold order (o = a·k + b ↔ offset (a − c, b − c)): ‖o‖₂ or ‖o‖₁."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
    if ground not in GROUNDS:
        raise ValueError(f"ground must be one of {GROUNDS}, got {ground!r}")
    d = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    a, b = d[:, None], d[None, :]
    cost = (a ** 2 + b ** 2).sqrt() if ground == "l2" else a.abs() + b.abs()
    return cost.reshape(-1).to(dtype=dtype, device=device)


def gather_window(v: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """[B, C, H, W] → [B, C, k², H·W]: out[.., o, i] = v[i + o] (0 outside the image)."""
    bsz, chans, h, w = v.shape
    cols = F.unfold(v.reshape(bsz * chans, 1, h, w), kernel_size, padding=kernel_size // 2)
    return cols.reshape(bsz, chans, kernel_size ** 2, h * w)


def column_sums(plan: torch.Tensor, shape) -> torch.Tensor:
    """Adjoint of :func:`gather_window`: [B, C, k², H·W] → [B, C, H, W], out[j] = Σ_o plan[o, j − o]."""
    bsz, chans, h, w = shape
    k = math.isqrt(plan.shape[2])
    out = F.fold(plan.reshape(bsz * chans, k * k, h * w), (h, w), k, padding=k // 2)
    return out.reshape(bsz, chans, h, w)


def identity_plan(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """π⁰: every pixel keeps its mass (offset 0)."""
    bsz, chans, h, w = x.shape
    plan = x.new_zeros(bsz, chans, kernel_size ** 2, h * w)
    plan[:, :, kernel_size ** 2 // 2] = x.reshape(bsz, chans, h * w)
    return plan


def plan_cost(plan: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """⟨π, C⟩ per example [B], pixel-mass units."""
    return (plan * cost[:, None]).sum(dim=(1, 2, 3))


def entropic_lmo(x: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, cost: torch.Tensor,
                 budget: torch.Tensor, gamma: float, *, bisections: int = 30, nu: torch.Tensor | None = None,
                 capacity: float = 1.0, rounds: int = 0):
    """Entropic linear maximization oracle over {π ≥ 0, rows = x, ⟨π, C⟩ ≤ budget} (module docstring, 1).

    Args:
        x: [B, C, H, W] row masses; scores: G [B, C, k², H·W]; valid: bool [1, 1, k², H·W] (i + o inside);
        cost: [k²]; budget: [B] (pixel-mass units, ≥ 0); gamma > 0 the entropy weight (in units of G).
        nu, capacity, rounds: capacity multipliers ν [B, C, H, W] ≥ 0 (start; None = 0), subtracted from the
            score of every entry that targets the pixel. ``rounds`` Bregman steps ν ← max(0, ν + γ·log(col /
            capacity)) at fixed μ push the columns towards ≤ capacity; μ is then re-bisected. They only steer
            the point: rows and the budget hold whatever ν is.
    Returns:
        (π [B, C, k², H·W] with rows = x and ⟨π, C⟩ ≤ budget, μ [B], ν [B, C, H, W]).
    """
    bsz, chans, h, w = x.shape
    k = math.isqrt(cost.numel())
    rows = x.reshape(bsz, chans, 1, h * w)
    shape = (-1, 1, 1, 1)
    base = torch.where(valid, scores, torch.full_like(scores, -math.inf)) / gamma
    cost_o = cost[:, None] / gamma
    nu = torch.zeros_like(x) if nu is None else nu
    positive = cost[cost > 0]

    def capacity_term(nu_):  # ν gathered onto the entries that target each pixel; fixed while μ moves
        return gather_window(nu_, k) / gamma

    def plan_at(mu, nu_term):
        return rows * torch.softmax(base - mu.view(shape) * cost_o - nu_term, dim=2)

    def bisect(nu_):
        # μ_hi: offset 0 (cost 0) then beats every other offset by ≥ 60γ, so the cost is ≤ e^-60·Σx·max C
        nu_term = capacity_term(nu_)
        spread = scores.flatten(1).amax(1) - scores.flatten(1).amin(1) + nu_.flatten(1).amax(1)
        lo = torch.zeros(bsz, dtype=x.dtype, device=x.device)
        hi = (spread + 60 * gamma) / float(positive.min()) if positive.numel() else lo.clone()
        feasible0 = plan_cost(plan_at(lo, nu_term), cost) <= budget
        for _ in range(bisections):
            mid = (lo + hi) / 2
            ok = plan_cost(plan_at(mid, nu_term), cost) <= budget
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
        return torch.where(feasible0, torch.zeros_like(hi), hi), nu_term

    mu, nu_term = bisect(nu)
    if rounds:
        for _ in range(rounds):
            col = column_sums(plan_at(mu, capacity_term(nu)), x.shape)
            nu = (nu + gamma * torch.log(col.clamp_min(torch.finfo(x.dtype).tiny) / capacity)).clamp_min(0)
        mu, nu_term = bisect(nu)
    plan = plan_at(mu, nu_term)
    used = plan_cost(plan, cost)
    # rounding: land exactly on the budget by mixing with π⁰ (cost 0), which keeps rows and π ≥ 0
    over = used > budget
    if bool(over.any()):
        tau = torch.where(over, budget / used.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(used))
        plan = identity_plan(x, k) + tau.view(shape) * (plan - identity_plan(x, k))
    return plan, mu, nu


def cap_columns(plan: torch.Tensor, x: torch.Tensor, *, rounds: int = 100) -> torch.Tensor:
    """Make every column sum ≤ 1 while keeping rows = x, π ≥ 0 and never raising the cost (module doc, 2).

    Round: at each pixel j whose column exceeds 1, scale the mass arriving from *other* pixels
    (π[o, j − o], o ≠ 0) by (1 − π[0, j]) / incoming — possible because π[0, j] ≤ x_j ≤ 1 — and return the
    removed mass to its source's offset 0 (it stays home, cost 0). Returning mass can push a source over 1,
    hence rounds. Whatever remains over 1 after ``rounds`` is removed by mixing with π⁰ (no mass moved):
    the largest τ with x + τ(x'(π) − x) ≤ 1 (exact; τ = 0 in the worst case, π⁰ itself).
    The rounds stop early at a fixed point: once a round leaves the plan bit for bit unchanged, every later
    round would too (in float64 that happens after ~10–25 rounds, with columns still up to an ulp over 1,
    which the mixing then removes), so the result is the one of all ``rounds`` rounds.
    """
    k = math.isqrt(plan.shape[2])
    centre = k * k // 2
    shape = x.shape
    previous = None
    for _ in range(rounds):
        if previous is not None and _same_bits(plan, previous):
            break
        previous = plan
        col = column_sums(plan, shape)
        if not bool((col > 1).any()):
            return plan
        moved = plan.clone()
        moved[:, :, centre] = 0
        incoming = column_sums(moved, shape)
        stay = plan[:, :, centre].reshape(shape)
        factor = torch.where(col > 1, ((1 - stay) / incoming.clamp_min(torch.finfo(x.dtype).tiny)).clamp(0, 1),
                             torch.ones_like(col))
        keep = moved * gather_window(factor, k)  # entry [o, i] scaled by the factor of its target i + o
        back = (moved - keep).sum(dim=2)
        plan = keep
        plan[:, :, centre] = stay.flatten(2) + back
    col = column_sums(plan, shape)
    tau = max_step_below_one(x, col)
    return identity_plan(x, k) + tau.view(-1, 1, 1, 1) * (plan - identity_plan(x, k))


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (0.0 and −0.0 differ, NaNs with equal bits agree): the test for a fixed point."""
    if a.dtype == torch.float64:
        return torch.equal(a.view(torch.int64), b.view(torch.int64))
    if a.dtype == torch.float32:
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    return torch.equal(a, b)


def max_step_below_one(current: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Largest τ ∈ [0, 1] per example with current + τ(target − current) ≤ 1 everywhere (current ≤ 1)."""
    rise = (target - current).flatten(1)
    room = (1 - current).flatten(1).clamp_min(0)
    ratio = torch.where(rise > 0, room / rise.clamp_min(torch.finfo(current.dtype).tiny),
                        torch.full_like(rise, math.inf))
    return ratio.amin(dim=1).clamp(0, 1)


class FrankWolfeAttack(StateAttack):
    """Frank–Wolfe over local couplings with an entropic LMO (``docs/attacks.md`` §Frank–Wolfe).

    Args:
        model_or_callable: classifier returning logits, or a ``Smooth`` (gradient of ``soft_forward``,
            success by the hard smoothed prediction; abstaining = fooled).
        eps: the radius ε (mass-normalized units; budget ⟨π, C⟩ ≤ ε·s). With ``eps_factor`` > 1 it is the
            initial radius, multiplied by eps_factor after every ``eps_every`` iterations for the examples
            still standing (growing-ε mode; radius = the ε in force at the first flip); with eps_factor = 1
            (default) ε is fixed and the attack runs ``max_iter`` iterations at most.
        kernel_size: k of the transport window; ground: "l2" (cost ‖o‖₂, W1 as reported) or "l1" (‖o‖₁).
        gamma: entropy weight of the LMO, in units of the per-example normalized gradient (max |G| = 1).
        capacity_rounds: Bregman steps on the capacity multipliers ν per LMO (warm-started across iterations;
            0: none). They keep the LMO from piling mass onto pixels that the column capping then empties.
        smoothing: with a ``Smooth``, its :class:`~.target.SmoothedTarget` (None: the defaults).
    """

    def __init__(self, model_or_callable, eps: float = 0.3, *, kernel_size: int = 5, ground: str = "l2",
                 max_iter: int = 100, eps_factor: float = 1.0, eps_every: int = 10, gamma: float = 0.03,
                 capacity_rounds: int = 10, smoothing: SmoothedTarget | None = None):
        self._init_target(model_or_callable, smoothing)
        self._init_schedule(_positive("eps", eps), eps_factor, eps_every, max_iter)
        self.cost = window_cost(kernel_size, ground, dtype=torch.float64)  # validates both
        self.kernel_size, self.ground = int(kernel_size), ground
        self.gamma = _positive("gamma", gamma)
        if isinstance(capacity_rounds, bool) or not isinstance(capacity_rounds, numbers.Integral) or capacity_rounds < 0:
            raise ValueError(f"capacity_rounds must be an integer >= 0, got {capacity_rounds!r}")
        self.capacity_rounds = int(capacity_rounds)

    def init_state(self, x):
        # the iterate lives in float64: its column sums must stay ≤ 1 after rounding to x's dtype
        return {"plan": identity_plan(x.double(), self.kernel_size), "nu": torch.zeros_like(x)}

    def image(self, x, state):
        return column_sums(state["plan"], x.shape).to(x.dtype)

    def update(self, x, state, grad, eps, t):
        k = self.kernel_size
        cost = self.cost.to(dtype=x.dtype, device=x.device)
        plan = state["plan"]
        scores = gather_window(grad, k)
        scale = scores.flatten(1).abs().amax(1).clamp_min(torch.finfo(x.dtype).tiny)
        scores = scores / scale.view(-1, 1, 1, 1)
        valid = gather_window(torch.ones_like(x[:1, :1]), k) > 0.5
        budget = eps * x.sum(dim=(1, 2, 3))
        target, _, nu = entropic_lmo(x, scores, valid, cost, budget, self.gamma, nu=state["nu"],
                                     capacity=1 - 1e-3, rounds=self.capacity_rounds)
        target = cap_columns(target.double(), x.double())  # still in the feasible set, now with pixels ≤ 1
        tau = 2.0 / (t.double() + 2)
        return {"plan": plan + tau.view(-1, 1, 1, 1) * (target - plan), "nu": nu}
