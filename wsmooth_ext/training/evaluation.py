"""Accuracy of a model on a test set, clean or under one noise draw per image (keyed by dataset index)."""

from __future__ import annotations

import torch
from torch import nn

from ..core.noises import add_noise


def device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, noise: str = "none",
             sigma: float = 0.0, seed: int = 0, sample_offset: int = 0, batch_size: int = 1000) -> float:
    """Accuracy (fraction) of ``model`` on ``images``, clean or with one noise draw per image (keys = indices)."""
    correct = count_correct(model, images, labels, torch.arange(len(images)), noise=noise, sigma=sigma,
                            seed=seed, sample_offset=sample_offset, batch_size=batch_size)
    return correct / max(len(images), 1)


@torch.no_grad()
def count_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, *,
                  noise: str = "none", sigma: float = 0.0, seed: int = 0, sample_offset: int = 0,
                  batch_size: int = 1000) -> int:
    """Number of ``indices`` that ``model`` classifies correctly (noise keyed by dataset index, so an image's
    draw does not depend on which rank evaluates it)."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    correct = 0
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        x = add_noise(images[idx].to(device), noise, sigma, seed=seed, keys=idx, sample_offset=sample_offset)
        correct += int((model(x).argmax(1).cpu() == labels[idx]).sum())
    model.train(was_training)
    return correct
