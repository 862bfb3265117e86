"""Training a base classifier under smoothing noise (paper §6: train on the same noise you certify with).

:func:`train` is the keyword interface to :mod:`wsmooth_ext.training`: it builds the run's
:class:`~wsmooth_ext.training.TrainConfig`, picks the method and its hyper-parameters from the registry
(:data:`wsmooth_ext.training.METHODS`), checks everything, and hands them to the one loop
(:func:`wsmooth_ext.training.train_loop`; its module docstring explains the noise draws, resume exactness and
data-parallel training).

``method`` (:mod:`wsmooth_ext.training`, docs/math.md §Certified training): "noise" (cross-entropy on
``num_noise`` noisy copies per example, default 1: the paper's training), "consistency" (Jeong & Shin
2020: ``num_noise`` copies, default 2, weights ``consistency_lambda`` λ = 3 and ``consistency_eta``
η = 0.5) or "smoothadv" (Salman et al. 2019 on flow plans: ``adv_steps`` k = 4 projected gradient steps
in the L1 ball of radius ``adv_epsilon`` ε = 0.02 (mass-normalized), ε rising linearly over the first
``adv_warmup`` = 10 epochs, ``num_noise`` copies, default 2) or "macer" (Zhai et al. 2020: smoothed
cross-entropy + ``macer_lambda`` λ = 1 times a hinge on the certified radius with target ``macer_gamma``
γ = 0.03 (noise-space L1, mass-normalized) and inverse temperature ``macer_beta`` β = 16; ``num_noise``
default 8). None means the default; hyper-parameters of
other methods must be None. The j-th copy of an example in epoch e is noise sample e·m + j (m =
``num_noise``). The method and its settings join those a resumed run must keep.

``adversarial`` (:mod:`wsmooth_ext.training.adversarial`, docs/attacks.md §Adversarial training): "sinkhorn",
"frank-wolfe" or "flow" trains a plain base model (``noise="none"``, method "noise") on Wasserstein
adversarial examples that the attack finds against the current weights: ``adv_attack_steps`` (10) steps
at radius ε, ε growing geometrically from ``adv_eps``/10 to ``adv_eps`` (0.1, in the attack's own units)
over ``adv_eps_warmup`` (10) epochs; loss (1 − w)·CE(x') + w·CE(x), w = ``adv_clean_weight`` (0). These
settings, too, are fixed for a resumed run; history rows then also hold ``adv_eps``, the epoch's radius,
and train_noisy_acc is the accuracy on the adversarial examples.

``lr_schedule`` (:mod:`wsmooth_ext.training.schedules` has the formulas): "constant" (the default, ``lr`` at
every step, as before schedules existed), "step" (×``lr_gamma`` every ``lr_step`` epochs), "cosine" (from
``lr`` to 0 over the run, per batch) or "one-cycle" (linear from lr/``lr_div`` to ``lr`` over ``lr_warmup``
epochs, then a cosine to 0); ``lr_warmup`` > 0 with the others: a linear warm-up from lr/``lr_div`` over that
many epochs (fractions allowed). ``sigma_warmup`` K > 0: the training noise's σ rises linearly from
``sigma_warmup_start``·σ in the first epoch to σ in epoch K + 1 (the same draws, scaled); the test accuracy
under noise uses σ. All are fixed for a resumed run, and under cosine and one-cycle so is ``epochs`` (their
shape depends on it: a finished run cannot be extended). History rows then also hold ``lr`` (that of the
epoch's first step) where the learning rate moves and ``sigma`` (the epoch's) with a sigma warm-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..infra.distributed import DistContext
from ..core.noises import add_noise
from . import config as _config
from .augment import AUGMENT_PAD, augment_batch
from .config import TrainConfig
from .options import OPTIMIZERS
from .evaluation import evaluate
from .loop import train_loop
from .registry import choose
from .seeds import STREAM_SHUFFLE as _STREAM_SHUFFLE  # noqa: F401 - imported from here by tests
from .seeds import derive_seed

__all__ = ["AUGMENT_PAD", "OPTIMIZERS", "add_noise", "augment_batch", "derive_seed", "evaluate", "train"]


def train(model: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor, *, noise: str,
          sigma: float, epochs: int, lr: float = 0.001, batch_size: int = 128, seed: int = 0,
          momentum: float = 0.9, weight_decay: float = 5e-4, test_images: torch.Tensor | None = None,
          test_labels: torch.Tensor | None = None, checkpoint_path: str | Path | None = None,
          resume: bool = False, progress: bool = True, optimizer: str = "sgd", augment: bool = False,
          metadata: dict | None = None, log: Callable[[str], None] | None = None,
          dist_ctx: DistContext | None = None, method: str = "noise", adversarial: str = "none",
          lr_schedule: str = "constant", lr_warmup: float = 0.0, lr_div: float = 25.0, lr_step: int = 30,
          lr_gamma: float = 0.1, sigma_warmup: int = 0, sigma_warmup_start: float = 0.1,
          **hyper_parameters) -> list[dict]:
    """Train ``model`` in place under ``noise`` of std ``sigma``; return the per-epoch history.

    Defaults are the paper's optimizer: SGD, lr 0.001, momentum 0.9, weight decay 5e-4, batches of 128
    (``optimizer="adam"`` uses Adam with ``lr`` and ``weight_decay``; ``momentum`` is then unused).
    ``augment=True`` applies the paper's CIFAR-10 augmentation (:func:`augment_batch`) before the noise.
    After each epoch: prints clean and noisy test accuracy (one draw per test image, the same draws every
    epoch so the figures are comparable) and, with ``checkpoint_path``, writes a checkpoint holding the
    optimizer state. ``resume=True`` continues from that checkpoint if it exists (else starts afresh); the
    result equals an uninterrupted run. ``metadata`` (e.g. ``{"dataset": "mnist5k"}``) goes into the
    checkpoint. History rows: epoch (1-based), loss (the method's loss), train_noisy_acc (the share of the
    noisy training copies classified correctly), test_clean_acc, test_noisy_acc (None without a test set),
    seconds.

    ``method`` and ``adversarial`` with their hyper-parameters: see the module docstring.
    ``lr_schedule``, ``lr_warmup``, ``lr_div``, ``lr_step``, ``lr_gamma``, ``sigma_warmup`` and
    ``sigma_warmup_start``: the learning-rate schedule and the sigma warm-up, see the module docstring.

    ``hyper_parameters``: those of the chosen method (``num_noise=4``, ``consistency_lambda=3``, ...), as its
    dataclass in :data:`wsmooth_ext.training.METHODS` declares them, with defaults and ranges (None: the
    default); one the method does not have is refused, naming the methods that have it.

    ``dist_ctx`` (from :func:`wsmooth_ext.infra.distributed.context_from_env`, under torchrun): data-parallel
    training with DistributedDataParallel; every rank calls ``train`` with the same arguments and the same
    initial weights. It joins the process group (gloo on CPU, NCCL on GPU) unless the caller already has;
    leaving it is the caller's job. Each global batch is split across the ranks (see the module docstring),
    the test accuracies are computed on ``indices[rank::K]`` per rank and summed, only rank 0 logs and writes
    the checkpoint (the others wait for it, so it is complete when ``train`` returns anywhere), and with
    ``resume`` every rank reads the same checkpoint (on multi-node runs it must be on a shared file system).
    """
    chosen, params = choose({"method": method, "adversarial": adversarial}, hyper_parameters, noise)
    config = TrainConfig(noise=noise, sigma=sigma, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         momentum=momentum, weight_decay=weight_decay, optimizer=optimizer, augment=augment,
                         lr_schedule=lr_schedule, lr_warmup=lr_warmup, lr_div=lr_div, lr_step=lr_step,
                         lr_gamma=lr_gamma, sigma_warmup=sigma_warmup, sigma_warmup_start=sigma_warmup_start,
                         test_images=test_images, test_labels=test_labels, checkpoint_path=checkpoint_path,
                         resume=resume, progress=progress, metadata=metadata, log=log, dist_ctx=dist_ctx)
    _config.check_data(model, train_images, train_labels)
    _config.check_noise(config, chosen, params, train_images)
    _config.check_numbers(config, train_images)
    _config.check_run(config)
    return train_loop(model, train_images, train_labels, config, chosen, params)
