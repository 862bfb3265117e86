"""The training methods' hyper-parameters as options, derived from the registry: which keys are options, which
methods use each, and its help text (range, units, defaults). ``wsmooth train``
(``commands/_training_options.py``) and the experiments that train (``experiments/certified_training.py``) both
build their options from here, so a method's hyper-parameter is described once, in its dataclass."""

from __future__ import annotations

from ..infra.options import flag  # noqa: F401 - the options' spelling, imported from here by the commands
from .params import specs
from .registry import METHODS, OPTIONS


def users(key: str, option: str | None = None) -> list:
    """The methods with hyper-parameter ``key`` (only those selected by ``option`` when given; a value fixed by
    its range, like adversarial training's one copy, does not count: there is nothing to choose)."""
    out = []
    for m in METHODS.values():
        spec = specs(m.params).get(key)
        if spec is not None and not (spec[1].range.low == spec[1].range.high):
            if option is None or m.option == option:
                out.append(m)
    return out


def whom(methods: list) -> str:
    """Whom an option concerns: "" (every method of --method), "--adversarial: " (every attack) or "names: "."""
    options = {m.option for m in methods}
    if len(options) == 1:
        option = options.pop()
        if len(methods) == sum(m.option == option for m in METHODS.values()):
            return "" if OPTIONS[option] != "none" else f"--{option}: "
    return ", ".join(m.name for m in methods) + ": "


def default_text(key: str) -> str:
    """The default of hyper-parameter ``key``: "3", or "1 for noise, 2 for consistency" where methods differ."""
    methods = users(key)
    entries = [specs(m.params)[key] for m in methods]
    defaults = [d for d, _ in entries]
    if len(set(defaults)) == 1:
        return f"{defaults[0]:g}{entries[0][1].default_note}"
    return ", ".join(f"{d:g} for {m.name}" for m, d in zip(methods, defaults))


def option_help(key: str, with_default: bool = True) -> str:
    """--help of a hyper-parameter's option: who uses it, what it is, its units (floats), default(s) (unless
    ``with_default`` is False: the caller states it) and allowed range(s)."""
    methods = users(key)
    entries = [specs(m.params)[key] for m in methods]
    spec = entries[0][1]
    text = whom(methods) + spec.help
    if not spec.integer:
        units = {m.name: s.units for m, (_, s) in zip(methods, entries)}
        text += (f", {spec.units}" if len(set(units.values())) == 1
                 else " (" + "; ".join(f"{name}: {u}" for name, u in units.items()) + ")")
    if with_default:
        text += f" (default {default_text(key)})"
    ranges = [s.text() for _, s in entries]
    usual = max(ranges, key=ranges.count)
    others = "; ".join(f"{m.name}: {r}" for m, r in zip(methods, ranges) if r != usual)
    return text + f"; {usual}" + (f" ({others})" if others else "")


def hyper_keys(option: str | None = None) -> list[str]:
    """Every hyper-parameter of a registered method that is an option (of a method selected by ``option`` when
    given), in registration order."""
    keys: list[str] = []
    for m in METHODS.values():
        if option is None or m.option == option:
            keys += [k for k in specs(m.params) if k not in keys and users(k, option)]
    return keys


def is_integer(key: str) -> bool:
    """Whether hyper-parameter ``key`` takes integers (the first method that has it says)."""
    return specs(users(key)[0].params)[key][1].integer

