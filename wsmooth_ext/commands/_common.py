"""What several commands share: the model/data/device arguments, loading a smoothed classifier, sharded runs.

Commands parse and print; the work they start lives in the packages below (runs, analysis, ...).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


def resolve_device(requested: str | None):
    """The torch device for ``--device`` (under torchrun: the GPU of the local rank), checked before any work."""
    import torch

    from ..cli import UserError
    from ..infra.distributed import context_from_env, device_for

    try:
        device = device_for(context_from_env(), requested)
    except RuntimeError as exc:
        raise UserError(f"--device {requested!r} is not a torch device ({exc})") from None
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise UserError(f"--device {requested}: this torch ({torch.__version__}) is a CPU-only build")
        if not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count():
            raise UserError(f"--device {requested}: no such CUDA device is visible "
                            f"({torch.cuda.device_count()} found)")
    elif device.type not in ("cpu", "cuda"):
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as exc:
            raise UserError(f"--device {requested}: not usable here ({str(exc).splitlines()[0]})") from None
    return device


def add_model_and_data_arguments(parser: argparse.ArgumentParser, dataset_help: str, several: bool = False) -> None:
    """CHECKPOINT, --arch and the dataset selection: shared by certify, predict and attack. ``several``: one or
    more checkpoints (``args.checkpoint`` is then a list), whose ensemble is the base classifier."""
    from ..inputs.data import DATASETS
    from ..inputs.models import ARCHS

    if several:
        parser.add_argument("checkpoint", metavar="CHECKPOINT", nargs="+",
                            help="model checkpoint (wsmooth_ext or reference format); several: one base classifier, "
                                 "their ensemble (the log of the mean of the models' softmax), smoothed as one")
    else:
        parser.add_argument("checkpoint", metavar="CHECKPOINT",
                            help="model checkpoint (wsmooth_ext or reference format)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default=None,
                        help="architecture (needed only if the checkpoint does not record it)")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS), help=dataset_help)
    parser.add_argument("--data-dir", default=None, help="directory of the mnist/cifar10 files")
    parser.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")


def add_image_selection(parser) -> None:
    """--skip and --max-images: which images of the split (certify, predict, attack)."""
    from ..infra.options import MAX_IMAGES, SKIP

    SKIP.add_to(parser)
    MAX_IMAGES.add_to(parser)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by certify and predict."""
    from ..core.noises import NOISES, help_text
    from ..infra.options import ALPHA, BATCH, SEED, SIGMA

    add_model_and_data_arguments(parser, "dataset to evaluate on", several=True)
    parser.add_argument("--noise", default=None, choices=NOISES,
                        help=f"smoothing noise (default: the checkpoint's training noise; several checkpoints must "
                             f"agree on it): {help_text()}")
    SIGMA.add_to(parser, f"{SIGMA.help} (default: the checkpoint's; several checkpoints must agree on it)")
    ALPHA.add_to(parser)
    BATCH.add_to(parser, f"{BATCH.help} (default: automatic, min(1000, 64 MiB / bytes of one float32 image) on CPU, "
                 "min(10000, 1 GiB / bytes of one image) on CUDA); with the image size at most 2**31 pixel values")
    add_image_selection(parser)
    SEED.add_to(parser)
    parser.add_argument("--out", required=True, metavar="FILE.tsv", help="log to write (tab-separated)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --out log")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--compile", action="store_true",
                        help="count votes with a torch.compile'd (inductor) copy of the model, used only if it "
                             "predicts exactly like the eager model on 2,000 noisy check samples; compile time is "
                             "reported apart from the per-image times")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="precision of the base classifier's votes (default fp32). bf16/fp16 certify the "
                             "smoothed classifier of the reduced-precision model (sound for it; its predictions "
                             "may differ from fp32's)")


def check_positive(args, *names) -> None:
    """Each named integer option, when given, is >= 1."""
    from ..cli import UserError
    from ..infra.options import flag

    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"{flag(name)} must be >= 1, got {value}")


def check_smoothing_options(args) -> None:
    """--alpha, --sigma, --seed and --noise/--certificate as far as they can be checked without the checkpoint."""
    from ..core import noises
    from ..core.certificates import resolve_certificate
    from ..cli import UserError

    if not 0.0 < args.alpha < 1.0:
        raise UserError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.sigma is not None:
        noises.check_sigma(args.sigma, "--sigma")
    if not 0 <= args.seed < 2 ** 63:
        raise UserError(f"--seed must be in [0, 2**63), got {args.seed}")
    if args.noise is not None and getattr(args, "certificate", None) is not None:
        resolve_certificate(args.noise, args.certificate)


