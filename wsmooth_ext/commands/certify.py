"""`wsmooth certify`: certify a checkpoint's smoothed classifier on a dataset, one TSV row per image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "certify the smoothed classifier of a checkpoint: certified Wasserstein radius per test image (TSV log)"

EPILOG = """\
Cohen et al.'s CERTIFY: --n0 noisy samples select the top class, --n fresh samples bound its probability
from below (Clopper-Pearson, confidence 1 - alpha); abstain (predict -1, radius 0) if the bound is <= 1/2.
The radius column is the certified Wasserstein-1 radius with the L2 ground metric, radius_l1 with the L1
ground metric, both in mass-normalized units; they cover perturbations that preserve the image's mass.
Certificates: tight (default for laplace noises; Teng et al.), paper (Levine & Feizi Eq. 20/21, for exact
reproduction), uniform (the only one for flow-uniform).

--noise and --sigma default to the checkpoint's metadata. Images: indices 0, skip, 2*skip, ... of the
split, at most --max of them; an image's noise depends only on (--seed, its index), so runs can be split
with --skip/--max or interrupted and continued with --resume without changing any row. An existing --out
file is never overwritten: pass --resume to continue it (settings must match), or remove it.

example:  wsmooth certify model.pt --dataset mnist5k --n0 100 --n 1000 --max 100 --out certify.tsv
"""


def add_model_and_data_arguments(parser: argparse.ArgumentParser, dataset_help: str) -> None:
    """CHECKPOINT, --arch and the dataset selection: shared by certify, predict and attack."""
    from ..data import DATASETS
    from ..models import ARCHS

    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="model checkpoint (wsmooth_ext or reference format)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default=None,
                        help="architecture (needed only if the checkpoint does not record it)")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS), help=dataset_help)
    parser.add_argument("--data-dir", default=None, help="directory of the mnist/cifar10 files")
    parser.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by certify and predict."""
    from ..certificates import NOISES

    add_model_and_data_arguments(parser, "dataset to evaluate on")
    parser.add_argument("--noise", default=None, choices=NOISES,
                        help="smoothing noise (default: the checkpoint's training noise)")
    parser.add_argument("--sigma", type=float, default=None,
                        help="noise std per flow edge (or per pixel), mass-normalized units "
                             "(default: the checkpoint's)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="failure probability of each result, in (0, 1) (default 0.05)")
    parser.add_argument("--batch", type=int, default=1000, help="noisy images per forward pass (default 1000)")
    parser.add_argument("--skip", type=int, default=1, help="use every skip-th image (default 1)")
    parser.add_argument("--max", type=int, default=None, metavar="M", help="at most M images (default all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--out", required=True, metavar="FILE.tsv", help="log to write (tab-separated)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --out log")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--jit", action="store_true",
                        help="count votes with a traced, frozen TorchScript copy of the model (about 2x faster on "
                             "CPU), used only if it predicts exactly like the model on 2,000 noisy check samples")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..certificates import CERTIFICATES

    parser.epilog = EPILOG
    add_common_arguments(parser)
    parser.add_argument("--certificate", default=None, choices=CERTIFICATES,
                        help="certificate (default: the strongest valid one for the noise)")
    parser.add_argument("--n0", type=int, default=1000, help="selection samples per image (default 1000)")
    parser.add_argument("--n", type=int, default=10000, help="estimation samples per image (default 10000)")


