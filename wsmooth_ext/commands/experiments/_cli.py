"""The command of a declared experiment: its options and ``--help`` derived from the declaration
(:class:`wsmooth_ext.experiments.engine.Experiment`), the options every experiment takes, and the run.

A module ``commands/experiments/NAME.py`` is then ``HELP``, an epilog and one line:
``add_arguments, run = command("NAME", EPILOG)``, where ``wsmooth_ext.experiments.NAME`` holds ``EXPERIMENT``.
"""

from __future__ import annotations

import argparse
import os
import time
from importlib import import_module

from ...experiments._jobs import JOBS
from ...infra.options import flag

DATA_ENV = "WSMOOTH_DATA"  # where --data-dir defaults to, the way torchvision users set a root once


def command(module, epilog: str = ""):
    """``(add_arguments, run)`` of the experiment ``wsmooth_ext.experiments.<module>.EXPERIMENT`` (imported when
    the command is built), or of ``module`` itself when it is an ``Experiment``."""
    def experiment():
        return import_module(f"wsmooth_ext.experiments.{module}").EXPERIMENT if isinstance(module, str) else module

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_options(parser, experiment())
        parser.epilog = epilog

    def run(args: argparse.Namespace) -> int:
        return run_command(experiment(), args)

    return add_arguments, run


def _split(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__} values: "
                                             f"{text!r}") from None
    return parse


def _add(parser, option, quick: dict) -> None:
    listed = isinstance(option.default, tuple)  # a comma-separated list, the option repeatable
    kind = option.kind or (option.parse if option.range is not None else None) or (
        type(option.default[0] if listed else option.default) if option.default is not None else str)
    later = f"; {option.spell(quick[option.name])} with --quick" if option.name in quick else ""
    bound = f"; {option.text()}" if option.range is not None else ""
    text = (f"{option.help}{', comma-separated' if listed else ''}{bound} (default {option.spell(option.default)}"
            f"{option.default_note}{later})")
    kwargs = dict(default=None, metavar=option.metavar, help=text.replace("%", "%%"))  # argparse formats help with %
    if listed:
        kwargs.update(type=_split(kind), nargs="+")
    elif option.choices:
        kwargs["choices"] = option.choices
    else:
        kwargs["type"] = kind
    parser.add_argument(option.flag, **kwargs)


def add_options(parser: argparse.ArgumentParser, experiment) -> None:
    quick = experiment.quick
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty, or with --resume "
                        "one this command started)")
    parser.add_argument("--resume", action="store_true", help="continue the experiment in --out (same settings)")
    parser.add_argument("--quick", action="store_true", help="miniature size: " + ", ".join(
        f"{flag(k)} {v}" for k, v in quick.items()))
    groups = {}
    for option in experiment.options + experiment.extras:
        where = parser if option.group is None else groups.get(option.group)
        if where is None:
            where = groups[option.group] = parser.add_argument_group(option.group)
        _add(where, option, quick)
    parser.add_argument("--data-dir", default=None, help=f"directory of the mnist files (--dataset mnist only; "
                        f"default ${DATA_ENV} where it is set)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    JOBS.add_to(parser)


def _value(option, given):
    return tuple(v for group in given for v in group) if isinstance(option.default, tuple) else given


def settings_from_args(experiment, args: argparse.Namespace):
    """The experiment's settings: the options given, else --quick's values (with --quick), else the defaults."""
    values = dict(experiment.quick) if args.quick else {}
    for option in experiment.options:
        given = getattr(args, option.name)
        if given is not None:
            values[option.name] = _value(option, given)
    return experiment.settings(**values)


def run_command(experiment, args: argparse.Namespace) -> int:
    from ...experiments.engine import SUMMARY_FILE, run_experiment
    from ...infra.options import check_options
    from .._common import resolve_device

    started = time.perf_counter()
    check_options(args)  # --jobs in its range, before any work
    extras = {o.name: _value(o, getattr(args, o.name)) for o in experiment.extras if getattr(args, o.name) is not None}
    result = run_experiment(experiment, args.out, settings_from_args(experiment, args), resume=args.resume,
                            quick=args.quick, device=resolve_device(args.device),
                            data_dir=args.data_dir or os.environ.get(DATA_ENV) or None,
                            progress=not args.no_progress, jobs=args.jobs, **extras)
    print("\n" + result.report.tables + "\n")
    files = ", ".join(f"{args.out}/{name}" for name in (SUMMARY_FILE, *result.report.plots))
    print(f"wrote {files}, checkpoints and logs in {args.out} ({time.perf_counter() - started:.1f} s)")
    return 0
