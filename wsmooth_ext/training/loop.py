"""The training loop: epochs, batches, sampling keys, resume, checkpoints, DDP and progress, for any method.

Every example of every batch gets its own fresh noise draw. Image i of the training set (key = its dataset
index) in epoch e uses sample indices e·m .. e·m + m − 1 (m = the method's copies per example) of a seed
derived from ``seed``, so the noise — like the batch order and the augmentation, drawn from generators seeded
by (seed, epoch) — is a pure function of (seed, epoch, index): a resumed run equals an uninterrupted one,
since model and optimizer state are checkpointed after every epoch and nothing else is carried over. The
learning rate of every step and the sigma of every epoch are pure functions of (epoch, batch, settings) too
(:mod:`.schedules`): the loop sets them before every step instead of keeping a scheduler's state.

Under torchrun (world size K > 1) the model is wrapped in DistributedDataParallel and every global batch — the
same examples, in the same order, as in one process — is split by position: rank r takes positions r, r+K, ...
Each rank's loss is its examples' summed loss times K / (global batch size), so DDP's average over ranks is
exactly the gradient of the global batch's mean loss, whatever the sizes of the slices. Noise and
augmentation follow the example, not the rank, so the run equals single-process training up to float
summation order (BatchNorm models excepted). Rank 0 alone logs and writes checkpoints.

The method (:class:`~.method.TrainingMethod`) supplies one thing per batch: the logits of its training copies
and a loss per example; nothing here depends on which method it is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..core import noises
from ..infra.progress import progress_bar
from . import registry, schedules
from .augment import AUGMENT_PAD, apply_augmentation, draw_augmentation
from .checkpoints import resume_if_present, save_epoch
from .config import RESUME_FIXED, TrainConfig
from .ddp import join_group, on_every_rank, sum_over_ranks, wrap_ddp
from .evaluation import count_correct, device_of
from .method import Batch, TrainingMethod, copies_of
from .seeds import STREAM_AUGMENT, STREAM_EVAL_NOISE, STREAM_SHUFFLE, STREAM_TRAIN_NOISE, derive_seed


@dataclass
class Run:
    """Everything one training run's epochs share."""

    model: nn.Module
    net: nn.Module
    opt: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    config: TrainConfig
    method: TrainingMethod
    params: object
    device: torch.device
    train_args: dict

    @property
    def ctx(self):
        return self.config.ctx

    @property
    def family(self):
        return noises.get(self.config.noise) if self.config.noise != noises.NONE else None


def train_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
               method: TrainingMethod, params) -> list[dict]:
    """Train ``model`` in place with ``method`` (hyper-parameters ``params``) under ``config``; the history
    (one row per epoch, resumed rows included). Arguments are checked by the caller
    (:func:`wsmooth_ext.training.keywords.train`)."""
    ctx = config.ctx
    log = config.log or (lambda line: print(line, flush=True))
    if not ctx.is_main:  # one copy of every line, from rank 0
        log, config.progress = (lambda line: None), False
    device = device_of(model)
    if ctx.enabled:
        join_group(ctx, device)
    opt = config.make_optimizer(model.parameters())
    train_args = {**config.record(len(images)), **registry.record(method, params)}
    run = Run(model, model, opt, images, labels, config, method, params, device, train_args)
    start_epoch, history = _resume(run, log)
    # DDP broadcasts rank 0's weights at construction (equal anyway: same seed, same checkpoint) and averages
    # gradients in backward; evaluation and checkpoints use the bare model
    run.net = wrap_ddp(model, device) if ctx.enabled else model
    batches = math.ceil(len(images) / config.batch_size)  # global batches per epoch, the same every epoch
    if start_epoch < config.epochs:
        for line in method.start_lines(params, config.epochs) + schedules.describe(config, batches):
            log(line)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        loss_sum, correct = _train_epoch(run, epoch)
        n = len(images)
        row = {"epoch": epoch + 1, "loss": loss_sum / n, "train_noisy_acc": correct / n, "test_clean_acc": None,
               "test_noisy_acc": None, **method.epoch_info(params, epoch),
               **schedules.history(config, epoch, batches)}
        row.update(_test_accuracies(run))
        row["seconds"] = time.perf_counter() - started
        history.append(row)
        log(format_row(row, config.epochs, method.label(params, config.noise, epoch), config.noise != noises.NONE))
        if config.checkpoint_path is not None:
            # the weights and optimizer states are equal on every rank: one writer; the agreement is a barrier
            # that carries the outcome, so a failed write stops every rank instead of leaving them waiting
            save = partial(save_epoch, config.checkpoint_path, model, opt, config.metadata, config.noise,
                           config.noise_sigma, train_args, epoch + 1, history)
            on_every_rank(ctx, device, save, lambda _: epoch + 1, "the processes are at different epochs",
                          main_only=True)
    model.eval()
    return history


