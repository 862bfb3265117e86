"""The training-method registry, the way :data:`wsmooth_ext.core.noises.FAMILIES` holds the noise families.

:data:`METHODS` maps each name to its :class:`~.method.TrainingMethod`; adding a method is its module and one
line here. Each method is selected by one of the :data:`OPTIONS` (``train(method=...)`` /
``--method``, ``train(adversarial=...)`` / ``--adversarial``); at most one option may leave its default. The
choices, the validation of names and hyper-parameters, the checkpoint's ``train_args`` and the keys
``--resume`` must keep all derive from here (read at call time, so a method registered later counts). The
``--adversarial`` methods are not listed here: there is one per entry of the attack registry
(:func:`.adversarial.adversarial_methods`, made when this module is imported).
"""

from __future__ import annotations

from . import consistency, macer, noise, smoothadv
from .adversarial import adversarial_methods
from .method import TrainingMethod
from .params import resolve, specs

NONE = "none"
# option -> its default: a method's name, or NONE (nothing selected through this option)
OPTIONS = {"method": "noise", "adversarial": NONE}
OPTION_HELP = {"method": "training method",
               "adversarial": "Wasserstein adversarial training of a plain base model with this attack"}

METHODS: dict[str, TrainingMethod] = {m.name: m for m in (
    noise.METHOD,
    consistency.METHOD,
    smoothadv.METHOD,
    macer.METHOD,
    *adversarial_methods(),  # one per attack of the attack registry
)}


def names(option: str) -> tuple[str, ...]:
    """The values ``option`` accepts (NONE first where the option's default selects nothing)."""
    own = tuple(m.name for m in METHODS.values() if m.option == option)
    return ((NONE,) if OPTIONS[option] == NONE else ()) + own


def chosen(selection: dict) -> list[TrainingMethod]:
    """The methods ``selection`` ({option: name}) picks, ValueError for an unknown name. Options left at a
    default that selects nothing pick nothing; an option at its default picks it only if no other is set."""
    picked = []
    for option, default in OPTIONS.items():
        name = selection.get(option, default)
        if name not in names(option):
            raise ValueError(f"{option} must be one of {list(names(option))}, got {name!r}")
        if name != default:
            picked.append(METHODS[name])
    return picked or [METHODS[OPTIONS["method"]]]


def owners(keys) -> str:
    """Who uses hyper-parameters ``keys``: "method smoothadv", "adversarial training (sinkhorn, flow)"."""
    users: dict[str, list[str]] = {}
    for m in METHODS.values():
        if set(keys) & set(specs(m.params)):
            users.setdefault(m.option, []).append(m.name)
    parts = [f"method {', '.join(n)}" if option == "method" else f"{option} training ({', '.join(n)})"
             for option, n in users.items()]
    return " or ".join(parts) or "no method"


def select(method: TrainingMethod, given: dict):
    """The validated hyper-parameters of ``method`` from ``given`` ({name: value or None}); ValueError for
    a value given for a hyper-parameter it does not have, or out of range."""
    own = specs(method.params)
    stray = [k for k, v in given.items() if v is not None and k not in own]
    if stray:
        raise ValueError(f"{method.title} does not use {stray}; they only apply to {owners(stray)}")
    return resolve(method.params, given, method.title)


def group_keys(option: str) -> list[str]:
    """The ``train_args`` keys of ``option``: the option, then its methods' recorded keys that no earlier
    option has (in registration order)."""
    seen: list[str] = []
    for opt in OPTIONS:
        keys = [opt]
        for m in METHODS.values():
            if m.option == opt:
                keys += [k for k in m.record(m.params()) if k not in seen and k not in keys]
        if opt == option:
            return keys
        seen += keys
    raise ValueError(f"unknown option {option!r}")


def record(method: TrainingMethod, params) -> dict:
    """The method's part of ``train_args``: every option (the others at their defaults) and every key any
    method records (None where the chosen one has no such setting), filled from ``params``."""
    out: dict = {}
    for option, default in OPTIONS.items():
        out.update(dict.fromkeys(group_keys(option)))
        out[option] = method.name if method.option == option else default
    return {**out, **method.record(params)}


def describe_training(train_args: dict | None) -> str | None:
    """One line saying how a checkpoint's model was trained, from its method's ``describe`` (None when the
    method has nothing to add or the checkpoint records no method)."""
    if not train_args:
        return None
    for option, default in OPTIONS.items():
        name = train_args.get(option, default)
        if name not in (default, None) and name in METHODS:
            return METHODS[name].describe(train_args)
    return None


def choose(selection: dict, given: dict, noise: str):
    """(method, validated hyper-parameters) for ``selection`` ({option: name}), hyper-parameters ``given``
    ({name: value or None}) and the training ``noise``; ValueError naming what is wrong."""
    picked = chosen(selection)
    for m in picked:
        if m.needs_noise and noise == NONE:
            raise ValueError(f"{m.title} needs a smoothing noise, not noise='none'")
    if len(picked) > 1:
        raise ValueError(f"{' and '.join(m.title for m in picked)} do not combine: choose one")
    return picked[0], select(picked[0], given)
