"""``consistency`` (Jeong & Shin 2020): m noisy copies per example; per example
loss = mean_j CE(f(x̃_j), y) + λ·mean_j KL(p̄ ‖ p_j) + η·H(p̄), p_j = softmax(f(x̃_j)), p̄ = mean_j p_j."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .common import noise_loss, noisy_logits, num_noise
from .method import Batch, TrainingMethod
from .params import WEIGHT_MAX, hyper


@dataclass(frozen=True)
class ConsistencyParams:
    num_noise: int = num_noise(2, low=2)
    # 3 kept noise training's accuracy at σ 0.01 on mnist5k, 10 lost 5 points
    consistency_lambda: float = hyper(3.0, "weight of the KL(mean prediction || copy) term", low=0, high=WEIGHT_MAX,
                                      metavar="LAMBDA")
    consistency_eta: float = hyper(0.5, "weight of the entropy of the mean prediction", low=0, high=WEIGHT_MAX,
                                   metavar="ETA")


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


def losses(params: ConsistencyParams, batch: Batch):
    logits, per_example = noisy_logits(batch, batch.x)
    return logits, consistency_loss(per_example, batch.y, params.consistency_lambda, params.consistency_eta)


METHOD = TrainingMethod("consistency", "method", ConsistencyParams, losses,
                        "consistency regularization, Jeong & Shin 2020", needs_noise=True)
