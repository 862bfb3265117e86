"""The paper's CIFAR-10 augmentation: random crops of the zero-padded image and horizontal flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENT_PAD = 4  # random crops of the zero-padded image shift it by up to 4 pixels each way


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = AUGMENT_PAD) -> torch.Tensor:
    """The paper's CIFAR-10 augmentation: a random crop of the image zero-padded by ``pad`` pixels (a shift
    by −pad..pad pixels each way) and a horizontal flip with probability 1/2, drawn per image from
    ``generator`` (on the CPU, so a given generator state gives the same batch on any device)."""
    shifts, flips = draw_augmentation(len(x), generator, pad)
    return apply_augmentation(x, shifts, flips, pad)


def draw_augmentation(b: int, generator: torch.Generator, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    # separate from applying them: under DDP every rank draws for the whole global batch (so the generator
    # advances as in a single process) and applies the draws of its own rows only
    shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    return shifts, flips


def apply_augmentation(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    if len(x) == 0:  # a rank's empty share of a short last batch (torch.stack refuses an empty list)
        return x
    _, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])
    return torch.where(flips.to(x.device)[:, None, None, None], out.flip(-1), out)
