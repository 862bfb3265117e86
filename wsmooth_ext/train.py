"""Training a base classifier under smoothing noise (paper §6: train on the same noise you certify with).

Every example of every batch gets its own fresh noise draw (the paper's code shares one draw across a batch;
we do not). Draws come from the counter-based ops: image i of the training set (key = its dataset index) in
epoch e uses sample indices e·m .. e·m + m − 1 (m noisy copies per example, 1 unless the training method asks
for more: :mod:`wsmooth_ext.methods`) of a seed derived from ``seed``, so the noise — like the batch order, drawn from
a generator seeded by (seed, epoch) — is a pure function of (seed, epoch, index). That is what makes a
resumed run equal an uninterrupted one: nothing random is carried between epochs except model and optimizer
state, and both are checkpointed after every epoch. Adversarial training (:mod:`wsmooth_ext.adversarial`)
keeps this: its attacks draw nothing at random, so the examples are a function of the weights, the batch and
the epoch's radius.

Under torchrun (``dist_ctx`` with world_size K > 1) the model is wrapped in DistributedDataParallel and every
global batch of ``batch_size`` examples — the same examples, in the same order, as in a single-process run —
is split across the ranks: rank r takes positions r, r+K, r+2K, ... of it. Each rank's loss is its examples'
summed loss times K / (global batch size), so DDP's average over ranks is exactly the gradient of the global
batch's mean loss, even when the slices differ in size (last batch) or one is empty. Noise and augmentation
are drawn per dataset index / per position of the global batch, so every example gets the draw it would get
in a single process: the run equals single-process training up to float summation order (models with
BatchNorm excepted: their batch statistics are per rank). Rank 0 alone prints and writes checkpoints.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import noises
from .adversarial import LEGACY_ADVERSARIAL, adversarial_settings, describe_adversarial, make_adversary
from .methods import (LEGACY_SETTINGS, METHODS, consistency_loss, macer_loss, method_settings, noise_loss,
                      smoothadv_epsilon, smoothadv_perturb)
from .checkpoint import load_training_state, save_checkpoint
from .distributed import DistContext, init_process_group
from .noises import add_noise
from .progress import progress_bar

__all__ = ["METHODS", "OPTIMIZERS", "add_noise", "augment_batch", "derive_seed", "evaluate", "train"]

OPTIMIZERS = ("sgd", "adam")
_MASK63 = (1 << 63) - 1
# streams of derive_seed: the three independent random streams of a training run
_STREAM_TRAIN_NOISE, _STREAM_EVAL_NOISE, _STREAM_SHUFFLE, _STREAM_AUGMENT = 1, 2, 3, 4
AUGMENT_PAD = 4  # random crops of the zero-padded image shift it by up to 4 pixels each way
# settings that must not change when a run is resumed (epochs may: that is how a run is extended)
_RESUME_FIXED = ("noise", "sigma", "lr", "batch_size", "seed", "momentum", "weight_decay", "optimizer",
                 "train_size", "augment", *LEGACY_SETTINGS, *LEGACY_ADVERSARIAL)
# what a checkpoint that predates a setting was trained with
_LEGACY = {**LEGACY_SETTINGS, **LEGACY_ADVERSARIAL}


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed for sub-stream ``parts`` of ``seed`` (SplitMix64 finalizer over the parts)."""
    z = seed & 0xFFFFFFFFFFFFFFFF
    for p in parts:
        z = (z + 0x9E3779B97F4A7C15 * (p + 1)) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
    return z & _MASK63


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = AUGMENT_PAD) -> torch.Tensor:
    """The paper's CIFAR-10 augmentation: a random crop of the image zero-padded by ``pad`` pixels (a shift
    by −pad..pad pixels each way) and a horizontal flip with probability 1/2, drawn per image from
    ``generator`` (on the CPU, so a given generator state gives the same batch on any device)."""
    shifts, flips = _draw_augmentation(len(x), generator, pad)
    return _apply_augmentation(x, shifts, flips, pad)


