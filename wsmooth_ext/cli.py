"""The ``wsmooth`` command line: one subcommand per module in ``wsmooth_ext.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Errors a user can cause (bad arguments, missing or corrupt files, a full disk or a read-only folder) end the
program with one line on stderr and a non-zero exit status, never a traceback: domain code raises ValueError
or OSError, and only this module turns them into that line.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

# subcommand -> module under wsmooth_ext.commands, in the order --help lists them
COMMANDS = {
    "demo": "demo",
    "train": "train",
    "certify": "certify",
    "predict": "predict",
    "attack": "attack",
    "analyze": "analyze",
    "bench": "bench",
    "experiment": "experiment",
    "show": "show",
}

UNITS = ("Units: images are pixel arrays in [0, 1]; sigma and every radius are in mass-normalized units "
         "(the image divided by its total mass s, so it sums to 1). Radii are Wasserstein-1 distances with "
         "the L2 ground metric in pixels, unless a column says l1.")


class UserError(Exception):
    """An error the user can fix; reported as one line without a traceback."""


def _available_commands():
    for name, module in COMMANDS.items():
        try:
            yield name, import_module(f"wsmooth_ext.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"wsmooth_ext.commands.{module}":
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsmooth", description="Wasserstein smoothing: train, certify, attack and compare classifiers. "
        + UNITS, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _available_commands():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP + "\n\n" + UNITS,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # this process runs one workload to its end: keep freed memory for reuse instead of paying page
        # faults on every chunk's activations (infra/allocator.py; WSMOOTH_MALLOC=system opts out)
        from .infra.allocator import retain_freed_memory

        retain_freed_memory()
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"wsmooth {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`wsmooth train | head -1`): stop quietly, as a shell pipeline would (128 +
        # SIGPIPE); stdout goes to /dev/null so that the interpreter's last flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - user errors become one line; anything else is a bug: re-raise
        from .infra.distributed import PeerFailedError

        if not isinstance(exc, (UserError, ValueError, OSError, PeerFailedError)):
            raise
        print(f"wsmooth {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: Exception) -> str:
    """The message of a user-facing error on one line; an OSError as 'reason: file' (a full disk, a read-only
    file system, a missing folder), without its errno prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc)
    return " ".join(text.split())


if __name__ == "__main__":
    # Under `python -m wsmooth_ext.cli` (and torchrun -m) this file runs as __main__, a second copy of the
    # module: dispatch through the package's copy so that `except UserError` matches what commands raise.
    from wsmooth_ext.cli import main as package_main

    sys.exit(package_main())
