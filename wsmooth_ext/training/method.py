"""What a training method is: :class:`TrainingMethod` (declared once per module) and :class:`Batch` (what its
loss function sees). The loop (:mod:`.loop`) knows methods only through these two."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Batch:
    """One rank's share of a training batch. ``model`` is the bare model (attacks use it), ``net`` what the
    training forward pass goes through (the model or its DistributedDataParallel wrapper). ``noisy(images)``
    returns the ``copies`` noisy copies of every image ([B·copies, C, H, W], row b·copies + j), differentiably;
    ``family`` is the noise family (None without noise) and ``sigma`` its σ in this epoch (below the run's σ
    during a sigma warm-up, :mod:`.schedules`)."""

    model: nn.Module
    net: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    keys: torch.Tensor
    epoch: int
    copies: int
    noisy: Callable[[torch.Tensor], torch.Tensor]
    family: object
    sigma: float


def _no_check(params, noise: str, images: torch.Tensor) -> None:
    return None


def _no_lines(params, epochs: int) -> list[str]:
    return []


def _no_info(params, epoch: int) -> dict:
    return {}


def _noise_label(params, noise: str, epoch: int) -> str:
    return noise


@dataclass(frozen=True)
class TrainingMethod:
    """One training method.

    ``name``: its name, the value of the ``train()`` keyword (and CLI option) ``option`` that selects it
    ("method" or "adversarial", see :data:`.registry.OPTIONS`). ``params``: its hyper-parameter dataclass
    (fields made with :func:`.params.hyper`). ``losses(params, batch)`` → (logits of the training copies
    [B·copies, K], loss per example [B]): the whole method. ``summary``: a phrase for --help.
    ``needs_noise``: refuses noise "none"; ``refuses_noise``: trains without noise only (then ``check`` says
    why). ``check(params, noise, images)``: further ValueErrors on the
    data. ``record(params)``: its entries of the checkpoint's ``train_args`` (default: the fields).
    ``start_lines(params, epochs)``: lines logged before the first epoch; ``epoch_info(params, epoch)``:
    entries added to each history row; ``label(params, noise, epoch)``: what the training accuracy is measured
    under; ``describe(train_args)``: one line saying how a checkpoint's model was trained, or None."""

    name: str
    option: str
    params: type
    losses: Callable[[object, Batch], tuple[torch.Tensor, torch.Tensor]]
    summary: str
    needs_noise: bool = False
    refuses_noise: bool = False
    check: Callable = _no_check
    record: Callable[[object], dict] = dataclasses.asdict
    start_lines: Callable = _no_lines
    epoch_info: Callable = _no_info
    label: Callable = _noise_label
    describe: Callable[[dict], str | None] = lambda train_args: None

    @property
    def title(self) -> str:
        """How messages name it: "method consistency", "adversarial training with flow"."""
        return f"method {self.name}" if self.option == "method" else f"{self.option} training with {self.name}"


def copies_of(params) -> int:
    """Noisy copies per example and epoch: the ``num_noise`` hyper-parameter, 1 for methods without one."""
    return getattr(params, "num_noise", 1)
