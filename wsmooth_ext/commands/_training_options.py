"""`wsmooth train`'s method options, all derived from the training-method registry: one option per selector
(--method, --adversarial), one per hyper-parameter of any method (its range, units, help and defaults from
the method's dataclass), and the checks that run before any data is read."""

from __future__ import annotations

import argparse
import re


def _users(key: str) -> list:
    """The methods with hyper-parameter ``key`` (a value fixed by its range, like adversarial training's one
    copy, does not count: there is nothing to choose)."""
    from ..training.params import specs
    from ..training.registry import METHODS

    out = []
    for m in METHODS.values():
        spec = specs(m.params).get(key)
        if spec is not None and not (spec[1].low is not None and spec[1].low == spec[1].high):
            out.append(m)
    return out


def _prefix(users: list) -> str:
    """Whom an option concerns: "" (every method of --method), "--adversarial" (every attack) or names."""
    from ..training.registry import METHODS, OPTIONS

    options = {m.option for m in users}
    if len(options) == 1:
        option = options.pop()
        if len(users) == sum(m.option == option for m in METHODS.values()):
            return "" if OPTIONS[option] != "none" else f"--{option}: "
    return ", ".join(m.name for m in users) + ": "


def option_help(key: str) -> str:
    """--help of a hyper-parameter's option: who uses it, what it is, its units (floats), default(s) and
    allowed range(s)."""
    from ..training.params import specs

    users = _users(key)
    entries = [specs(m.params)[key] for m in users]
    spec = entries[0][1]
    text = _prefix(users) + spec.help
    if not spec.integer:
        units = {m.name: s.units for m, (_, s) in zip(users, entries)}
        text += (f", {spec.units}" if len(set(units.values())) == 1
                 else " (" + "; ".join(f"{name}: {u}" for name, u in units.items()) + ")")
    defaults = [d for d, _ in entries]
    if len(set(defaults)) == 1:
        text += f" (default {defaults[0]:g}{spec.default_note})"
    else:
        text += " (default " + ", ".join(f"{d:g} for {m.name}" for m, d in zip(users, defaults)) + ")"
    ranges = [s.range_text() for _, s in entries]
    usual = max(ranges, key=ranges.count)
    others = "; ".join(f"{m.name}: {r}" for m, r in zip(users, ranges) if r != usual)
    return text + f"; allowed {usual}" + (f" ({others})" if others else "")


def hyper_keys() -> list[str]:
    """Every hyper-parameter of a registered method that is an option, in registration order."""
    from ..training.params import specs
    from ..training.registry import METHODS

    keys: list[str] = []
    for m in METHODS.values():
        keys += [k for k in specs(m.params) if k not in keys and _users(k)]
    return keys


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.params import specs
    from ..training.registry import METHODS, OPTION_HELP, OPTIONS, names

    for option, default in OPTIONS.items():
        listed = ", ".join(f"{m.name} ({m.summary})" for m in METHODS.values() if m.option == option)
        parser.add_argument(f"--{option}", choices=names(option), default=default,
                            help=f"{OPTION_HELP[option]} (default {default}): {listed}")
    for key in hyper_keys():
        spec = specs(_users(key)[0].params)[key][1]
        parser.add_argument(f"--{key.replace('_', '-')}", type=int if spec.integer else float, default=None,
                            metavar=spec.metavar, help=option_help(key))


def _option(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def check_method_options(args) -> None:
    """The method --method/--adversarial pick, the noise it allows (--noise's default is the method's), and its
    hyper-parameters: UserError in the options' names, before any data is read."""
    from ..cli import UserError
    from ..training.params import specs
    from ..training.registry import OPTIONS, chosen, select

    picked = chosen({option: getattr(args, option) for option in OPTIONS})
    if len(picked) > 1:
        raise UserError(" does not combine with ".join(f"--{m.option} {m.name}" for m in picked))
    method = picked[0]
    if args.noise is None:
        args.noise = "none" if method.refuses_noise else "flow-laplace"
    if method.refuses_noise and args.noise != "none":
        raise UserError(f"--{method.option} {method.name} trains a plain base model without noise: it does not "
                        f"combine with --noise {args.noise} (adversarial training of a smoothed classifier is "
                        "--method smoothadv)")
    given = {k: getattr(args, k) for k in hyper_keys() if getattr(args, k) is not None}
    stray = [k for k in given if k not in specs(method.params)]
    if stray:
        raise UserError(f"{method.title} does not use {stray}: {_owner_phrase(stray)}")
    try:
        select(method, given)
    except ValueError as exc:  # the same check train() makes, in the options' names
        message = str(exc)
        for key in sorted(given, key=len, reverse=True):
            message = re.sub(rf"(?<![\w-]){key}(?![\w-])", _option(key), message)
        raise UserError(message) from None


def _owner_phrase(keys: list[str]) -> str:
    """"--adv-eps, --adv-eps-warmup apply to --adversarial only" or "--adv-epsilon belongs to --method
    smoothadv": where the stray options belong."""
    users = {tuple(m.name for m in _users(k)) for k in keys}
    opts = ", ".join(_option(k) for k in keys)
    prefix = _prefix(_users(keys[0]))
    if len(users) == 1 and prefix.startswith("--"):
        return f"{opts} {'applies' if len(keys) == 1 else 'apply'} to {prefix[:-2]} only"
    owners = sorted({f"--{m.option} {m.name}" for k in keys for m in _users(k)})
    return f"{opts} {'belongs' if len(keys) == 1 else 'belong'} to {' or '.join(owners)}"


def method_kwargs(args) -> dict:
    """The keywords of :func:`wsmooth_ext.training.keywords.train` that the method options give."""
    from ..training.registry import OPTIONS

    return {**{option: getattr(args, option) for option in OPTIONS}, **{k: getattr(args, k) for k in hyper_keys()}}
