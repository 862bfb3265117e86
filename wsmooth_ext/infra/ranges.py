"""The stated range of every numeric option, in one place: the commands' ``--help`` and checks derive from it,
and any workflow (an experiment) can check the same values with the same words.

A :class:`Range` checks one value (``check``: ValueError naming the option) and parses a command-line word
(``argparse_type``: argparse then reports ``argument --NAME: ...`` before anything is loaded). ``RANGES`` maps
an option's destination name (``n_grad`` for ``--n-grad``) to its range; the same name means the same thing in
every command. Limits that involve several options (memory, the radius an attack can grow to) are functions
below. Support module: imports nothing from the package. :class:`Range` is the package's one interval type:
training's hyper-parameter specs (``training/params.py``) and the experiments' checks (``experiments/_checks.py``)
decide membership with it and keep only their own wording.
"""

from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import dataclass

FLOAT32_MAX = 3.4028234663852886e38


def _number_text(value: float) -> str:
    if value == 2 ** 63:
        return "2**63"
    if value == 2 ** 31:
        return "2**31"
    if float(value).is_integer() and abs(value) < 1e7:
        return str(int(value))
    return f"{value:g}"


@dataclass(frozen=True)
class Range:
    """An interval [low, high] (``low_open``: (low, high]; ``high_open``: [low, high)) of numbers or integers."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    high_open: bool = False
    odd: bool = False

    def text(self) -> str:
        """'an integer in [1, 100000]', 'a number in (0, 1000]', 'an odd integer in [1, 63]'."""
        kind = ("an odd integer" if self.odd else "an integer") if self.integer else "a number"
        return (f"{kind} in {'(' if self.low_open else '['}{_number_text(self.low)}, "
                f"{_number_text(self.high)}{')' if self.high_open else ']'}")

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not (isinstance(value, numbers.Integral)
                                 or (math.isfinite(value) and float(value).is_integer())):
            return False
        v = float(value) if not isinstance(value, numbers.Integral) else value
        if isinstance(v, float) and not math.isfinite(v):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below and (not self.odd or int(v) % 2 == 1)

    def check(self, value, name: str):
        """``value`` as an int or float, or ValueError: '{name} must be {text}, got {value}'."""
        if not self.contains(value):
            raise ValueError(f"{name} must be {self.text()}, got {value!r}")
        return int(value) if self.integer else float(value)

    def argparse_type(self):
        """A ``type=`` for argparse: parses the word (integers also as 1e6); :func:`check_options` checks it."""
        def parse(word: str):
            return _parse_integer(word) if self.integer else float(word)

        parse.__name__ = "integer" if self.integer else "number"
        return parse


class _Typed(argparse.Action):
    """Stores the value and the option string the user typed (``--max`` or ``--max-images``), so that
    :func:`check_options` names the option as typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        typed = dict(getattr(namespace, "typed_options", None) or {})
        typed[self.dest] = option_string
        namespace.typed_options = typed


def check_options(args: argparse.Namespace) -> None:
    """Every option of ``args`` added with :func:`ranged` lies in its range, or ValueError naming it as typed
    ('--max-images must be an integer in [1, 1000000000], got 0'). Run before anything is loaded."""
    typed = getattr(args, "typed_options", None) or {}
    for name in getattr(args, "ranged_options", ()):
        value = getattr(args, name, None)
        if value is not None and not RANGES[name].contains(value):
            option = typed.get(name) or "--" + name.replace("_", "-")
            raise ValueError(f"{option} must be {RANGES[name].text()}, got {value!r}")


def _parse_integer(word: str) -> int | float:
    try:
        return int(word)
    except ValueError:
        value = float(word)  # '1e8': checked against the range (and for being whole) by the caller
        return int(value) if math.isfinite(value) and value.is_integer() else value


# The largest radius (mass-normalized units) anything accepts: far beyond any image's diameter in pixels, and
# far from float32's limit after the attacks' arithmetic.
MAX_RADIUS = 1e4
# An attack's radius grows from --eps0 by --eps-factor; the largest it can reach must stay a float32 number.
MAX_GROWN_RADIUS = 1e30
# Noisy pixel values held at once (one forward pass): 2**31 float32 values are 8 GiB; beyond that a run
# would exhaust memory (or exceed the op's index range) after the work has started.
MAX_VALUES_AT_ONCE = 2 ** 31
BATCH = Range(1, 10 ** 7, integer=True)

