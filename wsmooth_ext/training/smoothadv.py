"""``smoothadv`` (Salman et al. 2019) in the Wasserstein threat model: find x' = x + s·div(δ), ‖δ‖₁ ≤ ε, x' ≥ 0,
that maximizes the cross-entropy of the soft smoothed classifier (mean softmax over the m noise draws) by k
projected gradient steps on δ, then train with cross-entropy on the noisy copies of x'. The attack is batched
(no per-example Python loops) and draws nothing at random beyond the copies' noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..core.flows import apply_flow, flow_gradient, flow_l1_norm, nonnegative_step, project_l1_ball, zero_flow
from .common import noise_loss, noisy_logits, num_noise, smoothed_cross_entropy
from .method import Batch, TrainingMethod
from .params import BIG, RADIUS_MAX, hyper


@dataclass(frozen=True)
class SmoothAdvParams:
    num_noise: int = num_noise(2)
    adv_epsilon: float = hyper(0.02, "L1 budget of the flow plan", low=0, high=RADIUS_MAX, metavar="EPS",
                               units="mass-normalized units (an upper bound on the W1 distance, L1 ground metric)")
    adv_steps: int = hyper(4, "projected gradient steps per batch", low=1, high=BIG, integer=True, metavar="K")
    adv_warmup: int = hyper(10, "epochs over which the budget rises linearly to --adv-epsilon", low=0, high=BIG,
                            integer=True, metavar="EPOCHS", default_note="; 0: full budget from the start")


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


def losses(params: SmoothAdvParams, batch: Batch):
    batch.model.eval()  # the attack sees the model as certification will (the bare one: no DDP hooks)
    eps = smoothadv_epsilon(params.adv_epsilon, params.adv_warmup, batch.epoch)
    x, _ = smoothadv_perturb(batch.model, batch.x, batch.y, batch.noisy, batch.copies, eps, params.adv_steps)
    batch.model.train()
    logits, per_example = noisy_logits(batch, x)
    return logits, noise_loss(per_example, batch.y)


def check(params, noise: str, images: torch.Tensor) -> None:
    if images.shape[-2] < 2 or images.shape[-1] < 2:
        raise ValueError(f"method smoothadv needs images of at least 2x2 pixels, got {tuple(images.shape[1:])}")
    if bool((images < 0).any()):
        raise ValueError("method smoothadv needs images with non-negative pixels (the attack keeps x' >= 0)")


METHOD = TrainingMethod("smoothadv", "method", SmoothAdvParams, losses,
                        "Salman et al. 2019, Wasserstein threat model", needs_noise=True, check=check)
