"""What a training run needs besides its method: :class:`TrainConfig` (optimizer, epochs, data order,
noise, test set, checkpoint, logging, processes) and the checks of it and of the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core import noises
from ..infra.distributed import DistContext
from .method import TrainingMethod

from ..infra.options import KEEP
from . import schedules
from .options import (BATCH, EPOCHS, LR, MOMENTUM, OPTIMIZER, OPTIMIZERS, SCHEDULE, SEED, TRAIN_SIZE,  # noqa: F401
                      WEIGHT_DECAY, keyword)


def _kept(*options) -> tuple[str, ...]:
    """The train_args keys of ``options`` that a resumed run must keep (their ``resume`` is KEEP)."""
    return tuple(keyword(o) for o in options if o.resume == KEEP)


# train_args a resumed run must keep: the noise, and every run option declared KEEP (EPOCHS is FREE: that is how
# a run is extended, except under the schedules whose shape depends on it, see schedules.check_resume;
# world_size, not an option, may change too)
RESUME_FIXED = (("noise", "sigma") + _kept(LR, BATCH, SEED, MOMENTUM, WEIGHT_DECAY, OPTIMIZER, TRAIN_SIZE)
                + ("augment",) + _kept(*SCHEDULE))


@dataclass
class TrainConfig:
    """The settings of :func:`wsmooth_ext.training.keywords.train` other than the method (see its docstring)."""

    noise: str
    sigma: float
    epochs: int
    lr: float = 0.001
    batch_size: int = 128
    seed: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    augment: bool = False
    lr_schedule: str = "constant"  # the learning-rate schedule and the sigma warm-up: training/schedules.py
    lr_warmup: float = 0.0
    lr_div: float = 25.0
    lr_step: int = 30
    lr_gamma: float = 0.1
    sigma_warmup: int = 0
    sigma_warmup_start: float = 0.1
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    checkpoint_path: str | Path | None = None
    resume: bool = False
    progress: bool = True
    metadata: dict | None = None
    log: Callable[[str], None] | None = None
    dist_ctx: DistContext | None = None

    @property
    def ctx(self) -> DistContext:
        return self.dist_ctx or DistContext()

    @property
    def noise_sigma(self) -> float:
        return float(self.sigma) if self.noise != noises.NONE else 0.0

    def lr_at(self, epoch: int, batch: int, batches: int) -> float:
        """The learning rate of 0-based ``batch`` (of ``batches``) in 0-based ``epoch``."""
        return schedules.learning_rate(self.lr, self.lr_schedule, epoch, batch, batches, self.epochs,
                                       warmup=self.lr_warmup, div=self.lr_div, step=self.lr_step, gamma=self.lr_gamma)

    def sigma_at(self, epoch: int) -> float:
        """The training noise's sigma in 0-based ``epoch`` (:attr:`noise_sigma` after the warm-up)."""
        return schedules.epoch_sigma(self.noise_sigma, self.sigma_warmup, self.sigma_warmup_start, epoch)

    def record(self, train_size: int) -> dict:
        """The run's part of the checkpoint's ``train_args``."""
        return {"noise": self.noise, "sigma": self.noise_sigma, "epochs": self.epochs, "lr": float(self.lr),
                "batch_size": self.batch_size, "seed": self.seed, "momentum": float(self.momentum),
                "weight_decay": float(self.weight_decay), "optimizer": self.optimizer, "train_size": train_size,
                "augment": bool(self.augment), "lr_schedule": self.lr_schedule, "lr_warmup": float(self.lr_warmup),
                "lr_div": float(self.lr_div), "lr_step": self.lr_step, "lr_gamma": float(self.lr_gamma),
                "sigma_warmup": self.sigma_warmup, "sigma_warmup_start": float(self.sigma_warmup_start),
                # recorded, not fixed: a run may be resumed with another number of processes
                "world_size": self.ctx.world_size}

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


def check_data(model, images, labels) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("train_images must be a float tensor [N, C, H, W] in [0, 1]")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"train_labels must be a 1-D tensor with one label per image ({len(images)})")
    if len(images) == 0:
        raise ValueError("train_images is empty")


def check_noise(config: TrainConfig, method: TrainingMethod, params, images: torch.Tensor) -> None:
    """The noise, and whether the method can train with it on these images."""
    if config.noise != noises.NONE:
        noises.get(config.noise)
        noises.check_sigma(config.sigma)
    elif method.needs_noise:
        raise ValueError(f"{method.title} needs a smoothing noise, not noise='none'")
    method.check(params, config.noise, images)


def check_numbers(c: TrainConfig, images: torch.Tensor) -> None:
    """The run's numbers and optimizer, each checked by its one declaration (training/options.py) under the
    keyword the caller used; whole numbers given as floats (5.0) become ints."""
    for option, field in ((EPOCHS, "epochs"), (BATCH, "batch_size"), (SEED, "seed"), (LR, "lr"),
                          (MOMENTUM, "momentum"), (WEIGHT_DECAY, "weight_decay"), (OPTIMIZER, "optimizer")):
        setattr(c, field, option.check(getattr(c, field), field))
    for option in SCHEDULE:  # keyword = field = option name
        setattr(c, option.name, option.check(getattr(c, option.name), option.name))
    schedules.check(c, c.noise)
    if (c.test_images is None) != (c.test_labels is None):
        raise ValueError("give both test_images and test_labels, or neither")
    if c.test_images is not None and (c.test_images.shape[1:] != images.shape[1:]
                                      or len(c.test_labels) != len(c.test_images)):
        raise ValueError(f"test_images {tuple(c.test_images.shape)} / test_labels {tuple(c.test_labels.shape)} do "
                         f"not match train_images {tuple(images.shape)}")


def check_run(c: TrainConfig) -> None:
    if c.resume and c.checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path")
    if c.dist_ctx is not None:
        if not isinstance(c.dist_ctx, DistContext):
            raise ValueError(f"dist_ctx must be a wsmooth_ext.infra.distributed.DistContext, got {type(c.dist_ctx).__name__}")
        if c.dist_ctx.enabled and c.batch_size < c.dist_ctx.world_size:
            # every global batch would leave a process without a single example: surely a mistake
            raise ValueError(f"batch_size {c.batch_size} is smaller than the number of processes "
                             f"{c.dist_ctx.world_size}; each process needs at least one example of each batch")
