"""Learning-rate schedules and the sigma warm-up of a training run.

Both are pure functions of (epoch, batch of the epoch, batches per epoch, total epochs, settings): nothing is
kept in a scheduler object, the loop sets every parameter group's ``lr`` before every optimizer step, so a
resumed run takes the same learning rate and sigma at every step as an uninterrupted one.

Learning rate of step k = e·B + b (0-based epoch e, batch b of the B batches of every epoch; N = T·B steps in
T epochs), with base learning rate η, warm-up W epochs (w = W·B steps; W may be a fraction), D = ``lr_div``:

    warm(k)    = 1/D + (1 − 1/D)·k/w for k < w, else 1     linear from η/D to η over W epochs, per batch
    constant   η·warm(k)                                    (W = 0: η at every step, today's training)
    step       η·warm(k)·γ^⌊e/S⌋                            per epoch: ×γ every S epochs (torch's StepLR)
    cosine     η·warm(k)·(1 + cos(π·k/N))/2                 per batch, from η to 0 over the whole run
    one-cycle  η·warm(k) for k < w, then η·(1 + cos(π·(k − w)/(N − w)))/2
               W > 0 required: rises linearly from η/D to η over the first W epochs, then falls by a half
               cosine from η to 0 at the end of the run (Smith & Topin 2019; torch's OneCycleLR with
               pct_start W/T, div_factor D, a linear rise and a final learning rate of 0)

so every schedule's warm-up is the same factor, and one-cycle differs from cosine with a warm-up in where the
cosine starts: at the end of the warm-up (the peak), not at the start of the run.

Sigma of epoch e (σ the run's sigma, K warm-up epochs, s = ``sigma_warmup_start``):

    σ_e = σ·(s + (1 − s)·e/K) for e < K, else σ

so the first epoch trains at s·σ and epoch K + 1 (1-based) is the first at σ. Only the σ passed to the noise
op changes: its draws (seed, sample indices, keys) are those of the run without the warm-up. The test
accuracy under noise after every epoch uses σ, the sigma the model will be certified with.

cosine and one-cycle depend on the total epochs T: a finished run extended with more epochs would have
trained its first epochs under another schedule, so :func:`check_resume` refuses a change of epochs for them;
constant and step schedules extend freely.
"""

from __future__ import annotations

import math
from pathlib import Path

SCHEDULES = ("constant", "step", "cosine", "one-cycle")
EPOCH_DEPENDENT = ("cosine", "one-cycle")  # their shape depends on the total epochs
# the train_args keys (and TrainConfig fields) of this module, in the order train_args records them
KEYS = ("lr_schedule", "lr_warmup", "lr_div", "lr_step", "lr_gamma", "sigma_warmup", "sigma_warmup_start")


def learning_rate(lr: float, schedule: str, epoch: int, batch: int, batches: int, epochs: int, *,
                  warmup: float = 0.0, div: float = 25.0, step: int = 30, gamma: float = 0.1) -> float:
    """The learning rate of 0-based ``batch`` of 0-based ``epoch`` (``batches`` per epoch, ``epochs`` in all)
    under ``schedule`` (the module docstring's formulas); exactly ``lr`` for constant without warm-up."""
    k, total, w = epoch * batches + batch, epochs * batches, warmup * batches
    factor = 1.0 / div + (1.0 - 1.0 / div) * (k / w) if k < w else 1.0
    if schedule == "constant":
        shape = 1.0
    elif schedule == "step":
        shape = gamma ** (epoch // step)
    elif schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * k / total))
    elif schedule == "one-cycle":
        shape = 1.0 if k < w else 0.5 * (1.0 + math.cos(math.pi * (k - w) / (total - w)))
    else:
        raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if factor == 1.0 and shape == 1.0:
        return lr
    return lr * factor * shape


def epoch_sigma(sigma: float, warmup: int, start: float, epoch: int) -> float:
    """The training noise's sigma in 0-based ``epoch``: σ·(s + (1 − s)·e/K) during the K warm-up epochs,
    exactly ``sigma`` after them (and always when ``warmup`` is 0)."""
    if warmup <= 0 or epoch >= warmup:
        return sigma
    return sigma * (start + (1.0 - start) * epoch / warmup)


