"""The certified-training methods' names, defaults, settings and losses as they were importable before the
training package (:mod:`wsmooth_ext.training`): the noise-based methods of ``train(method=...)``.

Everything here derives from :data:`wsmooth_ext.training.METHODS`; the losses live in the methods' modules.
"""

from __future__ import annotations

from .common import MAX_NUM_NOISE, noise_loss, smoothed_cross_entropy
from .consistency import consistency_loss
from .macer import macer_loss, macer_radius
from .params import specs
from .registry import METHODS as _REGISTRY
from .registry import group_keys, record, select
from .smoothadv import smoothadv_epsilon, smoothadv_perturb

__all__ = ["DEFAULT_NUM_NOISE", "LEGACY_SETTINGS", "MAX_NUM_NOISE", "METHODS", "METHOD_DEFAULTS",
           "consistency_loss", "macer_loss", "macer_radius", "method_settings", "noise_loss", "smoothadv_epsilon",
           "smoothadv_perturb", "smoothed_cross_entropy"]

_OWN = {name: m for name, m in _REGISTRY.items() if m.option == "method"}
METHODS = tuple(_OWN)
# hyper-parameter -> default (the first method's, for num_noise: see DEFAULT_NUM_NOISE)
METHOD_DEFAULTS = {}
for _m in _OWN.values():
    for _key, (_default, _) in specs(_m.params).items():
        METHOD_DEFAULTS.setdefault(_key, None if _key == "num_noise" else _default)
DEFAULT_NUM_NOISE = {name: specs(m.params)["num_noise"][0] for name, m in _OWN.items()}
# what a checkpoint written before methods existed means: the noise method with one copy
LEGACY_SETTINGS = {k: v for k, v in record(_OWN["noise"], _OWN["noise"].params()).items()
                   if k in group_keys("method")}


def method_settings(method: str = "noise", **params) -> dict:
    """The validated settings of ``method``: {"method", "num_noise", ...every hyper-parameter}, with defaults
    filled in for the ones the method uses and None for the others (given values it does not use are
    ignored here; :func:`wsmooth_ext.training.keywords.train` refuses them). ValueError on anything invalid."""
    names = [m.name for m in _REGISTRY.values() if m.option == "method"]
    if method not in names:
        raise ValueError(f"method must be one of {names}, got {method!r}")
    keys = group_keys("method")
    unknown = set(params) - set(keys)
    if unknown:
        raise ValueError(f"unknown method settings {sorted(unknown)}")
    chosen = _REGISTRY[method]
    own = {k: v for k, v in params.items() if k in specs(chosen.params)}
    return {k: v for k, v in record(chosen, select(chosen, own)).items() if k in keys}