def _draw_augmentation(b: int, generator: torch.Generator, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    # separate from applying them: under DDP every rank draws for the whole global batch (so the generator
    # advances as in a single process) and applies the draws of its own rows only
    shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    return shifts, flips


def _apply_augmentation(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    if len(x) == 0:  # a rank's empty share of a short last batch (torch.stack refuses an empty list)
        return x
    _, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])
    return torch.where(flips.to(x.device)[:, None, None, None], out.flip(-1), out)


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, noise: str = "none",
             sigma: float = 0.0, seed: int = 0, sample_offset: int = 0, batch_size: int = 1000) -> float:
    """Accuracy (fraction) of ``model`` on ``images``, clean or with one noise draw per image (keys = indices)."""
    correct = _count_correct(model, images, labels, torch.arange(len(images)), noise=noise, sigma=sigma,
                             seed=seed, sample_offset=sample_offset, batch_size=batch_size)
    return correct / max(len(images), 1)


@torch.no_grad()
def _count_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, *,
                   noise: str = "none", sigma: float = 0.0, seed: int = 0, sample_offset: int = 0,
                   batch_size: int = 1000) -> int:
    """Number of ``indices`` that ``model`` classifies correctly (noise keyed by dataset index, so an image's
    draw does not depend on which rank evaluates it)."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    correct = 0
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        x = add_noise(images[idx].to(device), noise, sigma, seed=seed, keys=idx, sample_offset=sample_offset)
        correct += int((model(x).argmax(1).cpu() == labels[idx]).sum())
    model.train(was_training)
    return correct


def _check_args(model, images, labels, noise, sigma, epochs, lr, batch_size, seed, momentum, weight_decay,
                test_images, test_labels, optimizer, checkpoint_path, resume, dist_ctx, settings, adversarial):
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("train_images must be a float tensor [N, C, H, W] in [0, 1]")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"train_labels must be a 1-D tensor with one label per image ({len(images)})")
    if len(images) == 0:
        raise ValueError("train_images is empty")
    if noise != noises.NONE:
        noises.get(noise)
        noises.check_sigma(sigma)
    elif settings["method"] != "noise":
        raise ValueError(f"method {settings['method']} needs a smoothing noise, not noise='none'")
    if settings["method"] == "smoothadv" and (images.shape[-2] < 2 or images.shape[-1] < 2):
        raise ValueError(f"method smoothadv needs images of at least 2x2 pixels, got {tuple(images.shape[1:])}")
    if settings["method"] == "smoothadv" and bool((images < 0).any()):
        raise ValueError("method smoothadv needs images with non-negative pixels (the attack keeps x' >= 0)")
    attack = adversarial["adversarial"]
    if attack != "none":
        # a plain base model only: smoothed classifiers are trained adversarially by method smoothadv
        if noise != noises.NONE or settings["method"] != "noise":
            raise ValueError(f"adversarial training ({attack}) trains a plain base model: it needs noise='none' "
                             f"and method 'noise', got noise {noise!r}, method {settings['method']!r} (for a "
                             "smoothed classifier use method smoothadv)")
        if settings["num_noise"] != 1:
            raise ValueError(f"adversarial training uses one copy per example, got num_noise {settings['num_noise']}")
        if attack == "flow" and (images.shape[-2] < 2 or images.shape[-1] < 2):
            raise ValueError(f"adversarial training with flow needs images of at least 2x2 pixels, got "
                             f"{tuple(images.shape[1:])}")
        if bool((images < 0).any()) or bool((images > 1).any()) or not bool(torch.isfinite(images).all()):
            raise ValueError(f"adversarial training ({attack}) needs pixel values in [0, 1]: images are mass "
                             "distributions")
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if (test_images is None) != (test_labels is None):
        raise ValueError("give both test_images and test_labels, or neither")
    if test_images is not None and (test_images.shape[1:] != images.shape[1:] or len(test_labels) != len(test_images)):
        raise ValueError(f"test_images {tuple(test_images.shape)} / test_labels {tuple(test_labels.shape)} do "
                         f"not match train_images {tuple(images.shape)}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path")
    if dist_ctx is not None:
        if not isinstance(dist_ctx, DistContext):
            raise ValueError(f"dist_ctx must be a wsmooth_ext.distributed.DistContext, got {type(dist_ctx).__name__}")
        if dist_ctx.enabled and batch_size < dist_ctx.world_size:
            # every global batch would leave a process without a single example: surely a mistake
            raise ValueError(f"batch_size {batch_size} is smaller than the number of processes "
                             f"{dist_ctx.world_size}; each process needs at least one example of each batch")


def _make_optimizer(name, params, lr, momentum, weight_decay):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def train(model: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor, *, noise: str,
          sigma: float, epochs: int, lr: float = 0.001, batch_size: int = 128, seed: int = 0,
          momentum: float = 0.9, weight_decay: float = 5e-4, test_images: torch.Tensor | None = None,
          test_labels: torch.Tensor | None = None, checkpoint_path: str | Path | None = None,
          resume: bool = False, progress: bool = True, optimizer: str = "sgd", augment: bool = False,
          metadata: dict | None = None, log: Callable[[str], None] | None = None,
          dist_ctx: DistContext | None = None, method: str = "noise", num_noise: int | None = None,
          consistency_lambda: float | None = None, consistency_eta: float | None = None,
          adv_epsilon: float | None = None, adv_steps: int | None = None,
          adv_warmup: int | None = None, macer_lambda: float | None = None, macer_gamma: float | None = None,
          macer_beta: float | None = None, adversarial: str = "none", adv_eps: float | None = None,
          adv_eps_warmup: int | None = None, adv_attack_steps: int | None = None,
          adv_clean_weight: float | None = None) -> list[dict]:
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

    ``method`` (:mod:`wsmooth_ext.methods`, docs/math.md §Certified training): "noise" (cross-entropy on
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

    ``adversarial`` (:mod:`wsmooth_ext.adversarial`, docs/attacks.md §Adversarial training): "sinkhorn",
    "frank-wolfe" or "flow" trains a plain base model (``noise="none"``, method "noise") on Wasserstein
    adversarial examples that the attack finds against the current weights: ``adv_attack_steps`` (10) steps
    at radius ε, ε growing geometrically from ``adv_eps``/10 to ``adv_eps`` (0.1, in the attack's own units)
    over ``adv_eps_warmup`` (10) epochs; loss (1 − w)·CE(x') + w·CE(x), w = ``adv_clean_weight`` (0). These
    settings, too, are fixed for a resumed run; history rows then also hold ``adv_eps``, the epoch's radius,
    and train_noisy_acc is the accuracy on the adversarial examples.

    ``dist_ctx`` (from :func:`wsmooth_ext.distributed.context_from_env`, under torchrun): data-parallel
    training with DistributedDataParallel; every rank calls ``train`` with the same arguments and the same
    initial weights. It joins the process group (gloo on CPU, NCCL on GPU) unless the caller already has;
    leaving it is the caller's job. Each global batch is split across the ranks (see the module docstring),
    the test accuracies are computed on ``indices[rank::K]`` per rank and summed, only rank 0 logs and writes
    the checkpoint (the others wait for it, so it is complete when ``train`` returns anywhere), and with
    ``resume`` every rank reads the same checkpoint (on multi-node runs it must be on a shared file system).
    """
    given = {"num_noise": num_noise, "consistency_lambda": consistency_lambda, "consistency_eta": consistency_eta,
             "adv_epsilon": adv_epsilon, "adv_steps": adv_steps, "adv_warmup": adv_warmup,
             "macer_lambda": macer_lambda, "macer_gamma": macer_gamma, "macer_beta": macer_beta}
    settings = method_settings(method, **given)  # ValueError for an unknown method or a bad value
    stray = [k for k, v in given.items() if v is not None and settings[k] is None]
    if stray:
        raise ValueError(f"method {method} does not use {stray}")
    adv_settings = adversarial_settings(adversarial, adv_eps=adv_eps, adv_eps_warmup=adv_eps_warmup,
                                        adv_attack_steps=adv_attack_steps, adv_clean_weight=adv_clean_weight)
    _check_args(model, train_images, train_labels, noise, sigma, epochs, lr, batch_size, seed, momentum,
                weight_decay, test_images, test_labels, optimizer, checkpoint_path, resume, dist_ctx, settings,
                adv_settings)
    ctx = dist_ctx or DistContext()
    log = log or (lambda line: print(line, flush=True))
    if not ctx.is_main:  # one copy of every line, from rank 0
        log, progress = (lambda line: None), False
    sigma = float(sigma) if noise != "none" else 0.0
    train_args = {"noise": noise, "sigma": sigma, "epochs": epochs, "lr": float(lr), "batch_size": batch_size,
                  "seed": seed, "momentum": float(momentum), "weight_decay": float(weight_decay),
                  "optimizer": optimizer, "train_size": len(train_images), "augment": bool(augment),
                  # recorded, not fixed: a run may be resumed with another number of processes
                  "world_size": ctx.world_size, **settings, **adv_settings}
    device = _device_of(model)
    if ctx.enabled:
        _join_group(ctx, device)
    opt = _make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    history: list[dict] = []
    start_epoch, found = 0, False
    if ctx.enabled:
        error = None
        try:
            found = bool(resume and Path(checkpoint_path).exists())
            if found:
                start_epoch, history = _resume(model, opt, checkpoint_path, train_args, device)
        except Exception as exc:  # noqa: BLE001 - re-raised by _agree once the peers know
            error = exc
        # every rank must continue from the same epoch: a rank that cannot see the checkpoint (no shared
        # file system) or fails to read it stops all of them instead of leaving them waiting
        _agree(ctx, device, error, start_epoch, f"the processes found different checkpoints at {checkpoint_path} "
               "(is it on a file system all nodes share?)")
    elif resume and Path(checkpoint_path).exists():
        start_epoch, history = _resume(model, opt, checkpoint_path, train_args, device)
        found = True
    if resume and found:
        log(f"resuming from {checkpoint_path} after epoch {start_epoch}")
    # DDP broadcasts rank 0's weights at construction (equal anyway: same seed, same checkpoint) and averages
    # gradients in backward; evaluation and checkpoints use the bare model
    net = _wrap_ddp(model, device) if ctx.enabled else model

    noise_seed = derive_seed(seed, _STREAM_TRAIN_NOISE)
    eval_seed = derive_seed(seed, _STREAM_EVAL_NOISE)
    n = len(train_images)
    test_shard = torch.arange(len(test_images))[ctx.rank::ctx.world_size] if test_images is not None else None
    copies = settings["num_noise"]
    family = noises.get(noise) if noise != noises.NONE else None
    adversary = make_adversary(adv_settings)  # None unless adversarial training
    if adversary is not None and start_epoch < epochs:
        log(describe_adversarial(adv_settings))
        if epochs < adv_settings["adv_eps_warmup"]:
            log(f"note: training ends (epoch {epochs}) before the warm-up (epoch {adv_settings['adv_eps_warmup']}); "
                f"the last epoch uses eps {adversary.epsilon(epochs - 1):.4g}")
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, _STREAM_SHUFFLE, epoch)))
        loss_sum, correct = 0.0, 0
        augment_rng = torch.Generator().manual_seed(derive_seed(seed, _STREAM_AUGMENT, epoch))
        batches = progress_bar(range(0, n, batch_size), total=(n + batch_size - 1) // batch_size,
                               desc=f"epoch {epoch + 1}/{epochs}", enabled=progress, unit="batch")
        for start in batches:
            batch = order[start:start + batch_size]  # the global batch, as in a single process
            mine = slice(ctx.rank, None, ctx.world_size)  # this rank's positions in it (all of it if K = 1)
            idx = batch[mine]
            x = train_images[idx].to(device)
            y = train_labels[idx].to(device)
            if augment:
                shifts, flips = _draw_augmentation(len(batch), augment_rng, AUGMENT_PAD)
                x = _apply_augmentation(x, shifts[mine], flips[mine], AUGMENT_PAD)
            # keys = dataset indices, samples epoch·m .. epoch·m + m − 1: fresh, independent draws per example
            # and epoch, the same whichever rank the example lands on, so sharding cannot correlate the noise
            def sample_noise(images, idx=idx, epoch=epoch):
                if family is None:
                    return images.repeat_interleave(copies, dim=0)
                return family.sample(images, copies, sigma, seed=noise_seed, sample_offset=epoch * copies, keys=idx)

            losses = None  # per-example losses; None: the plain mean cross-entropy below
            if adversary is not None:
                # adversarial training: the attack on the current (bare) model supplies the batch
                logits, losses = adversary.step(model, net, x, y, epoch)
            else:
                if settings["method"] == "smoothadv":
                    model.eval()  # the attack sees the model as certification will (the bare one: no DDP hooks)
                    x, _ = smoothadv_perturb(model, x, y, sample_noise, copies,
                                             smoothadv_epsilon(settings["adv_epsilon"], settings["adv_warmup"], epoch),
                                             settings["adv_steps"])
                    model.train()
                logits = net(sample_noise(x))
                if settings["method"] != "noise" or copies > 1:
                    per_example = logits.view(len(idx), copies, logits.shape[-1])
                    if settings["method"] == "consistency":
                        losses = consistency_loss(per_example, y, settings["consistency_lambda"],
                                                  settings["consistency_eta"])
                    elif settings["method"] == "macer":
                        losses = macer_loss(per_example, y, settings["macer_lambda"], settings["macer_gamma"],
                                            settings["macer_beta"], family.distribution, family.scale(sigma))
                    else:
                        losses = noise_loss(per_example, y)
            if losses is not None:
                summed = losses.sum()
                loss = summed * (ctx.world_size / len(batch)) if ctx.enabled else summed / max(len(idx), 1)
                batch_loss = float(summed.detach())
            elif ctx.enabled:
                # DDP divides the summed gradients by K: scaling by K / |global batch| turns that into the
                # gradient of the global batch's mean loss, whatever the sizes of the ranks' slices
                summed = F.cross_entropy(logits, y, reduction="sum")
                loss = summed * (ctx.world_size / len(batch))
                batch_loss = float(summed.detach())
            else:
                loss = F.cross_entropy(logits, y)
                batch_loss = float(loss.detach()) * len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += batch_loss
            if copies == 1:
                correct += int((logits.argmax(1) == y).sum())
            else:  # the share of each example's copies classified correctly
                correct += float((logits.argmax(1) == y.repeat_interleave(copies)).sum()) / copies
        if ctx.enabled:
            loss_sum, correct = _sum_over_ranks(device, loss_sum, correct)
        row = {"epoch": epoch + 1, "loss": loss_sum / n, "train_noisy_acc": correct / n,
               "test_clean_acc": None, "test_noisy_acc": None}
        if adversary is not None:
            row["adv_eps"] = adversary.epsilon(epoch)
        if test_images is not None:
            if ctx.enabled:  # each rank evaluates its share of the test set; the counts are summed
                counts = (_count_correct(model, test_images, test_labels, test_shard),
                          _count_correct(model, test_images, test_labels, test_shard, noise=noise, sigma=sigma,
                                         seed=eval_seed))
                clean, noisy = _sum_over_ranks(device, *counts)
                row["test_clean_acc"] = clean / max(len(test_images), 1)
                row["test_noisy_acc"] = noisy / max(len(test_images), 1)
            else:
                row["test_clean_acc"] = evaluate(model, test_images, test_labels)
                row["test_noisy_acc"] = evaluate(model, test_images, test_labels, noise=noise, sigma=sigma,
                                                 seed=eval_seed)
        row["seconds"] = time.perf_counter() - started
        history.append(row)
        log(_format_row(row, epochs, noise if adversary is None else adv_settings["adversarial"]))
        if checkpoint_path is not None:
            meta = dict(metadata or {})
            meta.update(noise=noise, sigma=sigma, train_args=train_args)
            state = {"epoch": epoch + 1, "optimizer": opt.state_dict(), "history": history}
            if not ctx.enabled:
                save_checkpoint(checkpoint_path, model, meta, training_state=state)
            else:
                error = None
                if ctx.is_main:  # the weights and optimizer states are equal on every rank: one writer
                    try:
                        save_checkpoint(checkpoint_path, model, meta, training_state=state)
                    except Exception as exc:  # noqa: BLE001 - re-raised by _agree once the peers know
                        error = exc
                # a barrier that also carries the outcome: the checkpoint is complete before any rank goes
                # on, and a failed write stops every rank instead of leaving them waiting
                _agree(ctx, device, error, epoch + 1, "the processes are at different epochs")
    model.eval()
    return history


