"""`wsmooth experiment certified-training`: the training methods compared by certified radius (issue 12)."""

from __future__ import annotations

import argparse
import time

HELP = ("train wong_mnist with each training method at each sigma, certify held-out digits, and write a "
        "Markdown table and certified-accuracy curves (resumable; --quick for a miniature)")

EPILOG = """\
For each method (--methods) and sigma (--sigmas): trains wong_mnist on the training images of --dataset
exactly as `wsmooth train --method METHOD` would (the method's own hyper-parameters at their defaults, see
`wsmooth train -h`), then certifies the first --max-images held-out images exactly as `wsmooth certify` would.
Writes into --out DIR:
  METHOD_sigmaS.pt          checkpoint (per-epoch history; training time = sum of its epochs' seconds)
  METHOD_sigmaS.tsv         certify log (Cohen's columns first)
  summary.md                one row per run: smoothed accuracy, abstain %, median certified W1, ACR,
                            certified accuracy at --radii, training and certification time in seconds
  certified_accuracy.png    certified accuracy vs radius, one curve per run
  experiment.json           the settings DIR was started with
The defaults are the full comparison of issue 12 (8 runs; tens of minutes on a 2-core CPU, a few on a GPU).
--quick is a miniature (4 epochs, 100 held-out digits, n0 100, n 1000: about two minutes on a 2-core CPU);
options given with --quick override its values.

An existing non-empty DIR is refused unless --resume: then the settings must equal those in experiment.json
(--radii, --device, --certify-batch and --no-progress may change), unfinished checkpoints and logs are
continued (the result equals an uninterrupted run) and finished ones only re-read. On a shared CPU set
OMP_NUM_THREADS=1 (small training batches gain little from more threads).

example:  OMP_NUM_THREADS=1 wsmooth experiment certified-training --out wsmooth_out/certified_training
          wsmooth experiment certified-training --quick --methods noise,consistency --out quick
"""


def _split(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__} values: "
                                             f"{text!r}") from None
    return parse


def _quick(name: str) -> str:
    from ...experiments.certified_training import QUICK

    return f"; {QUICK[name]} with --quick" if name in QUICK else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ...certificates import CERTIFICATES
    from ...experiments.certified_training import DATASETS, DEFAULT_RADII, QUICK, Settings
    from ...methods import METHODS
    from ...noises import NOISES, help_text
    from ...train import OPTIMIZERS

    d, q = Settings(), QUICK
    parser.epilog = EPILOG
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty, or with --resume "
                        "one this command started)")
    parser.add_argument("--resume", action="store_true", help="continue the experiment in --out (same settings)")
    parser.add_argument("--quick", action="store_true",
                        help="miniature size: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in q.items()))
    parser.add_argument("--methods", type=_split(str), nargs="+", default=None, metavar="M",
                        help=f"training methods, comma-separated, among {', '.join(METHODS)} "
                        f"(default {','.join(d.methods)})")
    parser.add_argument("--sigmas", type=_split(float), nargs="+", default=None, metavar="S",
                        help="noise std per flow edge, mass-normalized units, comma-separated (default "
                        f"{','.join(f'{s:g}' for s in d.sigmas)})")
    parser.add_argument("--radii", type=_split(float), nargs="+", default=None, metavar="R",
                        help="radii of the certified-accuracy columns: W1, L2 ground metric, mass-normalized, "
                        f"comma-separated (default {','.join(f'{r:g}' for r in DEFAULT_RADII)})")
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help=f"images to train and certify on (default {d.dataset}: 4,000 train / 1,000 held-out "
                        "digits, embedded, offline)")
    parser.add_argument("--data-dir", default=None, help="directory of the mnist files (--dataset mnist only)")
    parser.add_argument("--train-size", type=int, default=None, metavar="N",
                        help=f"train on the first N training images (default all{_quick('train_size')})")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs per run (default {d.epochs}{_quick('epochs')})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"optimizer (default {d.optimizer})")
    parser.add_argument("--lr", type=float, default=None, help=f"learning rate (default {d.lr:g})")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"training batch size in images (default {d.batch})")
    parser.add_argument("--momentum", type=float, default=None,
                        help=f"SGD momentum, unused by adam (default {d.momentum:g})")
    parser.add_argument("--weight-decay", type=float, default=None, help=f"weight decay (default {d.weight_decay:g})")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed of weights, batch order, training and certification noise (default {d.seed})")
    parser.add_argument("--noise", choices=NOISES, default=None,
                        help=f"training and smoothing noise (default {d.noise}): {help_text()}")
    parser.add_argument("--certificate", choices=CERTIFICATES, default=None,
                        help="certificate (default: the strongest valid one for --noise: tight for the laplace noises, "
                        "uniform for the uniform ones)")
    parser.add_argument("--max-images", type=int, default=None, metavar="M",
                        help=f"certify the first M held-out images (default {d.max_images}"
                        f"{_quick('max_images')})")
    parser.add_argument("--n0", type=int, default=None,
                        help=f"selection samples per image (default {d.n0}{_quick('n0')})")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"estimation samples per image (default {d.samples}{_quick('samples')})")
    parser.add_argument("--alpha", type=float, default=None,
                        help=f"failure probability of each certificate, in (0, 1) (default {d.alpha:g})")
    parser.add_argument("--certify-batch", type=int, default=None, metavar="B",
                        help="noisy images per forward pass while certifying (default: automatic, as `wsmooth "
                        "certify`); changes no result")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def settings_from_args(args: argparse.Namespace):
    """The experiment's Settings: the options given, else --quick's values (with --quick), else the defaults."""
    import dataclasses

    from ...experiments.certified_training import QUICK, Settings

    values = dict(QUICK) if args.quick else {}
    for field in dataclasses.fields(Settings):
        given = getattr(args, field.name)
        if given is not None:
            values[field.name] = tuple(v for group in given for v in group) if field.name in ("methods",
                                                                                               "sigmas") else given
    return Settings(**values)


def run(args: argparse.Namespace) -> int:
    from ...experiments.certified_training import (DEFAULT_RADII, PLOT_FILE, SUMMARY_FILE, format_table,
                                                   run_certified_training)
    from .._common import resolve_device

    started = time.perf_counter()
    radii = DEFAULT_RADII if args.radii is None else [r for group in args.radii for r in group]
    runs = run_certified_training(args.out, settings_from_args(args), resume=args.resume, radii=radii,
                                  device=resolve_device(args.device), certify_batch=args.certify_batch,
                                  data_dir=args.data_dir, progress=not args.no_progress, quick=args.quick)
    print("\n" + format_table(runs) + "\n")
    print(f"wrote {args.out}/{SUMMARY_FILE}, {args.out}/{PLOT_FILE}, checkpoints and logs in {args.out} "
          f"({time.perf_counter() - started:.1f} s)")
    return 0