def check(settings, noise: str | None = None, name=str) -> None:
    """What the options' ranges cannot say, on anything with the fields of :data:`KEYS` and ``epochs`` (a
    TrainConfig, ``wsmooth train``'s arguments, an experiment's settings): ValueError naming the option with
    ``name(key)`` (the keyword, or ``--flag``). ``noise``: the training noise, where one is known."""
    schedule, warmup, epochs = settings.lr_schedule, settings.lr_warmup, settings.epochs
    if schedule == "one-cycle" and warmup == 0:
        raise ValueError(f"{name('lr_schedule')} one-cycle needs {name('lr_warmup')} > 0: the epochs over which "
                         f"the learning rate rises from lr/{settings.lr_div:g} to lr (e.g. 0.3 x the epochs)")
    if warmup > 0 and warmup >= epochs:
        raise ValueError(f"{name('lr_warmup')} {warmup:g} must be less than {name('epochs')} {epochs}: the "
                         "learning-rate warm-up ends before the run does")
    if settings.sigma_warmup > 0 and settings.sigma_warmup >= epochs:
        raise ValueError(f"{name('sigma_warmup')} {settings.sigma_warmup} must be less than {name('epochs')} "
                         f"{epochs}, so that the last epoch trains at the full sigma")
    if settings.sigma_warmup > 0 and noise == "none":
        raise ValueError(f"{name('sigma_warmup')} needs a training noise (noise is none)")


def describe(c, batches: int) -> list[str]:
    """The log lines that say how the learning rate and sigma move over the run (none for today's training:
    constant, no warm-ups). ``c``: a TrainConfig."""
    lines = []
    if c.lr_schedule != "constant" or c.lr_warmup > 0:
        shape = {"constant": f"constant {c.lr:g}",
                 "step": f"step: {c.lr:g} x {c.lr_gamma:g} every {c.lr_step} epochs",
                 "cosine": f"cosine from {c.lr:g} to 0 over {c.epochs} epochs, per batch",
                 "one-cycle": f"one-cycle: linear from {c.lr / c.lr_div:g} to {c.lr:g} over {c.lr_warmup:g} epochs, "
                              f"then cosine to 0 at epoch {c.epochs}, per batch"}[c.lr_schedule]
        warm = (f"; linear warm-up from {c.lr / c.lr_div:g} over the first {c.lr_warmup:g} epochs, per batch"
                if c.lr_warmup > 0 and c.lr_schedule != "one-cycle" else "")
        lines.append(f"learning rate: {shape}{warm} ({batches} batches per epoch)")
    if c.sigma_warmup > 0:
        sigma = c.noise_sigma
        lines.append(f"sigma warm-up: {sigma * c.sigma_warmup_start:g} in epoch 1, rising linearly to {sigma:g} "
                     f"from epoch {c.sigma_warmup + 1} on; test accuracy under noise uses sigma {sigma:g}")
    return lines


def history(c, epoch: int, batches: int) -> dict:
    """The entries a history row adds where the learning rate or sigma move: ``lr`` (that of the epoch's first
    step) and ``sigma`` (the training noise's, that epoch); none for today's training."""
    row = {}
    if c.lr_schedule != "constant" or c.lr_warmup > 0:
        row["lr"] = c.lr_at(epoch, 0, batches)
    if c.sigma_warmup > 0:
        row["sigma"] = c.sigma_at(epoch)
    return row


def check_resume(path, train_args: dict) -> None:
    """Before resuming from ``path`` (if it exists): ValueError when its ``train_args`` lack a key of this
    module (a checkpoint written before the schedules existed), or when ``epochs`` changes under a schedule
    whose shape depends on it (:data:`EPOCH_DEPENDENT`). Everything else is :func:`.checkpoints.resume`'s."""
    from ..inputs.checkpoint import load_training_state

    if not Path(path).exists():
        return
    old = load_training_state(path)[1].get("train_args") or {}
    if not old:
        return  # not written by train: resume() says so
    missing = [key for key in KEYS if key not in old]
    if missing:
        raise ValueError(f"cannot resume from {path}: it records no {missing[0]} (it was written before "
                         "learning-rate schedules and the sigma warm-up existed); train anew into another "
                         "checkpoint")
    schedule, was, now = train_args["lr_schedule"], old.get("epochs"), train_args["epochs"]
    if schedule in EPOCH_DEPENDENT and old["lr_schedule"] == schedule and was != now:
        raise ValueError(f"cannot resume from {path}: epochs {now} differs from the {was} it was started with, and "
                         f"the {schedule} learning-rate schedule depends on the total epochs (the epochs done "
                         f"followed the {was}-epoch schedule: the result would equal no uninterrupted run); keep "
                         f"epochs {was}, or train anew (constant and step schedules extend freely)")
