"""`wsmooth certify`: certify a checkpoint's smoothed classifier on a dataset, one TSV row per image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = ("certify the smoothed classifier of a checkpoint (or of an ensemble of several): certified Wasserstein "
        "radius per test image (TSV log)")

EPILOG = """\
Cohen et al.'s CERTIFY: --n0 noisy samples select the top class, --samples fresh samples bound its probability
from below (Clopper-Pearson, confidence 1 - alpha); abstain (predict -1, radius 0) if the bound is <= 1/2.
The radius column is the certified Wasserstein-1 radius with the L2 ground metric, radius_l1 with the L1
ground metric, both in mass-normalized units; they cover perturbations that preserve the image's mass.
Certificates: tight (default for laplace noises; Teng et al.), paper (Levine & Feizi Eq. 20/21, for exact
reproduction), uniform (the only one for flow-uniform).

Several checkpoints make one base classifier, their ensemble: its output is the log of the mean of the models'
softmax (Horvath et al. 2022), its vote that mean's top class. It is one fixed classifier, so its certificates
hold like a single model's; every vote costs one forward pass of each model. The models must agree on classes
and image shape, and on the noise and sigma that --noise and --sigma default to. The log's model_sha256 column
records every checkpoint's hash, joined with '+' in the order given; --resume refuses another set or order.

--noise and --sigma default to the checkpoint's metadata. Images: indices 0, skip, 2*skip, ... of the
split, at most --max-images of them; an image's noise depends only on (--seed, its index), so runs can be split
with --skip/--max-images or interrupted and continued with --resume without changing any row. An existing --out
file is never overwritten: pass --resume to continue it (settings must match, and its rows must be the first
images of the new --skip/--max-images selection: a larger --max-images extends a log, another selection is
refused), or remove it.

Option names avoid torchrun's own (--n and --max are aliases for direct use only), so they pass through
torchrun with or without a "--" before the subcommand.

example:  wsmooth certify model.pt --dataset mnist5k --n0 100 --samples 1000 --max-images 100 --out certify.tsv
ensemble: wsmooth certify a.pt b.pt c.pt --dataset mnist5k --n0 100 --samples 1000 --max-images 100 --out ens.tsv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..core.certificates import CERTIFICATES
    from ..infra.options import N, N0
    from ._common import add_common_arguments

    parser.epilog = EPILOG
    add_common_arguments(parser)
    parser.add_argument("--certificate", default=None, choices=CERTIFICATES,
                        help="certificate (default: the strongest valid one for the noise)")
    N0.add_to(parser)
    N.add_to(parser)


def run(args: argparse.Namespace) -> int:
    from ..runs.certify import certify_to_log
    from ._common import load_smoothed, run_sharded, summary_line

    loaded = load_smoothed(args, certificate=args.certificate)
    if not run_sharded(args, certify_to_log, loaded, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch):
        return 0  # a torchrun worker other than rank 0: rank 0 reports
    for note in loaded.notes:
        print(note, file=sys.stderr)
    print(summary_line(Path(args.out), "certified"))
    return 0
