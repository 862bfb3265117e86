"""Hyper-parameters of training methods: one dataclass field each, carrying its range, units and help.

A method's hyper-parameters are a frozen dataclass whose fields are made by :func:`hyper`. Everything else —
validation (:func:`resolve`), the checkpoint's ``train_args``, ``--resume``'s identity, the CLI options and
their help — reads these fields, so a range or a default is written once. Membership is decided by
``infra.ranges.Range``, the package's one interval type; Spec adds the units and words of training's messages.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from ..infra.ranges import Range

BIG = 10 ** 6  # upper end of counts (steps, epochs) that have no natural limit
# Radii are mass-normalized (the image divided by its mass): moving all of an image's mass across a 1,000-pixel
# wide image costs W1 1,000, and 100 is far beyond any image this package trains on; below 1e-6 a radius is
# lost in float32 rounding of the pixels (and ε/10 schedules reach subnormal numbers)
RADIUS_MIN, RADIUS_MAX = 1e-6, 100.0
WEIGHT_MAX = 1e3  # loss weights: 1,000 times the cross-entropy leaves it nothing to say


@dataclass(frozen=True)
class Spec:
    """What a field means: help text, units, allowed range (``low``/``high``; ``*_open``: the bound is
    excluded), whether it is an integer, ``note``: why a value is out of range (appended to the error), the
    ``metavar`` of its CLI option and ``default_note``, said after the default in --help."""

    help: str
    units: str = "unitless"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    note: str = ""
    metavar: str | None = None
    default_note: str = ""  # follows the default in --help: "(default 0: adversarial examples only)"

    def range_text(self) -> str:
        if self.low is not None and self.low == self.high:
            return f"{self.low:g}"
        if self.integer or self.high is None or self.low is None:
            parts = [f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "",
                     f"{'<' if self.high_open else '<='} {self.high:g}" if self.high is not None else ""]
            return " and ".join(p for p in parts if p)
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")

    def interval(self) -> Range:
        """The allowed values as the package's one interval type (an absent bound is infinite)."""
        return Range(-math.inf if self.low is None else self.low, math.inf if self.high is None else self.high,
                     integer=self.integer, low_open=self.low_open, high_open=self.high_open)

    def contains(self, value: float) -> bool:
        return self.interval().contains(value)


def hyper(default, help: str, **spec):
    """A dataclass field with its :class:`Spec` (keywords of Spec besides ``help``)."""
    return dataclasses.field(default=default, metadata={"spec": Spec(help, **spec)})


def specs(params_type) -> dict[str, tuple[object, Spec]]:
    """{field name: (default, Spec)} of a hyper-parameter dataclass, in declaration order."""
    return {f.name: (f.default, f.metadata["spec"]) for f in dataclasses.fields(params_type)}


def check_value(name: str, value, spec: Spec, owner: str):
    """``value`` converted to int or float, or ValueError naming ``name``, its range and units."""
    why = f" ({spec.note})" if spec.note else ""
    if spec.integer:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not spec.contains(value):
            what = "an integer " if spec.low != spec.high else ""
            raise ValueError(f"{name} must be {what}{spec.range_text()} for {owner}{why}, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number ({spec.units}), got {value!r}")
    if not spec.contains(float(value)):
        raise ValueError(f"{name} must be {spec.range_text()} ({spec.units}) for {owner}{why}, got {value!r}")
    return float(value)


def resolve(params_type, given: dict, owner: str):
    """An instance of ``params_type`` from ``given`` (None or absent: the default), every value checked."""
    values = {}
    for name, (default, spec) in specs(params_type).items():
        value = given.get(name)
        values[name] = check_value(name, default if value is None else value, spec, owner)
    return params_type(**values)