def _join_group(ctx: DistContext, device: torch.device) -> None:
    init_process_group(ctx, device)  # no-op if the caller has joined already
    group_rank, group_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if (group_rank, group_size) != (ctx.rank, ctx.world_size):
        raise ValueError(f"dist_ctx says rank {ctx.rank} of {ctx.world_size}, the process group rank "
                         f"{group_rank} of {group_size}")


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index if device.index is not None
                                                          else torch.cuda.current_device()])
    return DistributedDataParallel(model)


def _collective_device(device: torch.device) -> torch.device:
    # NCCL reduces CUDA tensors only, gloo CPU tensors
    return device if device.type == "cuda" else torch.device("cpu")


def _sum_over_ranks(device: torch.device, *values: float) -> list[float]:
    """The sums over all ranks of ``values`` (float64: exact for counts, and the loss is only reported)."""
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device(device))
    torch.distributed.all_reduce(t)
    out = t.tolist()
    return [int(v) if isinstance(x, int) else v for v, x in zip(out, values)]


def _agree(ctx: DistContext, device: torch.device, error: Exception | None, value: int, mismatch: str) -> None:
    """Every rank reports whether its step succeeded and its ``value``; all raise if any failed or the values
    differ (a rank's own error is raised as is, the others say a peer failed)."""
    t = torch.tensor([0 if error else 1, value, -value], dtype=torch.int64, device=_collective_device(device))
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    ok, low, high = int(t[0]), int(t[1]), -int(t[2])
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError("another process failed (its error is in its output); stopping")
    if low != high:
        raise RuntimeError(f"{mismatch}: from {low} to {high}")


