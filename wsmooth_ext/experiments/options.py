"""The settings of an experiment as data: each one an :class:`~wsmooth_ext.infra.options.Option` (the package's one
option type), and the blocks of options that experiments share (training, certification, attack schedule): the
same declarations ``wsmooth train``, ``certify`` and ``attack`` take, with the experiments' defaults and words.

An experiment lists its options in the order ``experiment.json`` records them and its command line prints them;
:func:`settings_class` turns the list into the frozen dataclass of its settings, :func:`check_settings` checks
every value (one ``ValueError`` naming the option), and ``wsmooth_ext.commands.experiments._cli`` turns the same
list into the command's arguments and ``--help``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..infra import options as shared
from ..infra.options import NON_NEGATIVE, POSITIVE, Option, integers
from ..training import options as training
from . import _checks
from ..infra.options import format_value  # noqa: F401 - the experiments spell values with it

ARCH = "wong_mnist"  # the architecture the experiments train; every dataset below is one it takes
DATASETS = ("mnist5k", "digits", "mnist")


def settings_class(name: str, options) -> type:
    """The frozen dataclass of an experiment's settings: one field per option, in order, with its default."""
    return dataclasses.make_dataclass(name, [(o.name, Any, dataclasses.field(default=o.default)) for o in options],
                                      frozen=True)


def check_settings(options, settings, cls: type):
    """``settings`` with every value checked and normalized by its option, in order (ValueError naming it);
    with the training block, its schedule across options too (:func:`check_schedule`)."""
    if not isinstance(settings, cls):
        raise ValueError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
    values = {o.name: o.check(getattr(settings, o.name)) for o in options}
    settings = dataclasses.replace(settings, **values)
    if set(SCHEDULE_KEYS) <= set(values):
        check_schedule(settings)
    return settings


# --- checks in the (name, value) form options take -----------------------------------------------------------

