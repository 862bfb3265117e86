"""``noise``: cross-entropy on noisy copies, the paper's training (one copy per example by default)."""

from __future__ import annotations

from dataclasses import dataclass

from .common import noise_loss, noisy_logits, num_noise
from .method import Batch, TrainingMethod


@dataclass(frozen=True)
class NoiseParams:
    num_noise: int = num_noise(1)


def losses(params: NoiseParams, batch: Batch):
    logits, per_example = noisy_logits(batch, batch.x)
    return logits, noise_loss(per_example, batch.y)


METHOD = TrainingMethod("noise", "method", NoiseParams, losses, "cross-entropy on noisy copies, the paper's")
