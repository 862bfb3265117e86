"""`wsmooth train`: train a base classifier under smoothing noise and save a checkpoint."""

from __future__ import annotations

import argparse
import contextlib

HELP = "train a base classifier under flow (Wasserstein) or pixel noise; writes a checkpoint with metadata"

EPILOG = """\
Noise: flow-laplace is the paper's Wasserstein-smoothing noise (Laplace on every flow edge, std sigma per
edge), flow-uniform the uniform variant, pixel-laplace the paper's Laplace-smoothing baseline, none clean
training. Every example of every batch gets its own noise draw. Train with the noise and sigma you will
certify with.

Defaults are the paper's: SGD, lr 0.001, momentum 0.9, weight decay 5e-4, batch 128, 200 epochs (and for
cifar10 its augmentation: random crops of the 4-pixel zero-padded image and horizontal flips).
Datasets: mnist5k (embedded, offline: 4,000 train / 1,000 test MNIST digits), digits (scikit-learn 8x8),
mnist and cifar10 from --data-dir in torchvision's layout (MNIST/raw/*-idx?-ubyte[.gz],
cifar-10-batches-py/*); --download fetches them when torchvision is installed.
A checkpoint is written after every epoch; --resume continues an interrupted run from it (same settings;
--epochs may be raised to extend a finished run, except under --lr-schedule cosine or one-cycle: their
learning rate at every step depends on the total epochs, so the epochs done were trained under the shorter
run's schedule and the extended run would equal no uninterrupted one; constant and step extend freely).

Learning-rate schedules (--lr-schedule; step k = e*B + b of N = T*B, B batches per epoch, T epochs; set before
every step as a pure function of the step, so --resume equals an uninterrupted run):
  constant   lr (the default: as before schedules existed)
  step       lr * gamma^floor(e / S)                  per epoch (--lr-gamma gamma, --lr-step S)
  cosine     lr * (1 + cos(pi k / N)) / 2             per batch, from lr to 0 over the run
  one-cycle  linear from lr/D to lr over --lr-warmup W epochs, then lr * (1 + cos(pi (k - w) / (N - w))) / 2
             (w = W*B; Smith & Topin's one-cycle, torch's OneCycleLR with a linear rise and final lr 0)
--lr-warmup W > 0 with the other schedules multiplies them by a linear ramp from 1/D to 1 over the first W
epochs, per batch (D = --lr-div). --sigma-warmup K trains epoch e (0-based) with sigma * (s + (1 - s) e / K)
for e < K (s = --sigma-warmup-start), then with --sigma: the same noise draws, scaled; the test accuracy
under noise after every epoch uses --sigma. Every one of these is recorded in the checkpoint and fixed for
--resume.
  wsmooth train --lr 0.01 --lr-schedule one-cycle --lr-warmup 3 --sigma-warmup 5 --epochs 30 --out model.pt

Under torchrun (one process per GPU, or several CPU processes) training is data-parallel with
DistributedDataParallel: every batch of --batch images is split across the processes and their gradients
averaged, which equals a single-process run with the same --batch up to float rounding (not for BatchNorm
models). Rank 0 prints and writes the checkpoint. Put -- before the subcommand:
  torchrun --standalone --nproc-per-node 2 -m wsmooth_ext.cli -- train --dataset mnist5k --out model.pt

Methods (--method; docs/math.md §Certified training): noise trains with cross-entropy on noisy copies (the
paper); consistency adds Jeong & Shin's consistency regularization over --num-noise copies per image;
smoothadv (Salman et al.) trains on the noisy copies of a Wasserstein-adversarial image x' = x + s*div(delta),
||delta||_1 <= --adv-epsilon, found by --adv-steps projected gradient steps on the smoothed classifier.
macer adds a hinge on the soft smoothed classifier's certified radius (target --macer-gamma).
The method and its settings are fixed for --resume like the others.

Adversarial training (--adversarial; docs/attacks.md section Adversarial training): a plain base model (no
noise; --noise defaults to none and may not be another) trained on Wasserstein adversarial examples that the
attack finds against the current weights, the "adversarially trained" baseline of the paper's Fig. 5 (Wong
et al. 2019; PGD training as Madry et al.). Each batch: --adv-attack-steps steps of the attack at radius eps
from the clean images (no early stop), then cross-entropy on the examples (plus --adv-clean-weight times the
clean cross-entropy). eps grows geometrically from --adv-eps/10 in the first epoch to --adv-eps in epoch
--adv-eps-warmup. Units of --adv-eps are the attack's own, all mass-normalized: sinkhorn - nominal radius of
the entropic Wasserstein ball (cost |offset|_2, k 5, lambda 1000; exact W1 of its examples is typically about
half); frank-wolfe - W1 with L2 ground metric (exact bound, k 5 window); flow - L1 norm of the flow plan
(bounds W1 with L1 ground metric). The attack is deterministic, so --resume reproduces an uninterrupted run;
the settings are recorded in the checkpoint (train_args) and fixed for --resume. Cost per step and batch of 128
mnist digits on one CPU core: flow ~0.03 s, sinkhorn ~1 s, frank-wolfe ~3.7 s. For a smoothed classifier
use --method smoothadv instead (its budget is --adv-epsilon).
  wsmooth train --dataset mnist5k --adversarial flow --adv-eps 0.1 --optimizer adam --epochs 10 --out adv.pt

example:  wsmooth train --dataset mnist5k --noise flow-laplace --sigma 0.01 --epochs 30 --out model.pt
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..inputs.data import DATASETS
    from ..inputs.models import ARCHS
    from ..core.noises import TRAINING_NOISES, help_text
    from ..training.options import (BATCH, EPOCHS, LR, MOMENTUM, OPTIMIZER, SCHEDULE, SEED, TRAIN_SIZE,
                                    WEIGHT_DECAY)

    parser.epilog = EPILOG
    parser.add_argument("--dataset", default="mnist5k", choices=sorted(DATASETS), help="dataset (default mnist5k)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default=None,
                        help="model architecture (default: wong_mnist for MNIST-like data, resnet18 for cifar10)")
    parser.add_argument("--noise", default=None, choices=TRAINING_NOISES,
                        help=f"training noise (default flow-laplace; none with --adversarial): {help_text()}; "
                        "none: clean training")
    parser.add_argument("--sigma", type=float, default=0.01,
                        help="noise std per flow edge (or per pixel), mass-normalized units (default 0.01)")
    EPOCHS.add_to(parser)
    LR.add_to(parser)
    BATCH.add_to(parser, f"{BATCH.help} (default {BATCH.default}); under torchrun the global batch, split across the "
                 "processes")
    MOMENTUM.add_to(parser)
    WEIGHT_DECAY.add_to(parser)
    OPTIMIZER.add_to(parser)
    for option in SCHEDULE:  # --lr-schedule ... --sigma-warmup-start
        option.add_to(parser)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random 4-pixel crops + horizontal flips, as the paper does for CIFAR-10 "
                        "(default: on for cifar10, off otherwise)")
    from ._training_options import add_method_arguments

    add_method_arguments(parser)  # --method, --adversarial and every method's hyper-parameters
    SEED.add_to(parser)
    TRAIN_SIZE.add_to(parser)
    parser.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --out if it exists (without it, an existing --out is an error)")
    parser.add_argument("--data-dir", default=None, help="directory of the mnist/cifar10 files")
    parser.add_argument("--download", action="store_true", help="download mnist/cifar10 (needs torchvision)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..cli import UserError
    from ..inputs.data import DATASETS
    from ..infra.distributed import context_from_env
    from ..runs.logfile import exclusive_output
    from ._common import resolve_device

    info = DATASETS[args.dataset]
    arch = args.arch or info.default_arch
    _check_arguments(args)  # every argument and the output path, before any data is read
    ctx = context_from_env()  # rank and world size under torchrun; a single process otherwise
    if ctx.enabled and args.batch < ctx.world_size:
        raise UserError(f"--batch {args.batch} is smaller than the number of processes ({ctx.world_size}): "
                        "--batch is the global batch, split across the processes")
    device = resolve_device(args.device)  # under torchrun each process takes the GPU of its local rank
    # one writer per checkpoint: rank 0 writes it, so rank 0 holds the lock
    with exclusive_output(args.out) if ctx.is_main else contextlib.nullcontext():
        return _train(args, info, arch, ctx, device)


def _check_arguments(args) -> None:
    from ..core import noises
    from ..cli import UserError
    from ..infra.options import check_options, flag
    from ..training import schedules
    from ..runs.logfile import check_new_output
    from ._training_options import check_method_options

    try:
        check_options(args)  # every value in its declared range (training/options.py), named as typed
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_method_options(args)  # also resolves --noise's default: the method's
    try:
        schedules.check(args, args.noise, flag)  # what the ranges cannot say (one-cycle needs --lr-warmup, ...)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    noises.check_sigma(args.sigma, "--sigma")  # also with --noise none: a wrong value is a wrong command
    # an existing checkpoint is continued only with --resume, never silently replaced
    check_new_output(args.out, args.resume)


def _train(args, info, arch, ctx, device) -> int:

    from ..inputs.data import load_dataset
    from ..infra.distributed import barrier, init_process_group, shutdown
    from ..inputs.models import build_model
    from ..training.keywords import train
    from ._training_options import method_kwargs
    from ..training.options import SCHEDULE

    train_x, train_y = load_dataset(args.dataset, "train", args.data_dir, args.download)
    test_x, test_y = load_dataset(args.dataset, "test", args.data_dir, False)
    if args.train_size is not None:
        train_x, train_y = train_x[:args.train_size], train_y[:args.train_size]
    augment = args.augment if args.augment is not None else args.dataset == "cifar10"
    model = build_model(arch, num_classes=info.num_classes, input_shape=tuple(train_x.shape[1:]),
                        mean=info.mean, std=info.std, seed=args.seed).to(device)  # the same weights on every rank
    if ctx.is_main:
        schedule = f" ({args.lr_schedule} schedule)" if args.lr_schedule != "constant" else ""
        processes = f" x {ctx.world_size} processes" if ctx.enabled else ""
        how = (f"{args.adversarial} adversarial examples" if args.adversarial != "none"
               else "no noise" if args.noise == "none" else f"{args.noise} noise, sigma {args.sigma:g}")
        print(f"training {arch} on {args.dataset} ({len(train_x)} train / {len(test_x)} test images) with "
              f"{how}, {args.optimizer} lr {args.lr:g}{schedule}, batch {args.batch}, "
              f"{args.epochs} epochs{', augmented' if augment else ''}, method {args.method}, on {device}{processes}", flush=True)
    init_process_group(ctx, device)  # gloo on CPU, NCCL on GPU; no-op for a single process
    try:
        history = train(model, train_x, train_y, noise=args.noise, sigma=args.sigma, epochs=args.epochs,
                        lr=args.lr, batch_size=args.batch, seed=args.seed, momentum=args.momentum,
                        weight_decay=args.weight_decay, test_images=test_x, test_labels=test_y,
                        checkpoint_path=args.out, resume=args.resume, progress=not args.no_progress,
                        optimizer=args.optimizer, augment=augment, metadata={"dataset": args.dataset},
                        dist_ctx=ctx if ctx.enabled else None, **{o.name: getattr(args, o.name) for o in SCHEDULE},
                        **method_kwargs(args))
        # leave the group together: without this barrier a rank that tore gloo down while rank 0 was still
        # finishing its epoch (log line, checkpoint) was seen to abort at exit ("terminate called without
        # an active exception") in about 1 run in 6 on torch 2.13 CPU; with it, about 1 in 80
        barrier(ctx)
    finally:
        shutdown(ctx)
    if history and ctx.is_main:
        last = history[-1]
        under = (f", under {args.noise} noise {100 * last['test_noisy_acc']:.2f}%" if args.noise != "none" else "")
        print(f"final: test accuracy clean {100 * last['test_clean_acc']:.2f}%{under}; checkpoint {args.out}")
    return 0
