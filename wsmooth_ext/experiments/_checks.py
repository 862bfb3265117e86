"""The checks of what an experiment's options hold beyond one number or word (lists of names, lists of radii),
each the ``rule`` of an :class:`~wsmooth_ext.infra.options.Option`: a ValueError naming the option (``--name``).
Numbers and words are checked by the Option's range or choices."""

from __future__ import annotations

import dataclasses
import math

from ..infra.options import flag as option


def as_json(settings) -> dict:
    """A settings dataclass as the JSON object experiment.json records (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


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
