"""Hyper-parameters of training methods: one dataclass field each, carrying its
:class:`~wsmooth_ext.infra.options.Option` (range, units, help).

A method's hyper-parameters are a frozen dataclass whose fields are made by :func:`hyper`. Everything else —
validation (:func:`resolve`), the checkpoint's ``train_args``, ``--resume``'s identity, the CLI options and
their help — reads these fields, so a range or a default is written once.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from ..infra.options import Option
from ..infra.ranges import Range

BIG = 10 ** 6  # upper end of counts (steps, epochs) that have no natural limit
# Radii are mass-normalized (the image divided by its mass): moving all of an image's mass across a 1,000-pixel
# wide image costs W1 1,000, and 100 is far beyond any image this package trains on; below 1e-6 a radius is
# lost in float32 rounding of the pixels (and ε/10 schedules reach subnormal numbers)
RADIUS_MIN, RADIUS_MAX = 1e-6, 100.0
WEIGHT_MAX = 1e3  # loss weights: 1,000 times the cross-entropy leaves it nothing to say


def hyper(default, help: str, *, units: str = "unitless", low: float | None = None, high: float | None = None,
          low_open: bool = False, high_open: bool = False, integer: bool = False, note: str = "",
          metavar: str | None = None, default_note: str = ""):
    """A dataclass field whose metadata is its :class:`~wsmooth_ext.infra.options.Option` (named after the field
    by :func:`specs`): help, units, the range [low, high] (``*_open``: the bound excluded; an absent bound is
    infinite), whether it is an integer, ``note``: why a value is out of range (said in the message), the
    ``metavar`` of its CLI option and ``default_note``, said after the default in --help."""
    allowed = Range(-math.inf if low is None else low, math.inf if high is None else high, integer=integer,
                    low_open=low_open, high_open=high_open)
    option = Option("", default, help, allowed, units=units, note=note, metavar=metavar, default_note=default_note)
    return dataclasses.field(default=default, metadata={"option": option})


def specs(params_type) -> dict[str, tuple[object, Option]]:
    """{field name: (default, Option)} of a hyper-parameter dataclass, in declaration order."""
    return {f.name: (f.default, f.metadata["option"].but(name=f.name)) for f in dataclasses.fields(params_type)}


def check_value(name: str, value, option: Option, owner: str):
    """``value`` converted to int or float, or ValueError naming ``name``, its range, units and ``owner``. A
    hyper-parameter given from Python is taken at its word: an integer must be an int (5.0 is refused)."""
    if option.integer and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        raise ValueError(option.refusal(value, name, owner))
    return option.check(value, name, owner)


def resolve(params_type, given: dict, owner: str):
    """An instance of ``params_type`` from ``given`` (None or absent: the default), every value checked."""
    values = {}
    for name, (default, option) in specs(params_type).items():
        value = given.get(name)
        values[name] = check_value(name, default if value is None else value, option, owner)
    return params_type(**values)