def _positive(args, *names) -> None:
    from ..cli import UserError

    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def prepare(args: argparse.Namespace, certificate: str | None = None):
    """Validate arguments, load model and data. Returns (smooth, images, labels, indices, notes).

    The cheap checks (numbers, an existing --out without --resume) run before anything is loaded, and nothing
    here writes to --out, so a failing command leaves an existing log intact.
    """
    import torch

    from ..checkpoint import load_checkpoint
    from ..cli import UserError
    from ..data import load_dataset
    from ..distributed import context_from_env, device_for
    from ..smooth import Smooth

    _positive(args, "n", "n0", "batch", "skip", "max")
    if not 0.0 < args.alpha < 1.0:
        raise UserError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.sigma is not None and not args.sigma > 0:
        raise UserError(f"--sigma must be > 0, got {args.sigma}")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory")
    if out.exists() and out.stat().st_size > 0 and not args.resume:
        raise UserError(f"--out {out} already exists; pass --resume to continue it, or remove it to start over")
    try:  # under torchrun each process takes the GPU of its local rank
        device = device_for(context_from_env(), args.device)
    except RuntimeError as exc:
        raise UserError(f"--device {args.device!r} is not a torch device ({exc})") from None

    model, meta = load_checkpoint(args.checkpoint, arch=args.arch, map_location="cpu")
    noise = args.noise or meta.get("noise")
    if noise in (None, "none"):
        raise UserError(f"--noise is required: checkpoint {args.checkpoint} records noise {meta.get('noise')!r}")
    sigma = args.sigma if args.sigma is not None else meta.get("sigma")
    if sigma is None:
        raise UserError(f"--sigma is required: checkpoint {args.checkpoint} records no sigma")
    notes = []  # printed after a successful run, so a failing command prints only its error line
    trained = meta.get("noise"), meta.get("sigma")
    if trained[0] not in (None, "none") and trained != (noise, sigma):
        notes.append(f"note: the checkpoint was trained with noise {trained[0]} sigma {trained[1]}; smoothed with "
                     f"{noise} sigma {sigma}")
    if meta.get("dataset") not in (None, args.dataset):
        notes.append(f"note: the checkpoint was trained on {meta['dataset']}, evaluated on {args.dataset}")
    num_classes = meta.get("num_classes")
    if not isinstance(num_classes, int):
        raise UserError(f"checkpoint {args.checkpoint} records no num_classes")
    smooth = Smooth(model.to(device), num_classes, float(sigma), noise=noise, certificate=certificate,
                    seed=args.seed)

    images, labels = load_dataset(args.dataset, args.split, args.data_dir)
    expected = meta.get("input_shape")
    if expected is not None and list(images.shape[1:]) != list(expected):
        raise UserError(f"dataset {args.dataset} has images {list(images.shape[1:])}, the model expects {expected}")
    indices = list(range(0, images.shape[0], args.skip))[:args.max]
    images = images.to(device)
    if args.jit and indices:
        from ..inference import optimize_for_inference

        check = indices[:4]  # noisy samples of the first images, from sample indices no run uses ([2**32 - 500, 2**32))
        noisy = smooth._noisy(images[check], 500, 2 ** 32 - 500, torch.tensor(check, dtype=torch.int64))
        smooth.base_classifier, chosen = optimize_for_inference(smooth.base_classifier, noisy)
        notes.append(f"note: --jit: {chosen}")
    return smooth, images, labels, indices, notes


def _run_logged(args, fn, out_path, **kwargs):
    # An existing log without --resume raises FileExistsError, which the CLI reports as one line.
    return fn(**kwargs, out_path=out_path, resume=args.resume, progress=not args.no_progress)


def run_sharded(args, fn, device, indices, **kwargs) -> bool:
    """Run ``fn`` (certify_to_log / predict_to_log) over ``indices``, sharded under torchrun (see
    wsmooth_ext.distributed.run_sharded). True on the process that holds the complete --out log."""
    from ..distributed import run_sharded as run_distributed

    def run_shard(shard_indices, log_path, ctx):
        _run_logged(args, fn, log_path, indices=shard_indices, **kwargs)

    return run_distributed(run_shard, indices, args.out, device)


def summary_line(out: Path, what: str) -> str:
    from ..analysis import _floor_sig, summarize_certify_log

    s = summarize_certify_log(out)
    settings = [f"noise {s['noise']}", f"sigma {s['sigma']}"]
    if s["kind"] == "certify":
        settings += [f"certificate {s['certificate']}", f"n0 {s['n0']}"]
    settings += [f"n {s['n']}", f"alpha {s['alpha']}"]
    text = (f"{what} {s['n_images']} images ({', '.join(settings)}): accuracy {s['accuracy']:.2f}% "
            f"(abstain {s['abstain']:.2f}%)")
    if s["kind"] == "certify":
        median = "N/A" if s["median_radius"] is None else _floor_sig(s["median_radius"])
        text += f", median certified radius {median}"
    if s["base_accuracy"] is not None:
        text += f", base accuracy under noise {s['base_accuracy']:.2f}%"
    return text + f"; log: {out}"


def run(args: argparse.Namespace) -> int:
    from ..certify_log import certify_to_log

    smooth, images, labels, indices, notes = prepare(args, certificate=args.certificate)
    if not run_sharded(args, certify_to_log, images.device, indices, smooth=smooth, images=images, labels=labels,
                       n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch):
        return 0  # a torchrun worker other than rank 0: rank 0 reports
    for note in notes:
        print(note, file=sys.stderr)
    print(summary_line(Path(args.out), "certified"))
    return 0
