"""`wsmooth attack`: Wasserstein PGD (projected Sinkhorn) on a checkpoint, plain or smoothed; one TSV row per image."""

from __future__ import annotations

import argparse
import sys

HELP = ("Wasserstein adversarial attack (projected-Sinkhorn PGD, Frank-Wolfe or flow-space PGD) on a model or its "
        "smoothed classifier (TSV log)")

EPILOG = """\
Projected-Sinkhorn PGD (Wong et al. 2019) as in Levine & Feizi §6.2: sign (or L2) gradient steps in pixel
space, entropic projection onto the Wasserstein ball of radius eps around the clean image (local k x k
transport within each channel, cost |offset|^p, images divided by the clean image's mass), by default
intersected with pixels <= 1 so the mass is kept (--projection box; --projection clamp: the published clamp to
[0, 1] after the projection, which changes the mass);
eps starts at --eps0 and is multiplied by --eps-factor every --eps-every iterations for the images not yet
fooled. Defaults are the paper's MNIST settings; CIFAR-10: --reg 3000 --eps0 0.001 --eps-factor 1.17
--max-iter 400.

--method frank-wolfe: Frank-Wolfe over local couplings (k x k window, cost |offset|_2 or, with --ground l1,
|offset|_1; entropic LMO with weight --gamma; mass arriving at pixels over 1 is sent back home), every iterate
feasible: mass kept, pixels in [0, 1], transport cost <= eps * mass. --method pgd-dual: PGD on the same
couplings (gradient normalized to max 1, step --step), projected onto {rows = x, cost <= eps * mass} by
bisection on one dual multiplier with row-wise simplex projections, then pixels over 1 capped as above; also
feasible at every iterate. --method flow: PGD over the flow plan
delta with |delta|_1 <= eps (steps of --flow-step * eps, exact L1-ball projection, per-edge limits keep pixels
in [0, 1]); its examples satisfy W1 (L1 ground) <= eps (Lemma 1). --eps E: fixed radius E for any method
(radius = E when fooled); without it eps grows from --eps0 as above (frank-wolfe and flow restart their step
schedule at each growth). --p, --reg, --norm, --projection and --sinkhorn-* apply to sinkhorn only; --step to sinkhorn and
pgd-dual; --ground to frank-wolfe and pgd-dual.

--smoothed attacks the smoothed classifier: gradients of the mean softmax over --n-grad fresh noise samples,
success when the hard smoothed prediction (at most --n-test samples, binomial test at --alpha) is wrong or
abstains. --success-test sequential (default) tests the votes after 1%, 3%, 10%, 30% and 100% of --n-test and
stops at the first look that decides, alpha split over the looks (Bonferroni: 0.1% of alpha for the early looks
together, the rest for the last), so it stays a level-alpha test and a clear-cut image costs --n-test/100
votes; --success-test fixed counts all --n-test votes every time (Cohen's predict, as the paper ran it).
--noise/--sigma default to the checkpoint's. An image's noise depends only on (--seed, its index).

Log columns: idx label predict radius w1 success time, then adv_predict w1_l1 iterations mass_change
channel_gap and the settings. predict / adv_predict: prediction on the clean / returned image (-1 abstain);
radius: nominal eps when first fooled (0 if misclassified before the attack, inf if never fooled);
w1 / w1_l1: exact Wasserstein-1 distance (L2 / L1 ground metric, linear program) between the clean and
the adversarial image, each divided by its own mass (inf if never fooled); time: attack seconds per image.
Multi-channel images: transport stays within a channel; if clamping changed the channels' shares of the
mass (channel_gap > 0), w1 is computed after restoring each channel's share (outside the threat model).
--save-adv writes {"clean", "adv", "idx"} tensors with rows aligned to the log (its folder is created).
--resume continues a log only with the same settings, the same --save-adv use, and an image selection whose
first images are the logged ones (a larger --max-images extends a log; another --skip is refused). --certified-log compares
with a certify log of the same model: verified adversarial examples within the certified radius.

example:  wsmooth attack model.pt --dataset mnist5k --max-images 100 --out attack.tsv --save-adv adv.pt
"""



