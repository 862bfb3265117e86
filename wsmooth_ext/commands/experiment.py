"""`wsmooth experiment NAME`: rerunnable comparisons, one subcommand per module of ``commands/experiments``.

Each module there defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int`` like a
top-level command (see ``wsmooth_ext.cli``); its subcommand is the module name with dashes for underscores
(``certified_training`` -> ``certified-training``). Adding an experiment means adding a module there: this
file lists them by itself.
"""

from __future__ import annotations

import argparse
import pkgutil
from importlib import import_module

HELP = "run a rerunnable comparison (train, certify, tabulate into one folder); `wsmooth experiment NAME -h` for each"


def experiments() -> dict:
    """subcommand name -> its module, in alphabetical order."""
    from . import experiments as package

    found = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            found[info.name.replace("_", "-")] = import_module(f"{package.__name__}.{info.name}")
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..cli import UNITS

    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name, module in experiments().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP + "\n\n" + UNITS,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)


def run(args: argparse.Namespace) -> int:  # replaced by the chosen experiment's run (set_defaults above)
    raise AssertionError("an experiment subcommand is required")
