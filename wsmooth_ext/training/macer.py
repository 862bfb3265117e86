"""``macer`` (Zhai et al. 2020) with this package's certificates: the soft smoothed classifier's
cross-entropy plus λ·max(0, 1 − ξ/γ) on examples the (β-sharpened) soft smoothed classifier gets right, ξ its
certified noise-space L1 radius (the distribution's ``macer_radius`` in core/distributions.py: −λ_s·ln(2(1 − p_y))
for Laplace noise, 2λ_s(p_y − 1/2) for uniform, λ_s the noise scale) and γ the target radius."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import distributions
from .common import noisy_logits, num_noise, smoothed_cross_entropy
from .method import Batch, TrainingMethod
from .params import RADIUS_MAX, RADIUS_MIN, WEIGHT_MAX, hyper

_MASS = "noise-space L1, mass-normalized units"


@dataclass(frozen=True)
class MacerParams:
    num_noise: int = num_noise(8)
    macer_lambda: float = hyper(1.0, "weight of the radius hinge max(0, 1 - radius/gamma)", low=0, high=WEIGHT_MAX,
                                metavar="LAMBDA")
    macer_gamma: float = hyper(0.03, "target certified radius", units=_MASS, low=RADIUS_MIN, high=RADIUS_MAX,
                               metavar="GAMMA")
    # β scales logits inside a softmax: beyond 1e4 it is a hard argmax already, below 1e-3 a constant
    macer_beta: float = hyper(16.0, "inverse softmax temperature in the radius term", low=1e-3, high=1e4,
                              metavar="BETA")


def macer_radius(p: torch.Tensor, q: torch.Tensor, distribution: str, scale: float) -> torch.Tensor:
    """The certified noise-space L1 radius ξ for top-class probability p (q = 1 − p, given separately so that
    it keeps its precision near p = 1), from the distribution table: −scale·ln(2q) for "laplace" (the tight
    certificate), 2·scale·(p − 1/2) = scale·(p − q) for "uniform"; negative below p = 1/2 (MACER's hinge then
    pushes harder)."""
    return distributions.get(distribution).macer_radius(p, q, scale)


def macer_loss(logits: torch.Tensor, labels: torch.Tensor, lam: float, gamma: float, beta: float,
               distribution: str, scale: float) -> torch.Tensor:
    """MACER's loss per example: smoothed CE + λ·1[argmax p̂ = y]·max(0, 1 − ξ/γ), with p̂ = mean_j softmax(β·z_j)
    and ξ = :func:`macer_radius` of p̂_y (1 − p̂_y summed from the other classes); logits [B, m, K] → [B].
    The hinge is divided by γ so that λ is unitless."""
    sharp = torch.softmax(beta * logits, dim=-1).mean(1)  # [B, K]
    p = sharp.gather(1, labels[:, None]).squeeze(1)
    others = torch.ones_like(sharp).scatter(1, labels[:, None], 0.0)
    q = (sharp * others).sum(1)
    xi = macer_radius(p, q, distribution, scale)
    correct = sharp.argmax(1) == labels
    hinge = torch.where(correct, (1 - xi / gamma).clamp(min=0), torch.zeros_like(xi))
    return smoothed_cross_entropy(logits, labels) + lam * hinge


def losses(params: MacerParams, batch: Batch):
    logits, per_example = noisy_logits(batch, batch.x)
    return logits, macer_loss(per_example, batch.y, params.macer_lambda, params.macer_gamma, params.macer_beta,
                              batch.family.distribution, batch.family.scale(batch.sigma))


METHOD = TrainingMethod("macer", "method", MacerParams, losses, "Zhai et al. 2020", needs_noise=True)