def smoothed_defaults() -> dict:
    """The smoothed-classifier options and their defaults (the smoothed target's declarations, attacks/target.py,
    and the seed): given without --smoothed they would be ignored, so they default to None (refused without
    --smoothed) and take these values with it."""
    from ..attacks.target import OPTIONS
    from ..infra.options import SEED

    return {**{option.name: option.default for option in OPTIONS.values()}, "seed": SEED.default}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..attacks.registry import ATTACKS, DEFAULT, SETTINGS, method_help
    from ..attacks.target import OPTIONS
    from ..core.noises import NOISES
    from ..infra.options import ATTACK_BATCH, EPS, SEED, SIGMA
    from ._common import add_image_selection, add_model_and_data_arguments

    parser.epilog = EPILOG
    add_model_and_data_arguments(parser, "dataset to attack")
    add_image_selection(parser)
    g = parser.add_argument_group("smoothed classifier (only with --smoothed)")
    g.add_argument("--smoothed", action="store_true", help="attack the smoothed classifier instead of the model")
    g.add_argument("--noise", default=None, choices=NOISES, help="smoothing noise (default: the checkpoint's)")
    SIGMA.add_to(g, "noise std per flow edge (or pixel), mass-normalized units (default: the checkpoint's)")
    # the smoothed target's options (attacks/target.py), at None: their defaults apply with --smoothed only
    n_grad, n_test, alpha, success_test, batch = (OPTIONS[name] for name in
                                                  ("n_grad", "n_test", "alpha", "success_test", "batch_size"))
    n_grad.add_to(g, f"{n_grad.help} (default {n_grad.default}); with --attack-batch at most 2**31 pixel values "
                  "at once", default=None)
    n_test.add_to(g, f"{n_test.help} (default {n_test.default}), at least enough to predict at --alpha", default=None)
    alpha.add_to(g, default=None)
    success_test.add_to(g, success_test.help, default=None)
    batch.add_to(g, f"{batch.help} (default {batch.default}); with the image size at most 2**31 pixel values",
                 default=None)
    SEED.add_to(g, f"{SEED.help} (default {SEED.default})", default=None)
    a = parser.add_argument_group("attack")
    a.add_argument("--method", default=DEFAULT, choices=tuple(ATTACKS), help=method_help())
    EPS.add_to(a, f"{EPS.help}; default: grow from --eps0")
    for s in SETTINGS:  # the settings of every attack in the registry, at None: refused where --method takes none
        s.add_to(a, s.help if s.choices is not None else None, default=None)
    ATTACK_BATCH.add_to(a)
    parser.add_argument("--out", required=True, metavar="FILE.tsv", help="log to write (tab-separated)")
    parser.add_argument("--save-adv", default=None, metavar="FILE.pt", help="also save clean and adversarial images")
    parser.add_argument("--certified-log", default=None, metavar="FILE.tsv",
                        help="certify log of the same smoothed model: count adversarial examples inside certificates")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --out log (and --save-adv)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_numbers(args) -> None:
    """What argparse's range checks (wsmooth_ext.infra.ranges) cannot see alone: options that apply only with
    --smoothed or only to another --method, the radius the schedule can grow to, memory, and a success test that
    can ever succeed. Fills in the defaults of the options left out."""
    from ..attacks import registry
    from ..core import statistics
    from ..cli import UserError
    from ..inputs.data import DATASETS
    from ..infra.options import check_options, flag
    from ..infra.ranges import check_grown_radius, check_soft_samples, check_values_at_once

    check_options(args)  # every value in its stated range, named as typed
    defaults = smoothed_defaults()
    given = [name for name in defaults if getattr(args, name) is not None]
    if not args.smoothed and (given or args.noise is not None or args.sigma is not None):
        names = [flag(n) for n in given] + [o for o, v in (("--noise", args.noise), ("--sigma", args.sigma))
                                                if v is not None]
        raise UserError(f"{', '.join(names)} apply to --smoothed attacks only")
    _check_settings_apply(args)
    for name, default in {**defaults, **registry.defaults()}.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    try:
        if args.eps is None:
            check_grown_radius(args.eps0, args.eps_factor, args.max_iter, args.eps_every)
        shape = DATASETS[args.dataset].input_shape
        if args.smoothed:
            check_soft_samples(args.max_iter, args.n_grad)
            check_values_at_once(args.attack_batch * args.n_grad, shape, "--attack-batch x --n-grad")
            check_values_at_once(args.batch, shape, "--batch")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.smoothed:
        last_level = statistics.sequential_looks(args.n_test, args.alpha)[-1][1] if args.success_test == "sequential" \
            else args.alpha
        needed = statistics.min_samples_to_predict(last_level)
        if args.n_test < needed:
            raise UserError(f"--n-test {args.n_test} is too small for a success test at --alpha {args.alpha:g}: "
                            f"the smoothed prediction would always abstain (need at least {needed})")


