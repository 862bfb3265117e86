"""Training methods for larger certified radii (docs/math.md §Certified training).

* ``noise`` — cross-entropy on noisy copies (the paper's training; with one copy it is exactly the
  original ``train``).
* ``consistency`` — Jeong & Shin 2020: m noisy copies per example; per example
  loss = mean_j CE(f(x̃_j), y) + λ·mean_j KL(p̄ ‖ p_j) + η·H(p̄), p_j = softmax(f(x̃_j)), p̄ = mean_j p_j.
* ``smoothadv`` — Salman et al. 2019 in the Wasserstein threat model: find x' = x + s·div(δ), ‖δ‖₁ ≤ ε,
  x' ≥ 0, that maximizes the cross-entropy of the soft smoothed classifier (mean softmax over the m noise
  draws) by k projected gradient steps on δ, then train with cross-entropy on the noisy copies of x'.
* ``macer`` — Zhai et al. 2020 with this package's certificates: the soft smoothed classifier's cross-entropy
  plus λ·max(0, 1 − ξ/γ) on examples the (β-sharpened) soft smoothed classifier gets right, ξ its certified
  noise-space L1 radius (−λ_s·ln(2(1 − p_y)) for Laplace noise, 2λ_s(p_y − 1/2) for uniform, λ_s the noise
  scale) and γ the target radius.

The loss functions return one value per example (so data-parallel training can sum them); the attack is
batched (no per-example Python loops).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .flows import apply_flow, flow_gradient, flow_l1_norm, nonnegative_step, project_l1_ball, zero_flow

__all__ = ["METHODS", "METHOD_DEFAULTS", "consistency_loss", "macer_loss", "macer_radius", "method_settings",
           "noise_loss", "smoothadv_epsilon",
           "smoothadv_perturb", "smoothed_cross_entropy"]

METHODS = ("noise", "consistency", "smoothadv", "macer")
# hyper-parameters and their defaults; a method's settings hold None for the ones it does not use
METHOD_DEFAULTS = {
    "num_noise": None,  # noisy copies per example and epoch: DEFAULT_NUM_NOISE
    "consistency_lambda": 3.0,  # λ, weight of the KL term (consistency); 3 kept noise training's accuracy at σ 0.01, 10 lost 5 points
    "consistency_eta": 0.5,  # η, weight of the entropy term (consistency)
    "adv_epsilon": 0.02,  # ε, L1 norm of the flow plan, mass-normalized units (smoothadv)
    "adv_steps": 4,  # k, projected gradient steps (smoothadv)
    "adv_warmup": 10,  # epochs over which ε rises linearly to its final value (smoothadv)
    "macer_lambda": 1.0,  # λ, weight of the radius hinge (macer)
    "macer_gamma": 0.03,  # γ, target noise-space L1 radius, mass-normalized units (macer)
    "macer_beta": 16.0,  # β, inverse temperature of the softmax in the radius term (macer)
}
DEFAULT_NUM_NOISE = {"noise": 1, "consistency": 2, "smoothadv": 2, "macer": 8}
_USES = {"noise": ("num_noise",),
         "consistency": ("num_noise", "consistency_lambda", "consistency_eta"),
         "smoothadv": ("num_noise", "adv_epsilon", "adv_steps", "adv_warmup"),
         "macer": ("num_noise", "macer_lambda", "macer_gamma", "macer_beta")}
# what a checkpoint written before methods existed means: the noise method with one copy
LEGACY_SETTINGS = {"method": "noise", "num_noise": 1, "consistency_lambda": None, "consistency_eta": None,
                   "adv_epsilon": None, "adv_steps": None, "adv_warmup": None, "macer_lambda": None,
                   "macer_gamma": None, "macer_beta": None}
# largest number of copies per example: sample indices epoch·m + j must stay below the reserved vote range
MAX_NUM_NOISE = 1024


def method_settings(method: str = "noise", **params) -> dict:
    """The validated settings of ``method``: {"method", "num_noise", ...every hyper-parameter}, with defaults
    filled in for the ones the method uses and None for the others. ValueError on anything invalid."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    unknown = set(params) - set(METHOD_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown method settings {sorted(unknown)}")
    out = {"method": method}
    for key, default in METHOD_DEFAULTS.items():
        value = params.get(key)
        if key not in _USES[method]:
            out[key] = None
            continue
        if value is None:
            value = default if key != "num_noise" else DEFAULT_NUM_NOISE[method]
        if key in ("num_noise", "adv_steps", "adv_warmup"):
            low = {"num_noise": 1 if method != "consistency" else 2, "adv_steps": 1, "adv_warmup": 0}[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= (
                    MAX_NUM_NOISE if key == "num_noise" else 10 ** 6):
                raise ValueError(f"{key} must be an integer >= {low}"
                                 f"{f' and <= {MAX_NUM_NOISE}' if key == 'num_noise' else ''} for method "
                                 f"{method}, got {value!r}")
            value = int(value)
        else:
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value))
                    or float(value) < 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
            if key in ("macer_gamma", "macer_beta") and float(value) == 0:
                raise ValueError(f"{key} must be > 0, got {value!r}")
            value = float(value)
        out[key] = value
    return out