def _resume(run: Run, log) -> tuple[int, list[dict]]:
    """(epochs done, history) from the checkpoint when resuming and it exists, else (0, [])."""
    c = run.config
    if not c.resume:
        return 0, []
    fixed = RESUME_FIXED + tuple(registry.record(run.method, run.params))  # every method's keys
    load = partial(resume_if_present, run.model, run.opt, c.checkpoint_path, run.train_args, fixed, run.device,
                   c.metadata)
    # every rank must continue from the same epoch: a rank that cannot see the checkpoint (no shared file
    # system) or fails to read it stops all of them instead of leaving them waiting
    found = on_every_rank(c.ctx, run.device, partial(_schedule_checked, run, load), lambda r: r[0] if r else 0,
                          f"the processes found different checkpoints at {c.checkpoint_path} "
                          "(is it on a file system all nodes share?)")
    if found is None:
        return 0, []
    log(f"resuming from {c.checkpoint_path} after epoch {found[0]}")
    return found


def _schedule_checked(run: Run, load):
    """``load()`` after the schedules' own refusals (:func:`.schedules.check_resume`: a checkpoint that predates
    them, another ``epochs`` under cosine or one-cycle), so that they come before any weights are loaded."""
    schedules.check_resume(run.config.checkpoint_path, run.train_args)
    return load()


def _train_epoch(run: Run, epoch: int) -> tuple[float, float]:
    """One epoch of optimizer steps; (summed loss, correctly classified share of copies), over all ranks."""
    c, ctx = run.config, run.ctx
    run.model.train()
    n = len(run.images)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(c.seed, STREAM_SHUFFLE, epoch)))
    augment_rng = torch.Generator().manual_seed(derive_seed(c.seed, STREAM_AUGMENT, epoch))
    batches = progress_bar(range(0, n, c.batch_size), total=(n + c.batch_size - 1) // c.batch_size,
                           desc=f"epoch {epoch + 1}/{c.epochs}", enabled=c.progress, unit="batch")
    loss_sum, correct, sigma = 0.0, 0, c.sigma_at(epoch)
    for start in batches:
        batch = order[start:start + c.batch_size]  # the global batch, as in a single process
        mine = slice(ctx.rank, None, ctx.world_size)  # this rank's positions in it (all of it if K = 1)
        x = run.images[batch[mine]].to(run.device)
        if c.augment:
            shifts, flips = draw_augmentation(len(batch), augment_rng, AUGMENT_PAD)
            x = apply_augmentation(x, shifts[mine], flips[mine], AUGMENT_PAD)
        index = start // c.batch_size
        where = f"epoch {epoch + 1} (batch {index + 1} of {len(batches)})"
        for group in run.opt.param_groups:  # a pure function of the step: a resumed run sets the same
            group["lr"] = c.lr_at(epoch, index, len(batches))
        batch_loss, batch_correct = _step(run, _make_batch(run, x, batch[mine], epoch, sigma), len(batch), where)
        loss_sum += batch_loss
        correct += batch_correct
    if ctx.enabled:
        loss_sum, correct = sum_over_ranks(run.device, loss_sum, correct)
    return loss_sum, correct


