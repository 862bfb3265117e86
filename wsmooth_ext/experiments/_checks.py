"""Argument checks the experiments share: each raises ValueError naming the option (``--name``).

Intervals are ``infra.ranges.Range``, the package's one interval type; these add the experiments' words."""

from __future__ import annotations

import dataclasses
import math

from ..infra.ranges import Range
from ._folder import option


def as_json(settings) -> dict:
    """A settings dataclass as the JSON object experiment.json records (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def integer(name: str, value, low: int = 1, allow_none: bool = False):
    """``value`` if it is an integer >= ``low`` (or None where allowed)."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not Range(low, math.inf, integer=True).contains(value):
        raise ValueError(f"{option(name)} must be an integer >= {low}, got {value!r}")
    return value


def number(name: str, value, *, positive: bool = True, at_least=None, below=None) -> float:
    """``value`` as a float if it is finite and > 0 (``positive``), >= 0, or >= ``at_least``; and < ``below``."""
    allowed = Range(0.0 if at_least is None else at_least, math.inf if below is None else below,
                    low_open=at_least is None and positive, high_open=True)
    if not (not isinstance(value, bool) and isinstance(value, (int, float)) and allowed.contains(value)):
        bound = (f">= {at_least:g}" if at_least is not None else "> 0" if positive else ">= 0") + (
            f" and < {below:g}" if below is not None else "")
        raise ValueError(f"{option(name)} must be a finite number {bound}, got {value!r}")
    return float(value)


def seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 63:
        raise ValueError(f"--seed must be an integer in [0, 2**63), got {value!r}")
    return value


def choices(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{option(name)} must be one of {', '.join(allowed)}, got {value!r}")


def names(name: str, values, allowed, noun: str) -> tuple:
    """A non-empty list of distinct names among ``allowed`` (``noun``: what one is, for messages)."""
    values = tuple(values)
    article = "an" if noun[:1] in "aeiou" else "a"
    if not values:
        raise ValueError(f"{option(name)} must name at least one {noun}")
    for value in values:
        if value not in allowed:
            raise ValueError(f"{option(name)}: unknown {noun} {value!r} (choose from {', '.join(allowed)})")
    if len(set(values)) != len(values):
        raise ValueError(f"{option(name)} names {article} {noun} twice: {','.join(values)}")
    return values


def radii(name: str, values, unit: str) -> tuple:
    """Sorted distinct finite numbers >= 0, at least one (``unit`` is named in the message)."""
    values = tuple(values)
    if not values:
        raise ValueError(f"{option(name)} must give at least one radius")
    for r in values:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
            raise ValueError(f"{option(name)} must be finite numbers >= 0 ({unit}), got {r!r}")
    return tuple(sorted({float(r) for r in values}))
