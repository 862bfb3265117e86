"""The package's one interval type, :class:`Range`, and the limits that involve several options at once
(memory, the radius an attack can grow to, the soft samples of an image).

Every option's range is a Range held by its :class:`~wsmooth_ext.infra.options.Option`, the one option type.
Support module: imports nothing from the package.
"""

from __future__ import annotations

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
        """'an integer in [1, 100000]', 'a number in (0, 1000]', 'an odd integer in [1, 63]'; with an infinite
        bound 'an integer >= 1', 'a finite number > 0', 'a finite number <= 2'."""
        kind = ("an odd integer" if self.odd else "an integer") if self.integer else "a number"
        if self.low == self.high and not (self.low_open or self.high_open):
            return _number_text(self.low)  # one value allowed: "1"
        if math.isinf(self.low) or math.isinf(self.high):
            kind = kind if self.integer else "a finite number"
            bounds = [f"{'>' if self.low_open else '>='} {_number_text(self.low)}" if math.isfinite(self.low) else "",
                      f"{'<' if self.high_open else '<='} {_number_text(self.high)}" if math.isfinite(self.high)
                      else ""]
            return " ".join([kind, " and ".join(b for b in bounds if b)]).strip()
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


# The largest radius (mass-normalized units) anything accepts: far beyond any image's diameter in pixels, and
# far from float32's limit after the attacks' arithmetic.
MAX_RADIUS = 1e4
# An attack's radius grows from --eps0 by --eps-factor; the largest it can reach must stay a float32 number.
MAX_GROWN_RADIUS = 1e30
# Noisy pixel values held at once (one forward pass): 2**31 float32 values are 8 GiB; beyond that a run
# would exhaust memory (or exceed the op's index range) after the work has started.
MAX_VALUES_AT_ONCE = 2 ** 31
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