def _make_batch(run: Run, x: torch.Tensor, keys: torch.Tensor, epoch: int, sigma: float) -> Batch:
    """The batch of dataset indices ``keys`` (images ``x``) in ``epoch``, noised with the epoch's ``sigma``."""
    copies, family = copies_of(run.params), run.family
    seed = derive_seed(run.config.seed, STREAM_TRAIN_NOISE)

    # keys = dataset indices, samples epoch·m .. epoch·m + m − 1: fresh, independent draws per example and
    # epoch, the same whichever rank the example lands on, so sharding cannot correlate the noise; a sigma
    # warm-up scales these same draws
    def noisy(images: torch.Tensor) -> torch.Tensor:
        if family is None:
            return images.repeat_interleave(copies, dim=0)
        return family.sample(images, copies, sigma, seed=seed, sample_offset=epoch * copies, keys=keys)

    y = run.labels[keys].to(run.device)
    return Batch(run.model, run.net, x, y, keys, epoch, copies, noisy, family, sigma)


def _step(run: Run, batch: Batch, global_size: int, where: str) -> tuple[float, float]:
    """One optimizer step on the method's losses; (summed loss, correct share of copies) of this rank."""
    logits, losses = run.method.losses(run.params, batch)
    summed = losses.sum()
    _check_finite(run, summed, where)
    # DDP divides the summed gradients by K: scaling by K / |global batch| turns that into the gradient of
    # the global batch's mean loss, whatever the sizes of the ranks' slices
    world = run.ctx.world_size
    loss = summed * (world / global_size) if run.ctx.enabled else summed / max(len(batch.y), 1)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if batch.copies == 1:
        return float(summed.detach()), int((logits.argmax(1) == batch.y).sum())
    # the share of each example's copies classified correctly
    return float(summed.detach()), float((logits.argmax(1) == batch.y.repeat_interleave(batch.copies)).sum()) / batch.copies


def _check_finite(run: Run, summed: torch.Tensor, where: str) -> None:
    """ValueError before the step if the loss of any rank is NaN or infinite: the weights stay as they were,
    and the last checkpoint (the end of an epoch that went well) is not overwritten."""
    value = float(summed.detach())
    bad = not math.isfinite(value)
    if run.ctx.enabled:  # every rank must stop together, before DDP's backward waits for the others
        bad = sum_over_ranks(run.device, int(bad))[0] > 0
    if bad:
        what = f"{value}" if not math.isfinite(value) else "not finite on another process"
        raise ValueError(f"the training loss is {what} in {where}: training diverged and stopped before this step; "
                         "nothing of this epoch was saved (try a lower learning rate)")


def _test_accuracies(run: Run) -> dict:
    """Clean and noisy test accuracy (one draw per test image, the same draws every epoch); each rank
    evaluates its share of the test set and the counts are summed."""
    c = run.config
    if c.test_images is None:
        return {}
    shard = torch.arange(len(c.test_images))[run.ctx.rank::run.ctx.world_size]
    eval_seed = derive_seed(c.seed, STREAM_EVAL_NOISE)
    counts = (count_correct(run.model, c.test_images, c.test_labels, shard),
              count_correct(run.model, c.test_images, c.test_labels, shard, noise=c.noise, sigma=c.noise_sigma,
                            seed=eval_seed))
    if run.ctx.enabled:
        counts = sum_over_ranks(run.device, *counts)
    total = max(len(c.test_images), 1)
    return {"test_clean_acc": counts[0] / total, "test_noisy_acc": counts[1] / total}


def format_row(row: dict, epochs: int, label: str, noisy: bool = True) -> str:
    """One log line; ``label`` names what the training accuracy is measured under (noise or attack);
    ``noisy``: the test accuracy under noise means something (not for training without noise)."""
    text = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['loss']:.4f}  "
            f"train acc ({label}) {100 * row['train_noisy_acc']:6.2f}%")
    if "lr" in row:  # a learning-rate schedule or warm-up: the epoch's first learning rate
        text += f"  lr {row['lr']:.3g}"
    if "sigma" in row:  # a sigma warm-up: the epoch's training sigma
        text += f"  sigma {row['sigma']:.3g}"
    if row["test_clean_acc"] is not None:
        text += f"  test acc clean {100 * row['test_clean_acc']:6.2f}%"
        if noisy:
            text += f"  under noise {100 * row['test_noisy_acc']:6.2f}%"
    return text + f"  ({row['seconds']:.1f} s)"
