"""`wsmooth experiment fig5`: the paper's Fig. 5 — standard, adversarially trained and smoothed models under
Wasserstein attack (issue 11, item 6)."""

from __future__ import annotations

import argparse
import time

HELP = ("the paper's Fig. 5: train (or take) a standard, an adversarially trained and a Wasserstein-smoothed "
        "wong_mnist, attack held-out digits with each method, tabulate and plot accuracy under attack vs "
        "nominal eps and vs exact W1 (resumable; --quick for a miniature)")

EPILOG = """\
Models (each trained exactly as `wsmooth train` would, or given as a checkpoint with --standard/--adversarial/
--smoothed): standard = plain training; adversarial = Wasserstein adversarial training of the plain model
(default flow-space PGD, --adv-training flow, the one that is practical on a CPU; sinkhorn is Wong et al.'s own
and ~30x costlier per step); smoothed = flow-laplace noise training at --sigma, attacked as the smoothed
classifier (gradients of the soft smoothed classifier over --n-grad fresh samples; success when the hard
smoothed prediction over --n-test samples, binomial test at --alpha, is wrong or abstains, as the paper).

Every model is attacked with every --methods attack on the first --max-images held-out digits in the paper's
growing-eps mode (eps from --eps0, x--eps-factor every --eps-every iterations for the digits still standing,
--max-iter iterations; radius = eps at the first flip), the attacks' own parameters at `wsmooth attack`'s
defaults. Accuracy under attack at r: % of the digits correct before the attack and not broken within r; a
digit is broken at W1 <= r when the example that fooled it has exact W1 <= r (L2 ground metric, linear
program, mass-normalized), at nominal eps <= r when its radius is <= r; wrong before the attack = broken at
0. Nominal eps is in each attack's own units (sinkhorn: entropic-ball radius; frank-wolfe, pgd-dual: W1
bound; flow: flow-plan L1 norm): compare attacks on the W1 columns.

Writes into --out DIR:
  standard.pt adversarial.pt smoothed.pt   checkpoints of the models trained here
  MODEL_METHOD.tsv                         attack logs, as `wsmooth attack` writes them (`wsmooth analyze`)
  summary.md                               the models; accuracy under attack at --grid vs nominal eps and vs
                                           exact W1, medians, seconds per digit; the command line
  fig5.png                                 the curves: one row per attack, vs nominal eps | vs exact W1
  experiment.json                          the settings DIR was started with

Sizes. The defaults are paper-like: 20 epochs, 100 digits, the paper's MNIST attack schedule (eps0 0.3, x1.1
every 10, 200 iterations) and smoothed-attack samples (n_grad 128, n_test 10,000). On a 2-core CPU that takes
hours, almost all of it the smoothed model: about 0.3 s per digit and iteration at n_test 10,000 while the digit
stands, so an estimated 2-4 h for 100 digits and two attacks (scaled from --quick's measured costs, not run);
a GPU is advised. --quick is a miniature (6 epochs, 20 digits, eps0 0.1 x1.5 every 5, 30 iterations, n_grad 16,
n_test 1000): measured 3 min 46 s wall (124 s CPU) on the shared 2-core development CPU with
OMP_NUM_THREADS=1, about 5 minutes to allow for load. Options given with --quick override its values.

An existing non-empty DIR is refused unless --resume: then the settings (and given checkpoints) must equal
those in experiment.json (--grid, --device, --attack-batch and --no-progress may change); unfinished
checkpoints and logs are continued and finished ones only re-read.

example:  OMP_NUM_THREADS=1 wsmooth experiment fig5 --quick --out fig5_quick
          wsmooth experiment fig5 --smoothed my_sigma0.01.pt --methods sinkhorn,frank-wolfe,flow --out fig5
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
    from ...experiments.fig5 import QUICK

    return f"; {QUICK[name]} with --quick" if name in QUICK else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ...adversarial import UNITS
    from ...experiments.fig5 import ADV_TRAININGS, ATTACK_METHODS, DATASETS, DEFAULT_GRID, QUICK, Settings
    from ...train import OPTIMIZERS

    d = Settings()
    parser.epilog = EPILOG
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty, or with --resume "
                        "one this command started)")
    parser.add_argument("--resume", action="store_true", help="continue the experiment in --out (same settings)")
    parser.add_argument("--quick", action="store_true",
                        help="miniature size: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    m = parser.add_argument_group("models (default: train all three here)")
    for name in ("standard", "adversarial", "smoothed"):
        m.add_argument(f"--{name}", default=None, metavar="CKPT",
                       help=f"attack this checkpoint as the {name} model instead of training it")
    m.add_argument("--adv-training", choices=ADV_TRAININGS, default=None,
                   help=f"attack used to train the adversarial model (wsmooth train --adversarial; default "
                   f"{d.adv_training})")
    m.add_argument("--adv-eps", type=float, default=None,
                   help=f"its final radius, in its own units (flow: {UNITS['flow']}) (default {d.adv_eps:g})")
    m.add_argument("--adv-eps-warmup", type=int, default=None,
                   help=f"epochs over which it grows geometrically from --adv-eps/10 (default {d.adv_eps_warmup}"
                   f"{_quick('adv_eps_warmup')})")
    m.add_argument("--adv-attack-steps", type=int, default=None,
                   help=f"attack steps per training batch (default {d.adv_attack_steps})")
    m.add_argument("--sigma", type=float, default=None,
                   help=f"flow-laplace noise of the smoothed model, std per flow edge, mass-normalized "
                   f"(default {d.sigma:g}, the paper's Fig. 5)")
    t = parser.add_argument_group("training")
    t.add_argument("--dataset", choices=DATASETS, default=None,
                   help=f"images to train and attack (default {d.dataset}: 4,000 train / 1,000 held-out digits, "
                   "embedded, offline)")
    t.add_argument("--data-dir", default=None, help="directory of the mnist files (--dataset mnist only)")
    t.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="train on the first N training images (default all)")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs of each model (default {d.epochs}{_quick('epochs')})")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"optimizer (default {d.optimizer})")
    t.add_argument("--lr", type=float, default=None, help=f"learning rate (default {d.lr:g})")
    t.add_argument("--batch", type=int, default=None, help=f"training batch size in images (default {d.batch})")
    t.add_argument("--momentum", type=float, default=None, help=f"SGD momentum, unused by adam (default {d.momentum:g})")
    t.add_argument("--weight-decay", type=float, default=None, help=f"weight decay (default {d.weight_decay:g})")
    t.add_argument("--seed", type=int, default=None,
                   help=f"seed of weights, batch order, training noise and the smoothed attacks' noise (default {d.seed})")
    a = parser.add_argument_group("attacks")
    a.add_argument("--methods", type=_split(str), nargs="+", default=None, metavar="M",
                   help=f"attacks, comma-separated, among {', '.join(ATTACK_METHODS)} (default "
                   f"{','.join(d.methods)}; sinkhorn is the paper's)")
    a.add_argument("--max-images", type=int, default=None, metavar="M",
                   help=f"attack the first M held-out digits (default {d.max_images}{_quick('max_images')})")
    a.add_argument("--eps0", type=float, default=None,
                   help=f"initial radius, mass-normalized, in each attack's units (default {d.eps0:g}{_quick('eps0')})")
    a.add_argument("--eps-factor", type=float, default=None,
                   help=f"radius growth factor, >= 1 (default {d.eps_factor:g}{_quick('eps_factor')})")
    a.add_argument("--eps-every", type=int, default=None,
                   help=f"grow the radius every this many iterations (default {d.eps_every}{_quick('eps_every')})")
    a.add_argument("--max-iter", type=int, default=None,
                   help=f"attack iterations (default {d.max_iter}{_quick('max_iter')})")
    a.add_argument("--n-grad", type=int, default=None,
                   help=f"smoothed model: noise samples per gradient (default {d.n_grad}{_quick('n_grad')})")
    a.add_argument("--n-test", type=int, default=None,
                   help=f"smoothed model: noise samples per success test (default {d.n_test}{_quick('n_test')})")
    a.add_argument("--alpha", type=float, default=None,
                   help=f"smoothed model: binomial-test level of the success test, in (0, 1) (default {d.alpha:g})")
    a.add_argument("--attack-batch", type=int, default=20, metavar="B",
                   help="digits attacked together (default 20); changes no result beyond float rounding")
    parser.add_argument("--grid", type=_split(float), nargs="+", default=None, metavar="R",
                        help="table columns: nominal eps and exact W1 values, mass-normalized, comma-separated "
                        f"(default {','.join(f'{g:g}' for g in DEFAULT_GRID)})")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def settings_from_args(args: argparse.Namespace):
    """The experiment's Settings: the options given, else --quick's values (with --quick), else the defaults."""
    import dataclasses

    from ...experiments.fig5 import QUICK, Settings

    values = dict(QUICK) if args.quick else {}
    for field in dataclasses.fields(Settings):
        given = getattr(args, field.name)
        if given is not None:
            values[field.name] = tuple(v for group in given for v in group) if field.name == "methods" else given
    return Settings(**values)


def run(args: argparse.Namespace) -> int:
    from ...experiments.fig5 import DEFAULT_GRID, PLOT_FILE, SUMMARY_FILE, format_tables, run_fig5
    from .._common import resolve_device

    started = time.perf_counter()
    grid = DEFAULT_GRID if args.grid is None else [g for group in args.grid for g in group]
    result = run_fig5(args.out, settings_from_args(args), resume=args.resume, grid=grid,
                      device=resolve_device(args.device), attack_batch=args.attack_batch, data_dir=args.data_dir,
                      progress=not args.no_progress, quick=args.quick)
    print("\n" + format_tables(result) + "\n")
    print(f"wrote {args.out}/{SUMMARY_FILE}, {args.out}/{PLOT_FILE}, checkpoints and attack logs in {args.out} "
          f"({time.perf_counter() - started:.1f} s)")
    return 0
