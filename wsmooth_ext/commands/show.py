"""`wsmooth show noise` / `wsmooth show attack`: pictures of the smoothing samples and of adversarial examples.

The pictures are drawn by ``wsmooth_ext.analysis.pictures`` (which notebooks can call directly); this module
parses the arguments, loads what they name and writes the file (atomically; an existing file only with
--overwrite).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "draw pictures: smoothing samples as the classifier sees them (noise), adversarial examples (attack)"

NOISE_HELP = "clean images and the smoothing samples certification draws for them, with their mass and votes"
NOISE_EPILOG = """\
One row per (image, noise family, sigma): the clean image, then samples 0..k-1 of the image's vote range,
drawn by the same op, seed and key (the dataset index) as `wsmooth predict` and `wsmooth certify`: they are
the first k votes of predict and of certify's selection step with the same --seed. Each panel is titled
with its mass (sum of pixels: flow noise keeps it exactly, pixel noise changes it) and, with --checkpoint,
the base classifier's vote (red when wrong). Noisy pixels leave [0, 1]: one colour scale for all panels,
grey on [0, 1], blue below 0, red above 1, over the full range of values drawn (stated on the colour bar;
nothing is clipped). Colour images are drawn as the mean over their channels.

example:  wsmooth show noise --dataset mnist5k --indices 0,7 --checkpoint model.pt --out noise.png
"""

ATTACK_HELP = "clean | adversarial | difference with the optimal transport plan, from wsmooth attack --save-adv"
ATTACK_EPILOG = """\
One row per attacked image of LOG (a `wsmooth attack` log) with the images of its --save-adv file: the clean
image, the adversarial image and their signed difference, titled with the true label, both predictions, the
nominal radius eps and the exact W1 (linear program, L2 ground metric, each image divided by its own mass;
the log's w1 column). Arrows on the difference are the largest moves of the optimal transport plan of that
linear program, from the pixel the mass leaves to the pixel it reaches, width proportional to the mass
moved (the scale is in the title). Colour scales: pixels grey on [0, 1]; differences blue (lost) to red
(gained), symmetric about 0 and wide enough for the largest change; nothing is clipped.

example:  wsmooth show attack attack.tsv --adv adv.pt --only-success --sort-by w1 --max 4 --out attack.png
"""


def _list_of(kind, what: str):
    """An argparse type: one value or a comma-separated list of them (``--indices 0,7``)."""
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what} or comma-separated list of them: {text!r}") from None
    return parse


def _arrow_count(text: str):
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'all': {text!r}") from None


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE.png",
                        help="picture to write; the format follows the suffix (png, pdf, svg, ...)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..analysis.pictures import DEFAULT_NOISES, DEFAULT_SIGMAS
    from ..analysis.pictures.attack import DEFAULT_ARROWS, MAX_EXAMPLES, SORT_KEYS
    from ..analysis.pictures.noise import MAX_IMAGES, MAX_SAMPLES
    from ..cli import UNITS
    from ..inputs.data import DATASETS
    from ..inputs.models import ARCHS
    from ..core.noises import NOISES

    sub = parser.add_subparsers(dest="picture", metavar="PICTURE", required=True)
    noise = sub.add_parser("noise", help=NOISE_HELP, description=NOISE_HELP + "\n\n" + UNITS, epilog=NOISE_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    noise.add_argument("--dataset", default="mnist5k", choices=sorted(DATASETS), help="dataset (default mnist5k)")
    noise.add_argument("--data-dir", default=None, help="directory of the mnist/cifar10 files")
    noise.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")
    noise.add_argument("--indices", type=_list_of(int, "an integer"), nargs="+", default=[[0, 1]], metavar="I",
                       help=f"dataset indices of the images (1 to {MAX_IMAGES}), separated by spaces or commas "
                            "(default 0,1)")
    noise.add_argument("--noises", nargs="+", choices=NOISES, default=list(DEFAULT_NOISES), metavar="NOISE",
                       help=f"noise families, one row each (default {' '.join(DEFAULT_NOISES)}; "
                            f"choices {', '.join(NOISES)})")
    noise.add_argument("--sigmas", type=_list_of(float, "a number"), nargs="+", default=[list(DEFAULT_SIGMAS)],
                       metavar="S",
                       help="noise standard deviations, mass-normalized units, one row each (default "
                            f"{','.join(f'{s:g}' for s in DEFAULT_SIGMAS)})")
    noise.add_argument("--samples", type=int, default=4, metavar="K",
                       help=f"samples per row, 1 to {MAX_SAMPLES} (default 4): sample indices 0..K-1")
    noise.add_argument("--seed", type=int, default=0, help="seed of the noise, as in certify/predict (default 0)")
    noise.add_argument("--checkpoint", default=None, help="base classifier: show its vote for every sample")
    noise.add_argument("--arch", choices=sorted(ARCHS), default=None,
                       help="architecture (needed only if the checkpoint does not record it)")
    _add_output(noise)
    noise.set_defaults(_run=run_noise)

    attack = sub.add_parser("attack", help=ATTACK_HELP, description=ATTACK_HELP + "\n\n" + UNITS,
                            epilog=ATTACK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    attack.add_argument("log", metavar="LOG.tsv", help="attack log written by wsmooth attack")
    attack.add_argument("--adv", required=True, metavar="FILE.pt", help="its --save-adv file")
    attack.add_argument("--max", type=int, default=8, metavar="M",
                        help=f"draw at most M images, 1 to {MAX_EXAMPLES} (default 8)")
    attack.add_argument("--only-success", action="store_true",
                        help="only the images the attack fooled (correct before, wrong or abstaining after)")
    attack.add_argument("--sort-by", default="log", choices=SORT_KEYS,
                        help="log: the log's order (default); w1: smallest exact W1 first")
    attack.add_argument("--arrows", type=_arrow_count, default=DEFAULT_ARROWS, metavar="N",
                        help=f"draw the N largest moves of each transport plan, or 'all' (default {DEFAULT_ARROWS})")
    _add_output(attack)
    attack.set_defaults(_run=run_attack)


def run(args: argparse.Namespace) -> int:  # replaced by the chosen picture's run (set_defaults above)
    raise AssertionError("a picture subcommand is required")


def run_noise(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.pictures import check_output, noise_grid, save_figure
    from ..analysis.pictures.noise import MAX_IMAGES, MAX_SAMPLES
    from ..cli import UserError
    from ..inputs.data import load_dataset
    from ..core.noises import check_sigma

    out = check_output(args.out, args.overwrite)
    indices = [i for group in args.indices for i in group]
    sigmas = [s for group in args.sigmas for s in group]
    if not 1 <= len(indices) <= MAX_IMAGES or len(set(indices)) != len(indices):
        raise UserError(f"--indices must name 1 to {MAX_IMAGES} distinct images, got {indices}")
    if len(set(args.noises)) != len(args.noises):
        raise UserError(f"--noises must be distinct, got {args.noises}")
    for sigma in sigmas:
        check_sigma(sigma, "--sigmas")
    if not sigmas or len(set(sigmas)) != len(sigmas):
        raise UserError(f"--sigmas must be distinct numbers, got {sigmas}")
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise UserError(f"--samples must be in [1, {MAX_SAMPLES}], got {args.samples}")
    if not 0 <= args.seed < 2 ** 63:
        raise UserError(f"--seed must be in [0, 2**63), got {args.seed}")
    model, expected = _load_model(args) if args.checkpoint else (None, None)
    images, labels = load_dataset(args.dataset, args.split, args.data_dir)
    bad = [i for i in indices if not 0 <= i < images.shape[0]]
    if bad:
        raise UserError(f"--indices must lie in [0, {images.shape[0]}) for {args.dataset} {args.split}, got {bad}")
    if expected is not None and list(expected) != list(images.shape[1:]):
        raise UserError(f"dataset {args.dataset} has images {list(images.shape[1:])}, the model expects "
                        f"{list(expected)}")
    chosen = torch.tensor(indices, dtype=torch.int64)
    title = f"{args.dataset} {args.split}: smoothing samples"
    if model is not None:
        title += f" and votes of {Path(args.checkpoint).name}"
    fig = noise_grid(images[chosen], chosen, labels=labels[chosen], noise_names=args.noises, sigmas=sigmas,
                     samples=args.samples, seed=args.seed, model=model, title=title)
    print(f"wrote {save_figure(fig, out, args.overwrite)}: {len(indices)} images x {len(args.noises)} noises x "
          f"{len(sigmas)} sigmas, {args.samples} samples each (seed {args.seed})")
    return 0


def _load_model(args):
    """(model in eval mode on the CPU, the input shape it records or None)."""
    from ..inputs.checkpoint import load_checkpoint

    model, meta = load_checkpoint(args.checkpoint, arch=args.arch, map_location="cpu")
    if meta.get("dataset") not in (None, args.dataset):
        print(f"note: the checkpoint was trained on {meta['dataset']}, shown on {args.dataset}", file=sys.stderr)
    return model.eval(), meta.get("input_shape")


def run_attack(args: argparse.Namespace) -> int:
    from ..analysis.pictures import attack_figure, check_output, load_attack_examples, save_figure
    from ..analysis.pictures.attack import MAX_EXAMPLES, describe_attack
    from ..cli import UserError

    out = check_output(args.out, args.overwrite)
    if not 1 <= args.max <= MAX_EXAMPLES:
        raise UserError(f"--max must be in [1, {MAX_EXAMPLES}], got {args.max}")
    if args.arrows is not None and args.arrows < 0:
        raise UserError(f"--arrows must be >= 0 or 'all', got {args.arrows}")
    examples = load_attack_examples(args.log, args.adv, max_examples=args.max, only_success=args.only_success,
                                    sort_by=args.sort_by)
    fig = attack_figure(examples, arrows=args.arrows, title=describe_attack(args.log))
    print(f"wrote {save_figure(fig, out, args.overwrite)}: {len(examples)} examples of {args.log}")
    return 0
