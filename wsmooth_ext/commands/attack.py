"""`wsmooth attack`: Wasserstein PGD (projected Sinkhorn) on a checkpoint, plain or smoothed; one TSV row per image."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

HELP = "Wasserstein adversarial attack (projected-Sinkhorn PGD) on a model or its smoothed classifier (TSV log)"

EPILOG = """\
Projected-Sinkhorn PGD (Wong et al. 2019) as in Levine & Feizi §6.2: sign (or L2) gradient steps in pixel
space, entropic projection onto the Wasserstein ball of radius eps around the clean image (local k x k
transport within each channel, cost |offset|^p, images divided by the clean image's mass), clamp to [0, 1];
eps starts at --eps0 and is multiplied by --eps-factor every --eps-every iterations for the images not yet
fooled. Defaults are the paper's MNIST settings; CIFAR-10: --reg 3000 --eps0 0.001 --eps-factor 1.17
--max-iter 400.

--smoothed attacks the smoothed classifier: gradients of the mean softmax over --n-grad fresh noise samples,
success when the hard smoothed prediction (--n-test samples, binomial test at --alpha) is wrong or abstains.
--noise/--sigma default to the checkpoint's. An image's noise depends only on (--seed, its index).

Log columns: idx label predict radius w1 success time, then adv_predict w1_l1 iterations mass_change
channel_gap and the settings. predict / adv_predict: prediction on the clean / returned image (-1 abstain);
radius: nominal eps when first fooled (0 if misclassified before the attack, inf if never fooled);
w1 / w1_l1: exact Wasserstein-1 distance (L2 / L1 ground metric, linear program) between the clean and
the adversarial image, each divided by its own mass (inf if never fooled); time: attack seconds per image.
Multi-channel images: transport stays within a channel; if clamping changed the channels' shares of the
mass (channel_gap > 0), w1 is computed after restoring each channel's share (outside the threat model).
--save-adv writes {"clean", "adv", "idx"} tensors with rows aligned to the log. --certified-log compares
with a certify log of the same model: verified adversarial examples within the certified radius.

example:  wsmooth attack model.pt --dataset mnist5k --max 100 --out attack.tsv --save-adv adv.pt
"""

COLUMNS_EXTRA = ("adv_predict", "w1_l1", "iterations", "mass_change", "channel_gap")
SETTINGS = ("mode", "noise", "sigma", "n_grad", "n_test", "alpha", "seed", "p", "kernel_size", "reg", "eps0",
            "eps_factor", "eps_every", "max_iter", "step", "norm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..attacks import NORMS
    from ..certificates import NOISES
    from .certify import add_model_and_data_arguments

    parser.epilog = EPILOG
    add_model_and_data_arguments(parser, "dataset to attack")
    parser.add_argument("--skip", type=int, default=1, help="use every skip-th image (default 1)")
    parser.add_argument("--max", type=int, default=None, metavar="M", help="at most M images (default all)")
    g = parser.add_argument_group("smoothed classifier")
    g.add_argument("--smoothed", action="store_true", help="attack the smoothed classifier instead of the model")
    g.add_argument("--noise", default=None, choices=NOISES, help="smoothing noise (default: the checkpoint's)")
    g.add_argument("--sigma", type=float, default=None,
                   help="noise std per flow edge (or pixel), mass-normalized units (default: the checkpoint's)")
    g.add_argument("--n-grad", type=int, default=128, help="noise samples per gradient (default 128)")
    g.add_argument("--n-test", type=int, default=10000, help="noise samples per success test (default 10000)")
    g.add_argument("--alpha", type=float, default=0.05, help="binomial-test level of the success test (default 0.05)")
    g.add_argument("--batch", type=int, default=1000, help="noisy images per forward pass (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    a = parser.add_argument_group("attack")
    a.add_argument("--p", type=float, default=1.0, help="transport cost |offset|^p in pixels (default 1: W1)")
    a.add_argument("--kernel-size", type=int, default=5, help="side k of the local transport window, odd (default 5)")
    a.add_argument("--reg", type=float, default=1000.0, help="entropic regularization lambda (default 1000)")
    a.add_argument("--eps0", type=float, default=0.3, help="initial radius, mass-normalized units (default 0.3)")
    a.add_argument("--eps-factor", type=float, default=1.1, help="radius growth factor (default 1.1)")
    a.add_argument("--eps-every", type=int, default=10, help="grow the radius every this many iterations (default 10)")
    a.add_argument("--max-iter", type=int, default=200, help="PGD iterations (default 200)")
    a.add_argument("--step", type=float, default=0.1, help="step size in pixel units (default 0.1)")
    a.add_argument("--norm", default="linf", choices=NORMS, help="linf: sign steps (default); l2: normalized gradient")
    a.add_argument("--sinkhorn-iter", type=int, default=400, help="projection iterations at most (default 400)")
    a.add_argument("--attack-batch", type=int, default=100, help="images attacked together (default 100)")
    parser.add_argument("--out", required=True, metavar="FILE.tsv", help="log to write (tab-separated)")
    parser.add_argument("--save-adv", default=None, metavar="FILE.pt", help="also save clean and adversarial images")
    parser.add_argument("--certified-log", default=None, metavar="FILE.tsv",
                        help="certify log of the same smoothed model: count adversarial examples inside certificates")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --out log (and --save-adv)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_numbers(args) -> None:
    from ..cli import UserError

    for name in ("skip", "max", "n_grad", "n_test", "batch", "eps_every", "sinkhorn_iter", "attack_batch",
                 "kernel_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.max_iter < 0:
        raise UserError(f"--max-iter must be >= 0, got {args.max_iter}")
    if args.kernel_size % 2 == 0:
        raise UserError(f"--kernel-size must be odd, got {args.kernel_size}")
    for name in ("p", "reg", "eps0", "step"):
        value = getattr(args, name)
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")
    if not (args.eps_factor >= 1 and math.isfinite(args.eps_factor)):
        raise UserError(f"--eps-factor must be >= 1, got {args.eps_factor}")
    if not 0.0 < args.alpha < 1.0:
        raise UserError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.sigma is not None and not args.sigma > 0:
        raise UserError(f"--sigma must be > 0, got {args.sigma}")
    if not 0 <= args.seed < 2 ** 63:
        raise UserError(f"--seed must be in [0, 2**63), got {args.seed}")


def _load_target(args, device):
    """(attack target, num_classes, settings, notes, input_shape) from the checkpoint and the options."""
    from ..checkpoint import load_checkpoint
    from ..cli import UserError
    from ..smooth import Smooth

    model, meta = load_checkpoint(args.checkpoint, arch=args.arch, map_location="cpu")
    model = model.to(device).eval()
    num_classes = meta.get("num_classes")
    if not isinstance(num_classes, int):
        raise UserError(f"checkpoint {args.checkpoint} records no num_classes")
    notes = []
    settings = {"mode": "plain", "noise": None, "sigma": None, "n_grad": None, "n_test": None, "alpha": None,
                "seed": None}
    target = model
    if args.smoothed:
        noise = args.noise or meta.get("noise")
        if noise in (None, "none"):
            raise UserError(f"--noise is required: checkpoint {args.checkpoint} records noise {meta.get('noise')!r}")
        sigma = args.sigma if args.sigma is not None else meta.get("sigma")
        if not sigma:
            raise UserError(f"--sigma is required: checkpoint {args.checkpoint} records no sigma")
        target = Smooth(model, num_classes, float(sigma), noise=noise, seed=args.seed)
        settings = {"mode": "smoothed", "noise": noise, "sigma": float(sigma), "n_grad": args.n_grad,
                    "n_test": args.n_test, "alpha": float(args.alpha), "seed": args.seed}
        if meta.get("noise") not in (None, "none") and (meta.get("noise"), meta.get("sigma")) != (noise, sigma):
            notes.append(f"note: the checkpoint was trained with noise {meta.get('noise')} sigma "
                         f"{meta.get('sigma')}; smoothed with {noise} sigma {sigma}")
    elif args.noise is not None or args.sigma is not None:
        raise UserError("--noise and --sigma apply to --smoothed attacks only")
    if meta.get("dataset") not in (None, args.dataset):
        notes.append(f"note: the checkpoint was trained on {meta['dataset']}, attacked on {args.dataset}")
    return target, num_classes, settings, notes, meta.get("input_shape")


def _save_adv(path: Path, clean, adv, idx) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save({"clean": torch.cat(clean) if clean else torch.empty(0),
                "adv": torch.cat(adv) if adv else torch.empty(0),
                "idx": torch.tensor(idx, dtype=torch.int64)}, tmp)
    os.replace(tmp, path)  # atomic: the file always matches a prefix of the log


def _distances(clean, adv):
    """(w1 L2 ground, w1 L1 ground, mass change, channel gap) of one adversarial example."""
    from ..wasserstein import wasserstein_distance

    s_clean, s_adv = float(clean.sum()), float(adv.sum())
    share_c = clean.sum(dim=(1, 2)).double() / s_clean
    share_a = adv.sum(dim=(1, 2)).double() / s_adv
    gap = float((share_c - share_a).abs().sum())
    w1 = wasserstein_distance(clean, adv, ground="l2", on_mismatch="rescale")
    w1_l1 = wasserstein_distance(clean, adv, ground="l1", on_mismatch="rescale")
    return w1, w1_l1, s_adv / s_clean - 1.0, gap


def _attack_to_log(args, attack, images, labels, indices, out: Path, save_adv, columns, settings, device) -> None:
    """Attack images[indices] and append a row per image to ``out`` (and their tensors to ``save_adv``)."""
    import torch

    from ..certify_log import format_field, open_log
    from ..cli import UserError
    from ..progress import progress_bar

    if save_adv is not None and save_adv.exists() and not args.resume:
        raise UserError(f"{save_adv} already exists; pass --resume or remove it")
    label_of = {i: int(labels[i]) for i in indices}
    handle, existing = open_log(out, columns, settings, label_of, args.resume)
    clean_saved, adv_saved, idx_saved = [], [], []
    if save_adv is not None and existing:
        if not save_adv.exists():
            handle.close()
            raise UserError(f"cannot resume --save-adv: {save_adv} is missing but {out} has rows")
        saved = torch.load(save_adv, weights_only=True)
        idx_saved = saved["idx"].tolist()
        if idx_saved[:len(existing)] != [r["idx"] for r in existing]:
            handle.close()
            raise UserError(f"cannot resume: {save_adv} does not match the rows of {out}")
        n = len(existing)  # rows beyond the log's (an interrupted batch) are dropped
        clean_saved, adv_saved, idx_saved = [saved["clean"][:n]], [saved["adv"][:n]], idx_saved[:n]
    done = {row["idx"] for row in existing}
    todo = [i for i in indices if i not in done]
    with handle, progress_bar(total=len(indices), desc="attack", enabled=not args.no_progress, unit="img") as bar:
        bar.update(len(indices) - len(todo))
        for start in range(0, len(todo), args.attack_batch):
            chunk = todo[start:start + args.attack_batch]
            idx = torch.tensor(chunk, dtype=torch.int64)
            x, y = images[idx].to(device), labels[idx].to(device)
            began = time.perf_counter()
            result = attack.attack(x, y, keys=idx)
            seconds = (time.perf_counter() - began) / len(chunk)
            adv = result.adversarial.cpu()
            for b, i in enumerate(chunk):
                success = bool(result.success[b])
                fooled_by_attack = success and int(result.iterations[b]) > 0
                if fooled_by_attack:
                    w1, w1_l1, mass_change, gap = _distances(x[b].cpu(), adv[b])
                else:  # wrong from the start: distance 0; never fooled: no adversarial example
                    w1 = w1_l1 = 0.0 if success else math.inf
                    mass_change, gap = float(adv[b].sum() / x[b].sum().cpu()) - 1.0, 0.0
                row = {"idx": i, "label": int(labels[i]), "predict": int(result.clean_prediction[b]),
                       "radius": float(result.radius[b]), "w1": w1, "success": int(success),
                       "time": round(seconds, 4), "adv_predict": int(result.adversarial_prediction[b]),
                       "w1_l1": w1_l1, "iterations": int(result.iterations[b]), "mass_change": mass_change,
                       "channel_gap": gap, **settings}
                handle.write(("\t".join(format_field(row[c]) for c in columns) + "\n").encode())
            handle.flush()
            if save_adv is not None:
                clean_saved.append(x.cpu())
                adv_saved.append(adv)
                idx_saved += chunk
                _save_adv(save_adv, clean_saved, adv_saved, idx_saved)
            bar.update(len(chunk))
    if save_adv is not None and not todo and not existing:
        _save_adv(save_adv, [], [], [])


def run(args: argparse.Namespace) -> int:
    import torch

    from ..attack_analysis import ATTACK_HEADER, check_certified_vs_attack, format_check, summarize_attack_log
    from ..attacks import WassersteinPGD
    from ..cli import UserError
    from ..data import load_dataset
    from ..distributed import all_part_paths, context_from_env, device_for, part_path, run_sharded

    _check_numbers(args)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory")
    if out.exists() and out.stat().st_size > 0 and not args.resume:
        raise UserError(f"--out {out} already exists; pass --resume to continue it, or remove it to start over")
    save_adv = Path(args.save_adv) if args.save_adv else None
    if save_adv is not None and save_adv.exists() and not args.resume:
        raise UserError(f"--save-adv {save_adv} already exists; pass --resume or remove it")
    if args.certified_log and not Path(args.certified_log).is_file():
        raise FileNotFoundError(f"no such certify log: {args.certified_log}")
    try:  # under torchrun each process takes the GPU of its local rank
        device = device_for(context_from_env(), args.device)
    except RuntimeError as exc:
        raise UserError(f"--device {args.device!r} is not a torch device ({exc})") from None

    target, num_classes, settings, notes, input_shape = _load_target(args, device)
    settings.update({"p": float(args.p), "kernel_size": args.kernel_size, "reg": float(args.reg),
                     "eps0": float(args.eps0), "eps_factor": float(args.eps_factor), "eps_every": args.eps_every,
                     "max_iter": args.max_iter, "step": float(args.step), "norm": args.norm})
    images, labels = load_dataset(args.dataset, args.split, args.data_dir)
    if input_shape is not None and list(images.shape[1:]) != list(input_shape):
        raise UserError(f"dataset {args.dataset} has images {list(images.shape[1:])}, the model expects "
                        f"{list(input_shape)}")
    indices = list(range(0, images.shape[0], args.skip))[:args.max]
    attack = WassersteinPGD(target, p=args.p, kernel_size=args.kernel_size, reg=args.reg, eps0=args.eps0,
                            eps_factor=args.eps_factor, eps_every=args.eps_every, max_iter=args.max_iter,
                            step=args.step, norm=args.norm, n_grad=args.n_grad, n_test=args.n_test,
                            alpha=args.alpha, batch_size=args.batch, sinkhorn_iter=args.sinkhorn_iter)
    columns = ATTACK_HEADER + COLUMNS_EXTRA + SETTINGS

    def run_shard(shard_indices, log_path, ctx):
        adv_path = save_adv if save_adv is None or not ctx.enabled else part_path(save_adv, ctx)
        _attack_to_log(args, attack, images, labels, shard_indices, log_path, adv_path, columns, settings, device)

    def merge_saved(ctx):  # rank 0: the parts' tensors, in the order of the merged log
        parts = [torch.load(p, weights_only=True) for p in all_part_paths(save_adv, ctx.world_size)]
        where = {int(i): (k, r) for k, part in enumerate(parts) for r, i in enumerate(part["idx"].tolist())}
        clean = [parts[where[i][0]]["clean"][where[i][1]:where[i][1] + 1] for i in indices]
        adv = [parts[where[i][0]]["adv"][where[i][1]:where[i][1] + 1] for i in indices]
        _save_adv(save_adv, clean, adv, list(indices))

    if not run_sharded(run_shard, indices, out, device, merge_saved if save_adv is not None else None):
        return 0  # a torchrun worker other than rank 0: rank 0 reports
    for note in notes:
        print(note, file=sys.stderr)
    s = summarize_attack_log(out)
    fooled = sum(int(r["success"]) for r in s["rows"])
    print(f"attacked {s['n_images']} images ({settings['mode']}"
          + (f" {settings['noise']} sigma {settings['sigma']}" if settings["mode"] == "smoothed" else "")
          + f"): clean accuracy {s['clean_accuracy']:.2f}%, fooled {fooled}, median radius "
          f"{s['median_radius']:.4g} (nominal) / {s['median_w1']:.4g} (exact W1), "
          f"{s['time_per_image']:.3g} s/image; log: {out}")
    if args.certified_log:
        print(format_check(check_certified_vs_attack(args.certified_log, out)))
    return 0
