"""`wsmooth predict`: the smoothed classifier's prediction per image (Cohen et al.'s PREDICT), as a TSV log."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_common_arguments

HELP = ("predict with the smoothed classifier of a checkpoint (or of an ensemble of several; accuracy with "
        "abstentions; TSV log)")

EPILOG = """\
Cohen et al.'s PREDICT: --samples noisy samples per image; with top-two class counts nA >= nB, a two-sided binomial
test of nA out of nA + nB at 1/2 decides, abstaining (predict -1) if its p-value exceeds alpha, so each
returned class is the smoothed classifier's with probability >= 1 - alpha. This is how the paper measures
accuracy (n = 10,000, alpha = 0.05). The log follows Cohen's predict format (idx label predict correct time)
with extra columns; --noise/--sigma default to the checkpoint's, and an existing --out is never
overwritten (--resume continues it). Several checkpoints: the base classifier is their ensemble (log of the mean
of the models' softmax), as in `wsmooth certify`; they must agree on the defaults of --noise and --sigma.

example:  wsmooth predict model.pt --dataset mnist5k --samples 1000 --max-images 100 --out predict.tsv
ensemble: wsmooth predict a.pt b.pt c.pt --dataset mnist5k --samples 1000 --max-images 100 --out ens.tsv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_common_arguments(parser)
    from ..infra.options import N

    N.add_to(parser, f"samples per image (default {N.default})")
    parser.set_defaults(n0=None)


def run(args: argparse.Namespace) -> int:
    from ..runs.certify import predict_to_log
    from ._common import load_smoothed, run_sharded, summary_line

    loaded = load_smoothed(args)
    if not run_sharded(args, predict_to_log, loaded, n=args.n, alpha=args.alpha, batch_size=args.batch):
        return 0  # a torchrun worker other than rank 0: rank 0 reports
    for note in loaded.notes:
        print(note, file=sys.stderr)
    print(summary_line(Path(args.out), "predicted"))
    return 0