def _check_settings_apply(args) -> None:
    """UserError for attack settings given that --method does not take: '--reg does not apply to --method flow:
    it is a setting of sinkhorn'."""
    from ..attacks.registry import SETTINGS, get, owners
    from ..cli import UserError

    spec = get(args.method)
    typed = getattr(args, "typed_options", None) or {}
    stray = [(typed.get(s.name) or s.flag, owners(s.name)) for s in SETTINGS
             if getattr(args, s.name) is not None and not spec.takes(s.name)]
    if not stray:
        return
    flags = ", ".join(name for name, _ in stray)
    if len({tuple(o) for _, o in stray}) == 1:
        whose = (f"it is a setting of {', '.join(stray[0][1])}" if len(stray) == 1
                 else f"they are settings of {', '.join(stray[0][1])}")
    else:
        whose = "; ".join(f"{name} is a setting of {', '.join(o)}" for name, o in stray)
    verb = "does" if len(stray) == 1 else "do"
    raise UserError(f"{flags} {verb} not apply to --method {args.method}: {whose}")


def smoothed_target(args):
    """The :class:`~wsmooth_ext.attacks.target.SmoothedTarget` the smoothed-classifier options give (--smoothed)."""
    from ..attacks.target import OPTIONS, SmoothedTarget

    return SmoothedTarget(**{field: getattr(args, option.name) for field, option in OPTIONS.items()})


def _load_target(args, device):
    """(attack target, num_classes, settings, notes, input_shape) from the checkpoint and the options."""
    from ..inputs.checkpoint import load_checkpoint
    from ..cli import UserError
    from ..core.smooth import Smooth

    model, meta = load_checkpoint(args.checkpoint, arch=args.arch, map_location="cpu")
    model = model.to(device).eval()
    num_classes = meta.get("num_classes")
    if not isinstance(num_classes, int):
        raise UserError(f"checkpoint {args.checkpoint} records no num_classes")
    notes = []
    settings = {"mode": "plain"}
    target = model
    if args.smoothed:
        noise = args.noise or meta.get("noise")
        if noise in (None, "none"):
            raise UserError(f"--noise is required: checkpoint {args.checkpoint} records noise {meta.get('noise')!r}")
        sigma = args.sigma if args.sigma is not None else meta.get("sigma")
        if not sigma:
            raise UserError(f"--sigma is required: checkpoint {args.checkpoint} records no sigma")
        target = Smooth(model, num_classes, sigma, noise=noise, seed=args.seed)
        settings = {"mode": "smoothed", "noise": noise, "sigma": float(sigma), "seed": args.seed}
        if meta.get("noise") not in (None, "none") and (meta.get("noise"), meta.get("sigma")) != (noise, sigma):
            notes.append(f"note: the checkpoint was trained with noise {meta.get('noise')} sigma "
                         f"{meta.get('sigma')}; smoothed with {noise} sigma {sigma}")
    if meta.get("dataset") not in (None, args.dataset):
        notes.append(f"note: the checkpoint was trained on {meta['dataset']}, attacked on {args.dataset}")
    from ..training.adversarial import describe_adversarial

    adversarial = describe_adversarial(meta.get("train_args"))
    if adversarial:
        notes.append(f"note: the model was {adversarial}")
    return target, num_classes, settings, notes, meta.get("input_shape")