def _format_row(row: dict, epochs: int, noise: str) -> str:
    """One log line; ``noise`` names what the training accuracy is measured under (noise or attack)."""
    what = noise if "adv_eps" not in row else f"{noise} eps {row['adv_eps']:.4g}"
    text = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['loss']:.4f}  "
            f"train acc ({what}) {100 * row['train_noisy_acc']:6.2f}%")
    if row["test_clean_acc"] is not None:
        text += (f"  test acc clean {100 * row['test_clean_acc']:6.2f}%  "
                 f"under noise {100 * row['test_noisy_acc']:6.2f}%")
    return text + f"  ({row['seconds']:.1f} s)"


def _resume(model, opt, path, train_args, device) -> tuple[int, list[dict]]:
    state, meta, training_state = load_training_state(path)
    if training_state is None:
        raise ValueError(f"cannot resume from {path}: it holds no training state (not written by train)")
    old = meta.get("train_args") or {}
    for key in _RESUME_FIXED:
        # a checkpoint written before training methods existed was trained with the noise method, one copy
        was = old.get(key, _LEGACY.get(key))
        if was != train_args[key]:
            raise ValueError(f"cannot resume from {path}: {key} was {was!r} there, now "
                             f"{train_args[key]!r} (only epochs may change)")
    if meta.get("arch") != getattr(model, "arch", None):
        raise ValueError(f"cannot resume from {path}: it holds arch {meta.get('arch')!r}, the model is "
                         f"{getattr(model, 'arch', type(model).__name__)!r}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"cannot resume from {path}: the model does not fit it ({str(exc).splitlines()[0]})") from None
    opt.load_state_dict(training_state["optimizer"])
    for group_state in opt.state.values():  # optimizer tensors must follow the model's device
        for k, v in group_state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                group_state[k] = v.to(device)
    return int(training_state["epoch"]), list(training_state["history"])
