"""`wsmooth train`'s method options, all derived from the training-method registry: one option per selector
(--method, --adversarial), one per hyper-parameter of any method (its range, units, help and defaults from
the method's dataclass, through :mod:`wsmooth_ext.training.hyper_options`), and the checks that run before any
data is read."""

from __future__ import annotations

import argparse
import re

from ..training.hyper_options import flag as _option
from ..training.hyper_options import hyper_keys, is_integer, option_help
from ..training.hyper_options import users as _users
from ..training.hyper_options import whom as _prefix


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.params import specs
    from ..training.registry import METHODS, OPTION_HELP, OPTIONS, names

    for option, default in OPTIONS.items():
        listed = ", ".join(m.name + (f" ({m.summary})" if m.summary else "") for m in METHODS.values()
                           if m.option == option)
        parser.add_argument(f"--{option}", choices=names(option), default=default,
                            help=f"{OPTION_HELP[option]} (default {default}): {listed}")
    for key in hyper_keys():
        spec = specs(_users(key)[0].params)[key][1]
        parser.add_argument(_option(key), type=int if is_integer(key) else float, default=None,
                            metavar=spec.metavar, help=option_help(key))


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