@dataclass
class Loaded:
    """What certify and predict work on: the smoothed classifier, the images and the run's identity."""

    smooth: object
    images: object
    labels: object
    indices: list
    identity: dict
    notes: list


def load_smoothed(args: argparse.Namespace, certificate: str | None = None) -> Loaded:
    """Validate every argument and output path, then load model and data.

    All checks that need no file run before anything is loaded; nothing here writes to --out, so a failing
    command leaves an existing log intact.
    """
    from ..cli import UserError
    from ..core.smooth import Smooth
    from ..inputs.checkpoint import checkpoints_sha256
    from ..inputs.data import load_dataset

    _check_arguments(args)
    device = resolve_device(args.device)
    paths = checkpoint_paths(args)
    model, meta, noise, sigma, notes = _load_base_classifier(args, paths)
    smooth = Smooth(model.to(device), meta["num_classes"], sigma, noise=noise, certificate=certificate,
                    seed=args.seed)

    images, labels = load_dataset(args.dataset, args.split, args.data_dir)
    expected = meta.get("input_shape")
    if expected is not None and list(images.shape[1:]) != list(expected):
        raise UserError(f"dataset {args.dataset} has images {list(images.shape[1:])}, the model expects {expected}")
    indices = list(range(0, images.shape[0], args.skip))[:args.max_images]
    images = images.to(device)
    if args.batch is None:  # the automatic chunk size (wsmooth_ext.core.smooth.auto_batch_size)
        from ..core.smooth import auto_batch_size

        args.batch = auto_batch_size(images[:1])
    precision = getattr(args, "precision", "fp32")
    notes += _choose_voting_model(args, smooth, images, indices, precision)
    identity = {"model_sha256": checkpoints_sha256(paths), "dataset": args.dataset, "split": args.split,
                "precision": precision}
    return Loaded(smooth, images, labels, indices, identity, notes)


def _check_arguments(args: argparse.Namespace) -> None:
    """Every check of load_smoothed that needs no file: option ranges, the vote budget, the chunk size, --out."""
    from ..cli import UserError
    from ..core.smooth import check_vote_budget
    from ..infra.options import check_options
    from ..runs.logfile import check_new_output

    check_options(args)  # every value in its stated range, named as typed
    check_positive(args, "n", "n0", "batch", "skip", "max_images")
    check_smoothing_options(args)
    check_vote_budget("--n0 + --samples" if args.n0 is not None else "--samples", args.n + (args.n0 or 0))
    if args.batch is not None:
        from ..inputs.data import DATASETS
        from ..infra.ranges import check_values_at_once

        try:
            check_values_at_once(args.batch, DATASETS[args.dataset].input_shape, "--batch")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    check_new_output(args.out, args.resume)


def _load_base_classifier(args: argparse.Namespace, paths: list):
    """(model, first checkpoint's metadata, noise, sigma, notes): the model (or ensemble) on the CPU, with the
    smoothing noise and sigma from the options or, where absent, from what every checkpoint agrees on."""
    from ..cli import UserError
    from ..inputs.checkpoint import load_checkpoint, load_ensemble

    if len(paths) == 1:  # the model itself, not a one-member ensemble: its votes are its own argmax
        model, meta = load_checkpoint(paths[0], arch=args.arch, map_location="cpu")
        metas = [meta]
    else:
        model, metas = load_ensemble(paths, arch=args.arch, map_location="cpu")
        meta = metas[0]
    noise = args.noise or agreed_default(paths, metas, "noise")
    if noise in (None, "none"):
        raise UserError(f"--noise is required: checkpoint {paths[0]} records noise {meta.get('noise')!r}")
    sigma = args.sigma if args.sigma is not None else agreed_default(paths, metas, "sigma")
    if sigma is None:
        raise UserError(f"--sigma is required: checkpoint {paths[0]} records no sigma")
    notes = []  # printed after a successful run, so a failing command prints only its error line
    for path, member in zip(paths, metas):
        notes += _training_notes(member, noise, sigma, args.dataset,
                                 "the checkpoint" if len(paths) == 1 else f"checkpoint {path}")
    if not isinstance(meta.get("num_classes"), int):
        raise UserError(f"checkpoint {paths[0]} records no num_classes")
    return model, meta, noise, sigma, notes