def checkpoint_file(name, value):
    """A checkpoint path, or None (the experiment trains the model); it must exist."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{_checks.option(name)} must be a checkpoint path, got {value!r}")
    if not Path(value).is_file():
        raise FileNotFoundError(f"{_checks.option(name)} {value}: no such checkpoint file")
    return value


def sigma(name, value) -> float:
    from ..core import noises

    return float(noises.check_sigma(value, _checks.option(name)))




# --- shared blocks ------------------------------------------------------------------------------------------

T = "training"
DATASET = Option("dataset", "mnist5k", f"images to train and evaluate on ({ARCH} takes them; mnist5k: 4,000 train / "
                 "1,000 held-out digits, embedded, offline; mnist: the official files in --data-dir)",
                 choices=DATASETS, group=T)
SEED = shared.SEED.but(help="seed of the weights, the batch order and every noise draw (training, smoothing, "
                            "attacks)", group=T)
TRAINING = (  # what every model trained here shares (steps.Train reads them): training/options.py's
    DATASET,
    training.TRAIN_SIZE.but(help="train on the first N training images", group=T),
    training.EPOCHS.but(default=20, help="training epochs of each model", default_note="", group=T),
    training.OPTIMIZER.but(default="adam", group=T),
    training.LR.but(group=T),
    training.BATCH.but(default=64, help="training batch size in images", group=T),
    training.MOMENTUM.but(help="SGD momentum, unused by adam", group=T),
    training.WEIGHT_DECAY.but(group=T),
    SEED,
    # the learning-rate schedule (every model) and the sigma warm-up (the models trained under noise)
    *(o.but(group=T) for o in training.SCHEDULE[:-2]),
    training.SIGMA_WARMUP.but(help=f"{training.SIGMA_WARMUP.help}, for the models trained under noise", group=T),
    training.SIGMA_WARMUP_START.but(group=T),
)
SCHEDULE_KEYS = tuple(o.name for o in training.SCHEDULE)  # steps.Train passes them to train()

def arch_option() -> Option:
    """The architecture an experiment trains (``inputs.models.ARCHS``), where the experiment lets one choose."""
    from ..inputs.models import ARCHS

    names = tuple(sorted(ARCHS))
    return Option("arch", ARCH, "architecture of the trained models (wong_mnist: the paper's; mnist_cnn4: wider, "
                  "about 13x the cost per vote)", choices=names, group=T)


M = "training-method options (each applies to every method of --methods that has it)"


def _hyper_value(key: str):
    """The check of one hyper-parameter option: None (each method's default) or a number of its kind; its range
    is checked against each chosen method (:func:`check_method_values`), as ranges differ between methods."""
    from ..training.hyper_options import is_integer

    def check(name, value):
        if value is None:
            return None
        integer = is_integer(key)
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not math.isfinite(value):
            raise ValueError(f"{_checks.option(name)} must be {'an integer' if integer else 'a finite number'}, "
                             f"got {value!r}")
        return value if integer else float(value)
    return check


def method_options(option: str = "method") -> tuple:
    """One option per hyper-parameter of the training methods ``option`` selects, derived from the registry as
    ``wsmooth train``'s are (:mod:`wsmooth_ext.training.hyper_options`); default None: each method's own."""
    from ..training.hyper_options import default_text, hyper_keys, is_integer, option_help

    return tuple(Option(key, None, option_help(key, with_default=False), rule=_hyper_value(key),
                        kind=int if is_integer(key) else float, none=default_text(key), group=M)
                 for key in hyper_keys(option))


def check_method_values(settings, methods, keys) -> dict:
    """{method: its hyper-parameters given in ``settings``} for each of ``methods`` (names), every value checked
    against that method's range; ValueError naming the option for a value out of a method's range or given
    where no method of ``methods`` has it."""
    from ..training.hyper_options import flag, users
    from ..training.params import check_value, specs
    from ..training.registry import METHODS

    given = {k: getattr(settings, k) for k in keys if getattr(settings, k) is not None}
    out = {}
    for name in methods:
        own = specs(METHODS[name].params)
        out[name] = {k: check_value(flag(k), v, own[k][1], METHODS[name].title) for k, v in given.items() if k in own}
    for key in given:
        if not any(key in values for values in out.values()):
            owners = ", ".join(m.name for m in users(key))
            raise ValueError(f"{flag(key)}: no method of --methods ({', '.join(methods)}) has it; it belongs to "
                             f"{owners}")
    return out


E = "evaluation"


def images(default: int | None) -> Option:
    """How many held-out images are evaluated (the first M; None: all)."""
    return shared.MAX_IMAGES.but(default=default, help="evaluate the first M held-out images", optional=True,
                                 group=E)


SKIP = shared.SKIP.but(help="evaluate every skip-th held-out image (0, skip, 2*skip, ...; 20: the 500 official "
                            "MNIST test digits, every 20th)", group=E)

CERTIFY = (
    shared.N0.but(group=E),
    shared.N.but(name="samples", cli=None, aliases=(), group=E),
    shared.ALPHA.but(help="failure probability of each certificate", group=E),
)

A = "attacks"
ATTACK_SCHEDULE = (  # the paper's MNIST schedule: eps 0.3, x1.1 every 10 iterations, 200 iterations
    shared.EPS0.but(help="initial radius, mass-normalized, in each attack's units", group=A),
    shared.EPS_FACTOR.but(group=A),
    shared.EPS_EVERY.but(group=A),
    shared.MAX_ITER.but(range=integers(1, shared.MAX_ITER.range.high), group=A),
    shared.N_GRAD.but(help="smoothed model: noise samples per gradient", group=A),
    shared.N_TEST.but(help="smoothed model: noise samples per success test", group=A),
    shared.ALPHA.but(help="smoothed model: binomial-test level of the success test", group=A),
)


def training_recipe(s) -> str:
    """The training block's settings in words, as the reports state them."""
    optimizer = f"{s.optimizer} lr {s.lr:g}" + (f" momentum {s.momentum:g}" if s.optimizer == "sgd" else "")
    return (f"{s.epochs} epochs, {optimizer}{schedule_words(s)}, weight decay {s.weight_decay:g}, batch {s.batch}, "
            f"seed {s.seed}")


def schedule_words(s) -> str:
    """', cosine schedule, 2-epoch warm-up from lr/25, sigma warm-up from 0.1 sigma over 3 epochs' (the parts
    that differ from training at a constant lr and sigma; '' when none does)."""
    words = []
    if s.lr_schedule == "step":
        words.append(f"step schedule x{s.lr_gamma:g} every {s.lr_step} epochs")
    elif s.lr_schedule != "constant":
        words.append(f"{s.lr_schedule} schedule")
    if s.lr_warmup > 0:
        words.append(f"{s.lr_warmup:g}-epoch warm-up from lr/{s.lr_div:g}")
    if s.sigma_warmup > 0:
        words.append(f"sigma warm-up from {s.sigma_warmup_start:g} sigma over {s.sigma_warmup} epochs")
    return "".join(", " + w for w in words)


def check_schedule(s) -> None:
    """The training block's schedule, across its options (``--lr-schedule one-cycle`` needs ``--lr-warmup``,
    warm-ups shorter than ``--epochs``): ValueError naming the options, before any work."""
    from ..training import schedules

    schedules.check(s, None, shared.flag)