def attack_values(args) -> dict:
    """Every attack setting (attacks.registry.SETTINGS) as the options give it and the log records it."""
    from ..attacks.registry import SETTINGS

    return {s.name: s.check(getattr(args, s.name)) for s in SETTINGS}


def build_attack(args, target):
    """The attack object of --method; --eps fixes the radius (eps_factor 1), otherwise it grows from --eps0."""
    from ..attacks.registry import get

    return get(args.method).build(target, attack_values(args), eps=args.eps,
                                  smoothing=smoothed_target(args) if args.smoothed else None)


def run(args: argparse.Namespace) -> int:
    from ..analysis.attack import check_certified_vs_attack, format_check, read_certify_rows, summarize_attack_log
    from ..attacks.registry import log_settings
    from ..inputs.checkpoint import checkpoint_sha256
    from ..cli import UserError
    from ..inputs.data import load_dataset
    from ..infra.distributed import all_part_paths, part_path
    from ..runs.attack import attack_to_log, merge_adversarial
    from ..runs.logfile import check_new_output
    from ..runs.sharded import run_sharded
    from ._common import resolve_device

    _check_numbers(args)
    out = check_new_output(args.out, args.resume)
    save_adv = check_new_output(args.save_adv, args.resume, "--save-adv") if args.save_adv else None
    if save_adv is not None and save_adv.resolve() == out.resolve():
        raise UserError("--save-adv must be another file than --out")
    if args.certified_log:
        read_certify_rows(args.certified_log)  # a missing or wrong file fails now, not after the attack
    device = resolve_device(args.device)

    target, num_classes, settings, notes, input_shape = _load_target(args, device)
    settings.update(log_settings(args.method, attack_values(args), None if args.eps is None else float(args.eps),
                                 smoothed_target(args) if args.smoothed else None))
    images, labels = load_dataset(args.dataset, args.split, args.data_dir)
    if input_shape is not None and list(images.shape[1:]) != list(input_shape):
        raise UserError(f"dataset {args.dataset} has images {list(images.shape[1:])}, the model expects "
                        f"{list(input_shape)}")
    indices = list(range(0, images.shape[0], args.skip))[:args.max_images]
    attack = build_attack(args, target)
    identity = {"model_sha256": checkpoint_sha256(args.checkpoint), "dataset": args.dataset, "split": args.split,
                "precision": "fp32"}

    def run_shard(shard_indices, log_path, ctx):
        adv_path = save_adv if save_adv is None or not ctx.enabled else part_path(save_adv, ctx)
        attack_to_log(attack, images, labels, shard_indices, log_path, adv_path, settings, device,
                      identity=identity, resume=args.resume, attack_batch=args.attack_batch,
                      progress=not args.no_progress)

    def merge_saved(ctx):  # rank 0: the parts' tensors, in the order of the merged log
        merge_adversarial(save_adv, all_part_paths(save_adv, ctx.world_size), indices)

    if not run_sharded(run_shard, indices, out, device, merge_saved if save_adv is not None else None):
        return 0  # a torchrun worker other than rank 0: rank 0 reports
    for note in notes:
        print(note, file=sys.stderr)
    s = summarize_attack_log(out)
    fooled = sum(int(r["success"]) for r in s["rows"])
    print(f"attacked {s['n_images']} images ({args.method}, {settings['mode']}"
          + (f" {settings['noise']} sigma {settings['sigma']}" if settings["mode"] == "smoothed" else "")
          + f"): clean accuracy {s['clean_accuracy']:.2f}%, fooled {fooled}, median radius "
          f"{s['median_radius']:.4g} (nominal) / {s['median_w1']:.4g} (exact W1), "
          f"{s['time_per_image']:.3g} s/image; log: {out}")
    if args.certified_log:
        print(format_check(check_certified_vs_attack(args.certified_log, out)))
    return 0
