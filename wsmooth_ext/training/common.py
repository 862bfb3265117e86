"""Pieces the noise-based methods share: the number of noisy copies, the forward pass over them, and the
cross-entropies of the copies and of the soft smoothed classifier."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .method import Batch
from .params import hyper

# largest number of copies per example: sample indices epoch·m + j must stay below the reserved vote range
MAX_NUM_NOISE = 1024


def num_noise(default: int, low: int = 1):
    """The ``num_noise`` field: noisy copies per example and epoch."""
    return hyper(default, "noisy copies per image and epoch", low=low, high=MAX_NUM_NOISE, integer=True,
                 metavar="M")


def noisy_logits(batch: Batch, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B·m, K] of the m noisy copies of ``images`` through ``batch.net``, the same viewed [B, m, K])."""
    logits = batch.net(batch.noisy(images))
    return logits, logits.view(len(images), batch.copies, logits.shape[-1])


def noise_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the copies, per example: logits [B, m, K], labels [B] → [B]."""
    b, m, k = logits.shape
    ce = F.cross_entropy(logits.reshape(b * m, k), labels.repeat_interleave(m), reduction="none")
    return ce.view(b, m).mean(1)


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−log of the soft smoothed classifier's probability of the label, mean_j softmax(logits_j)[y], per
    example: logits [B, m, K] → [B]."""
    _, m, _ = logits.shape
    logp = F.log_softmax(logits, dim=-1).gather(-1, labels[:, None, None].expand(-1, m, 1)).squeeze(-1)
    return -(torch.logsumexp(logp, dim=1) - math.log(m))
