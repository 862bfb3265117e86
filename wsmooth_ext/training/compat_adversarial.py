"""Wasserstein adversarial training's settings as they were importable before the training package: the
attacks of ``train(adversarial=...)`` (:mod:`wsmooth_ext.training.adversarial` and one module per attack).

Everything here derives from :data:`wsmooth_ext.training.METHODS`.
"""

from __future__ import annotations

from .adversarial import (EPS_START_FRACTION, UNITS, Adversary, adversarial_epsilon,
                                   describe_adversarial)
from .params import specs
from .registry import METHODS as _REGISTRY
from .registry import NONE, group_keys, record, select

__all__ = ["ADVERSARIAL", "ADVERSARIAL_DEFAULTS", "ATTACK_PARAMS", "EPS_START_FRACTION", "Adversary",
           "LEGACY_ADVERSARIAL", "UNITS", "adversarial_epsilon", "adversarial_settings", "describe_adversarial",
           "make_adversary"]

_OWN = {name: m for name, m in _REGISTRY.items() if m.option == "adversarial"}
ADVERSARIAL = (NONE, *_OWN)
_KEYS = group_keys("adversarial")
ADVERSARIAL_DEFAULTS = {k: d for k, (d, _) in specs(next(iter(_OWN.values())).params).items() if k in _KEYS}
# the attacks' settings during training; recorded in the checkpoint, so a changed default refuses --resume
ATTACK_PARAMS = {name: m.record(m.params())["adv_attack_params"] for name, m in _OWN.items()}
# what a checkpoint written before adversarial training existed means: none
LEGACY_ADVERSARIAL = {k: (NONE if k == "adversarial" else None) for k in _KEYS}


def adversarial_settings(adversarial: str = NONE, **given) -> dict:
    """The validated settings (the keys of ``LEGACY_ADVERSARIAL``), defaults filled in; all None but
    ``adversarial`` when it is "none". ValueError on an unknown attack, a bad value, or a setting given
    without an attack."""
    if adversarial not in ADVERSARIAL:
        raise ValueError(f"adversarial must be one of {list(ADVERSARIAL)}, got {adversarial!r}")
    if adversarial == NONE:
        stray = [k for k, v in given.items() if v is not None]
        if stray:
            raise ValueError(f"{stray} only apply to adversarial training (adversarial is 'none')")
        return dict(LEGACY_ADVERSARIAL)
    method = _REGISTRY[adversarial]
    return {k: v for k, v in record(method, select(method, given)).items() if k in _KEYS}


def make_adversary(settings: dict) -> Adversary | None:
    """The :class:`Adversary` of ``settings`` (from :func:`adversarial_settings`), None for "none"."""
    return None if settings.get("adversarial") in (None, NONE) else Adversary(settings)