def _choose_voting_model(args: argparse.Namespace, smooth, images, indices: list, precision: str) -> list:
    """Put the model that counts votes in place (--compile, --precision); returns the notes that say which."""
    import torch

    from ..core.noises import CHECK_SAMPLES

    notes = []
    if args.compile and indices:
        from ..core.inference import compile_for_inference

        check = indices[:4]  # noisy samples of the first images, from the sample indices reserved for checks
        noisy = smooth._noisy(images[check], 500, CHECK_SAMPLES.start, torch.tensor(check, dtype=torch.int64))
        smooth.base_classifier, chosen, seconds = compile_for_inference(smooth.base_classifier, noisy, args.batch,
                                                                        precision=precision)
        notes.append(f"note: --compile: {chosen}; compiling and checking took {seconds:.1f} s (not in the "
                     "per-image times)")
    elif precision != "fp32":
        from ..core.inference import with_precision

        smooth.base_classifier = with_precision(smooth.base_classifier, precision)
    if precision != "fp32":
        notes.append(f"note: --precision {precision}: certified the smoothed classifier of the {precision} base "
                     "model (recorded in the log's precision column)")
    return notes


def checkpoint_paths(args) -> list:
    """The CHECKPOINT arguments as a list (one, or the members of an ensemble)."""
    return list(args.checkpoint) if isinstance(args.checkpoint, (list, tuple)) else [args.checkpoint]


def agreed_default(paths: list, metas: list, key: str):
    """The ``noise`` or ``sigma`` the checkpoints record, which every member of an ensemble must share to be a
    default (UserError naming the first checkpoint that differs)."""
    from ..cli import UserError

    first = metas[0].get(key)
    for path, meta in zip(paths[1:], metas[1:]):
        if meta.get(key) != first:
            raise UserError(f"checkpoint {path} records {key} {meta.get(key)!r}, checkpoint {paths[0]} records "
                            f"{first!r}: the models of an ensemble must agree on the default {key} (or give "
                            f"--{key})")
    return first


def _training_notes(meta: dict, noise: str, sigma: float, dataset: str, which: str) -> list:
    """Notes on how one model was trained, where that differs from how it is used (``which``: how to name it)."""
    from ..training.adversarial import describe_adversarial

    notes = []
    trained = meta.get("noise"), meta.get("sigma")
    if trained[0] not in (None, "none") and trained != (noise, sigma):
        notes.append(f"note: {which} was trained with noise {trained[0]} sigma {trained[1]}; smoothed with "
                     f"{noise} sigma {sigma}")
    if meta.get("dataset") not in (None, dataset):
        notes.append(f"note: {which} was trained on {meta['dataset']}, evaluated on {dataset}")
    adversarial = describe_adversarial(meta.get("train_args"))
    if adversarial:
        base = "the base model" if which == "the checkpoint" else f"the model of {which}"
        notes.append(f"note: {base} was {adversarial}")
    return notes


def run_sharded(args, fn, loaded: Loaded, **kwargs) -> bool:
    """Run ``fn`` (certify_to_log / predict_to_log) over the loaded images, sharded under torchrun (see
    wsmooth_ext.runs.sharded). True on the process that holds the complete --out log."""
    from ..runs.sharded import run_sharded as run_distributed

    def run_shard(shard_indices, log_path, ctx):
        fn(smooth=loaded.smooth, images=loaded.images, labels=loaded.labels, indices=shard_indices,
           out_path=log_path, identity=loaded.identity, resume=args.resume, progress=not args.no_progress,
           **kwargs)

    return run_distributed(run_shard, loaded.indices, args.out, loaded.images.device)


def summary_line(out: Path, what: str) -> str:
    from ..analysis.certify import summarize_certify_log
    from ..analysis.tables import floor_sig

    s = summarize_certify_log(out)
    settings = [f"noise {s['noise']}", f"sigma {s['sigma']}"]
    if s["kind"] == "certify":
        settings += [f"certificate {s['certificate']}", f"n0 {s['n0']}"]
    settings += [f"n {s['n']}", f"alpha {s['alpha']}"]
    text = (f"{what} {s['n_images']} images ({', '.join(settings)}): accuracy {s['accuracy']:.2f}% "
            f"(abstain {s['abstain']:.2f}%)")
    if s["kind"] == "certify":
        median = "N/A" if s["median_radius"] is None else floor_sig(s["median_radius"])
        text += f", median certified radius {median}"
    if s["base_accuracy"] is not None:
        text += f", base accuracy under noise {s['base_accuracy']:.2f}%"
    return text + f"; log: {out}"


