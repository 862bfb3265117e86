"""The settings of an experiment as data: each one an :class:`Option` (name, default, help with units, check), and
the blocks of options that experiments share (training, certification, attack schedule).

An experiment lists its options in the order ``experiment.json`` records them and its command line prints them;
:func:`settings_class` turns the list into the frozen dataclass of its settings, :func:`check_settings` checks
every value (one ``ValueError`` naming the option), and ``wsmooth_ext.commands.experiments._cli`` turns the same
list into the command's arguments and ``--help``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ..infra.ranges import RANGES
from ..training.keywords import OPTIMIZERS
from . import _checks
from ._folder import format_value

ARCH = "wong_mnist"  # the architecture the experiments train; every dataset below is one it takes
DATASETS = ("mnist5k", "digits", "mnist")


@dataclass(frozen=True)
class Option:
    """One setting: a field of the experiment's settings and the option ``--name`` of its command."""

    name: str
    default: Any
    help: str  # what it is, with its unit; the command appends "(default D; Q with --quick)"
    check: Callable[[str, Any], Any] | None = None  # (name, value) -> normalized value, or ValueError naming it
    type: Callable | None = None  # argparse type (of each element, for a tuple default); default: the default's
    choices: tuple | None = None
    metavar: str | None = None
    note: str = ""  # said right after the default in --help
    none: str = "none"  # how an unset value (None) is spelled in --help, messages and command lines
    group: str | None = None  # the --help section; None: the main one
    path: bool = False  # names a checkpoint (file or folder): the experiment records the hash of what it read
    # the key in ranges.RANGES of the same quantity in `wsmooth certify`/`attack` (--n0, --batch, ...): the
    # experiment refuses what those commands refuse, before its first step, and --help states the range
    shared_range: str | None = None
    # (settings, value) -> how many dataset images this value makes the run hold at once (a batch size): the
    # engine checks it against ranges.check_values_at_once before the first step, as the commands check --batch
    images_at_once: Callable[[Any, Any], int] | None = None

    def validate(self, value):
        """``value`` checked and normalized by ``check``, then within ``shared_range``; ValueError naming it."""
        if self.check:
            value = self.check(self.name, value)
        if self.shared_range and value is not None and not RANGES[self.shared_range].contains(value):
            raise ValueError(f"{self.flag} must be {RANGES[self.shared_range].text()}, got {value!r}")
        return value

    @property
    def flag(self) -> str:
        return _checks.option(self.name)

    def spell(self, value) -> str:
        return format_value(value, self.none)


def settings_class(name: str, options) -> type:
    """The frozen dataclass of an experiment's settings: one field per option, in order, with its default."""
    return dataclasses.make_dataclass(name, [(o.name, Any, dataclasses.field(default=o.default)) for o in options],
                                      frozen=True)


def check_settings(options, settings, cls: type):
    """``settings`` with every value checked and normalized by its option, in order (ValueError naming it)."""
    if not isinstance(settings, cls):
        raise ValueError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
    values = {o.name: o.validate(getattr(settings, o.name)) for o in options}
    return dataclasses.replace(settings, **values)


# --- checks in the (name, value) form options take -----------------------------------------------------------

def count(name, value, low: int = 1, allow_none: bool = False):
    return _checks.integer(name, value, low=low, allow_none=allow_none)


def choice(allowed):
    """The check that a value is one of ``allowed``."""
    def check(name, value):
        _checks.choices(name, value, allowed)
        return value
    return check


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


def alpha(name, value) -> float:
    return _checks.number(name, value, below=1.0)


positive = partial(_checks.number, positive=True)
non_negative = partial(_checks.number, positive=False)


# --- shared blocks ------------------------------------------------------------------------------------------

T = "training"
DATASET = Option("dataset", "mnist5k", f"images to train and evaluate on ({ARCH} takes them; mnist5k: 4,000 train / "
                 "1,000 held-out digits, embedded, offline; mnist: the official files in --data-dir)",
                 choice(DATASETS), choices=DATASETS, group=T)
SEED = Option("seed", 0, "seed of the weights, the batch order and every noise draw (training, smoothing, attacks)",
              lambda name, value: _checks.seed(value), group=T)
TRAINING = (  # what every model trained here shares (steps.Train reads them)
    DATASET,
    Option("train_size", None, "train on the first N training images", partial(count, allow_none=True), type=int,
           metavar="N", none="all", group=T),
    Option("epochs", 20, "training epochs of each model", count, group=T),
    Option("optimizer", "adam", "optimizer", choice(OPTIMIZERS), choices=OPTIMIZERS, group=T),
    Option("lr", 1e-3, "learning rate", positive, group=T),
    Option("batch", 64, "training batch size in images", count, group=T),
    Option("momentum", 0.9, "SGD momentum, unused by adam", non_negative, group=T),
    Option("weight_decay", 5e-4, "weight decay", non_negative, group=T),
    SEED,
)

def arch_option() -> Option:
    """The architecture an experiment trains (``inputs.models.ARCHS``), where the experiment lets one choose."""
    from ..inputs.models import ARCHS

    names = tuple(sorted(ARCHS))
    return Option("arch", ARCH, "architecture of the trained models (wong_mnist: the paper's; mnist_cnn4: wider, "
                  "about 13x the cost per vote)", choice(names), choices=names, group=T)


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

    return tuple(Option(key, None, option_help(key, with_default=False), _hyper_value(key),
                        type=int if is_integer(key) else float, none=default_text(key), group=M)
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
    return Option("max_images", default, "evaluate the first M held-out images", partial(count, allow_none=True),
                  type=int, metavar="M", none="all", group=E, shared_range="max")


SKIP = Option("skip", 1, "evaluate every skip-th held-out image (0, skip, 2*skip, ...; 20: the 500 official MNIST "
              "test digits of issue 19's benchmark)", count, group=E, shared_range="skip")

CERTIFY = (
    Option("n0", 1000, "selection samples per image", count, group=E, shared_range="n0"),
    Option("samples", 10000, "estimation samples per image", count, group=E, shared_range="n"),
    Option("alpha", 0.05, "failure probability of each certificate, in (0, 1)", alpha, group=E),
)

A = "attacks"
ATTACK_SCHEDULE = (  # the paper's MNIST schedule: eps 0.3, x1.1 every 10 iterations, 200 iterations
    Option("eps0", 0.3, "initial radius, mass-normalized, in each attack's units", positive, group=A,
           shared_range="eps0"),
    Option("eps_factor", 1.1, "radius growth factor, >= 1", partial(_checks.number, at_least=1.0), group=A,
           shared_range="eps_factor"),
    Option("eps_every", 10, "grow the radius every this many iterations", count, group=A,
           shared_range="eps_every"),
    Option("max_iter", 200, "attack iterations", count, group=A, shared_range="max_iter"),
    Option("n_grad", 128, "smoothed model: noise samples per gradient", count, group=A,
           shared_range="n_grad"),
    Option("n_test", 10000, "smoothed model: noise samples per success test", count, group=A,
           shared_range="n_test"),
    Option("alpha", 0.05, "smoothed model: binomial-test level of the success test, in (0, 1)", alpha, group=A),
)


def training_recipe(s) -> str:
    """The training block's settings in words, as the reports state them."""
    optimizer = f"{s.optimizer} lr {s.lr:g}" + (f" momentum {s.momentum:g}" if s.optimizer == "sgd" else "")
    return f"{s.epochs} epochs, {optimizer}, weight decay {s.weight_decay:g}, batch {s.batch}, seed {s.seed}"