def noise_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the copies, per example: logits [B, m, K], labels [B] → [B]."""
    b, m, k = logits.shape
    ce = F.cross_entropy(logits.reshape(b * m, k), labels.repeat_interleave(m), reduction="none")
    return ce.view(b, m).mean(1)


def consistency_loss(logits: torch.Tensor, labels: torch.Tensor, lam: float, eta: float) -> torch.Tensor:
    """Jeong & Shin's loss per example: mean CE + λ·mean_j KL(p̄ ‖ p_j) + η·H(p̄); logits [B, m, K] → [B].

    log p̄ is computed as logsumexp_j log p_j − log m (no log of a rounded-to-zero mean)."""
    _, m, _ = logits.shape
    logp = F.log_softmax(logits, dim=-1)
    log_mean = torch.logsumexp(logp, dim=1) - math.log(m)  # [B, K]
    mean = log_mean.exp()
    kl = (mean[:, None, :] * (log_mean[:, None, :] - logp)).sum(-1).mean(1)
    entropy = -(mean * log_mean).sum(-1)
    return noise_loss(logits, labels) + lam * kl + eta * entropy


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−log of the soft smoothed classifier's probability of the label, mean_j softmax(logits_j)[y], per
    example: logits [B, m, K] → [B]."""
    _, m, _ = logits.shape
    logp = F.log_softmax(logits, dim=-1).gather(-1, labels[:, None, None].expand(-1, m, 1)).squeeze(-1)
    return -(torch.logsumexp(logp, dim=1) - math.log(m))


def macer_radius(p: torch.Tensor, q: torch.Tensor, distribution: str, scale: float) -> torch.Tensor:
    """The certified noise-space L1 radius ξ for top-class probability p (q = 1 − p, given separately so that
    it keeps its precision near p = 1): −scale·ln(2q) for "laplace" (the tight certificate), 2·scale·(p − 1/2)
    = scale·(p − q) for "uniform"; negative below p = 1/2 (MACER's hinge then pushes harder)."""
    if distribution == "laplace":
        return -scale * torch.log(2 * q.clamp(min=1e-30))
    if distribution == "uniform":
        return scale * (p - q)
    raise ValueError(f"distribution must be 'laplace' or 'uniform', got {distribution!r}")


def macer_loss(logits: torch.Tensor, labels: torch.Tensor, lam: float, gamma: float, beta: float,
               distribution: str, scale: float) -> torch.Tensor:
    """MACER's loss per example: smoothed CE + λ·1[argmax p̂ = y]·max(0, 1 − ξ/γ), with p̂ = mean_j softmax(β·z_j)
    and ξ = :func:`macer_radius` of p̂_y (1 − p̂_y summed from the other classes); logits [B, m, K] → [B].
    The hinge is divided by γ so that λ is unitless."""
    b, m, _ = logits.shape
    sharp = torch.softmax(beta * logits, dim=-1).mean(1)  # [B, K]
    p = sharp.gather(1, labels[:, None]).squeeze(1)
    others = torch.ones_like(sharp).scatter(1, labels[:, None], 0.0)
    q = (sharp * others).sum(1)
    xi = macer_radius(p, q, distribution, scale)
    correct = sharp.argmax(1) == labels
    hinge = torch.where(correct, (1 - xi / gamma).clamp(min=0), torch.zeros_like(xi))
    return smoothed_cross_entropy(logits, labels) + lam * hinge


def smoothadv_epsilon(epsilon: float, warmup: int, epoch: int) -> float:
    """ε of 0-based ``epoch``: ε·min(1, (epoch + 1)/warmup), ε from the first epoch when warmup = 0."""
    if warmup <= 0:
        return float(epsilon)
    return float(epsilon) * min(1.0, (epoch + 1) / warmup)


def smoothadv_perturb(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                      sample_noise: Callable[[torch.Tensor], torch.Tensor], num_noise: int, epsilon: float,
                      steps: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """SmoothAdv's attack on flow plans: (x', (flow_v, flow_h)) with x' = apply_flow(x, δ), ‖δ‖₁ ≤ ε and x' ≥ 0.

    ``sample_noise(x')`` returns the num_noise noisy copies of every image [B·m, C, H, W] (row b·m + j, the
    layout of the noise ops), differentiably in x'. Each of the ``steps`` steps takes the gradient g of the
    soft smoothed classifier's cross-entropy (:func:`smoothed_cross_entropy`, summed over the batch) with
    respect to x', maps it to the flows (s·div* g), moves δ by (2ε/k)·g/‖g‖₁ (an L1-normalized ascent step),
    projects onto the L1 ball of radius ε (:func:`project_l1_ball`) and takes the feasible part of that move
    that keeps x' ≥ 0 (:func:`nonnegative_step`). x must be ≥ 0. The model's parameters get no gradient.
    """
    if epsilon < 0 or steps < 0:
        raise ValueError(f"epsilon and steps must be >= 0, got {epsilon!r} and {steps!r}")
    if bool((x < 0).any()):
        raise ValueError("smoothadv needs images with non-negative pixels")
    x = x.detach()
    flow_v, flow_h = zero_flow(x)
    if epsilon == 0 or steps == 0 or len(x) == 0:
        return x.clone(), (flow_v, flow_h)
    b = x.shape[0]
    step = 2.0 * epsilon / steps
    nv = flow_v[0].numel()
    for _ in range(steps):
        moved = apply_flow(x, flow_v, flow_h).detach().requires_grad_(True)
        logits = model(sample_noise(moved))
        loss = smoothed_cross_entropy(logits.view(b, num_noise, -1), labels).sum()
        (grad,) = torch.autograd.grad(loss, moved)
        gv, gh = flow_gradient(x, grad)
        norm = flow_l1_norm(gv, gh).clamp(min=1e-30).to(x.dtype)[:, None, None, None]
        stepped = torch.cat([(flow_v + step * gv / norm).flatten(1), (flow_h + step * gh / norm).flatten(1)], 1)
        target = project_l1_ball(stepped, epsilon)
        target_v, target_h = target[:, :nv].view_as(flow_v), target[:, nv:].view_as(flow_h)
        flow_v, flow_h = nonnegative_step(x, flow_v, flow_h, target_v, target_h, epsilon)
    return apply_flow(x, flow_v, flow_h).detach(), (flow_v.detach(), flow_h.detach())