RANGES: dict[str, Range] = {
    # images and randomness (certify, predict, attack)
    "skip": Range(1, 10 ** 9, integer=True),
    "max": Range(1, 10 ** 9, integer=True),
    "seed": Range(0, 2 ** 63, integer=True, high_open=True),
    "alpha": Range(0, 1, low_open=True, high_open=True),
    "sigma": Range(0, 1e4, low_open=True),  # noises.MAX_SIGMA (checked equal by the tests)
    "batch": BATCH,
    # certify / predict
    "n0": Range(1, 2 ** 31, integer=True),
    "n": Range(1, 2 ** 31, integer=True),
    # attack: smoothed target
    "n_grad": Range(1, 10 ** 5, integer=True),
    "n_test": Range(1, 2 ** 31, integer=True),
    # attack: the radius and its growth
    "eps": Range(0, MAX_RADIUS, low_open=True),
    "eps0": Range(0, MAX_RADIUS, low_open=True),
    "eps_factor": Range(1, 10),
    "eps_every": Range(1, 10 ** 6, integer=True),
    "max_iter": Range(0, 10 ** 6, integer=True),
    # attack: steps and methods
    "step": Range(0, 100, low_open=True),
    "flow_step": Range(0, 10, low_open=True),
    "gamma": Range(1e-6, 1e3),
    "p": Range(0, 10, low_open=True),
    "kernel_size": Range(1, 63, integer=True, odd=True),
    "reg": Range(1e-3, 1e5),
    "sinkhorn_iter": Range(1, 10 ** 5, integer=True),
    "sinkhorn_tol": Range(0, 1, low_open=True, high_open=True),
    "attack_batch": Range(1, 10 ** 5, integer=True),
    # analyze
    "radii": Range(0, MAX_RADIUS),
}


def ranged(parser: argparse.ArgumentParser, name: str, text: str) -> dict:
    """``add_argument`` keywords of the option ``name`` of ``parser``: its word parser, the action that records
    the option string typed, and ``text`` with the range; :func:`check_options` then checks it."""
    known = parser.get_default("ranged_options") or ()
    parser.set_defaults(ranged_options=tuple(known) + (name,))
    return {"type": RANGES[name].argparse_type(), "action": _Typed, "help": f"{text}; {RANGES[name].text()}"}


def check_grown_radius(eps0: float, eps_factor: float, max_iter: int, eps_every: int,
                       names=("--eps0", "--eps-factor", "--max-iter", "--eps-every")) -> None:
    """The radius an attack may reach, eps0·eps_factor^⌊max_iter/eps_every⌋, is at most MAX_GROWN_RADIUS."""
    growths = max_iter // eps_every
    if eps_factor > 1 and math.log(eps0) + growths * math.log(eps_factor) > math.log(MAX_GROWN_RADIUS):
        raise ValueError(f"{names[0]} {eps0:g} x {names[1]} {eps_factor:g} ** ({names[2]} {max_iter} // {names[3]} "
                         f"{eps_every}) exceeds the largest radius {MAX_GROWN_RADIUS:g} (float32 range): "
                         "lower the growth or the iterations")


def check_values_at_once(count: int, input_shape, what: str) -> None:
    """``count`` images of ``input_shape`` [C, H, W] held at once stay within MAX_VALUES_AT_ONCE pixel values."""
    values = count * math.prod(input_shape)
    if values > MAX_VALUES_AT_ONCE:
        raise ValueError(f"{what} = {count} images of {list(input_shape)} at once is {values:,} pixel values, "
                         f"above the limit of 2**31 ({MAX_VALUES_AT_ONCE * 4 / 2 ** 30:g} GiB of float32): "
                         "use smaller values")


# The soft smoothed classifier's sample indices per image (noises.SOFT_SAMPLES: 2**31 - 2**16 of them); an
# attack's iteration t draws [t·n_grad, (t + 1)·n_grad), so iterations × samples must fit.
SOFT_SAMPLES_PER_IMAGE = 2 ** 31 - 2 ** 16


def check_soft_samples(max_iter: int, n_grad: int, names=("--max-iter", "--n-grad")) -> None:
    """An attack's gradient samples, max_iter·n_grad, fit in the soft samples of one image (independent draws)."""
    if max_iter * n_grad > SOFT_SAMPLES_PER_IMAGE:
        raise ValueError(f"{names[0]} {max_iter} x {names[1]} {n_grad} gradient samples exceed the "
                         f"{SOFT_SAMPLES_PER_IMAGE:,} independent soft samples of an image: lower either")
