"""`wsmooth analyze`: Table-1-style summaries and certified-accuracy curves of certify/predict/attack logs."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "summarize certify/predict/attack logs: accuracy, abstention rate, median and average certified radius, curves (PNG)"

EPILOG = """\
For each certify log: accuracy (abstain %), median certified radius (the largest radius at which at least
half of the images are certified correct; N/A when fewer than half are), ACR (average certified radius: the
mean over images of the radius when correct, 0 otherwise), base-classifier accuracy under
noise, and certified accuracy on a radius grid (--radii, default a round grid up to the largest radius).
Predict logs give accuracy and abstain %. Attack logs (from `wsmooth attack`) are summarized by the attack
analysis. Tables go to stdout; --plot writes the certified-accuracy curves of all certify logs to one PNG
(an existing file only with --overwrite; every file written is named). Numbers are truncated, never rounded up.
A damaged or edited log (NaN, negative or absurd radii, an image logged twice, rows of different settings,
labels that are not classes) is refused, with its file and line named.

example:  wsmooth analyze paper.tsv tight.tsv --plot curves.png --markdown
"""

_LOG_PREFIX = "idx\tlabel\tpredict\t"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..infra.options import RADII

    parser.epilog = EPILOG
    parser.add_argument("logs", nargs="+", metavar="LOG.tsv", help="certify, predict or attack logs")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="write certified-accuracy curves here (attack logs: accuracy under attack; with both "
                             "kinds of log the attack curves go to FILE-attack.png); every file written is named")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --plot files")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--radii", type=_radius_list, nargs="+", default=None, metavar="R",
                        help="radii of the certified-accuracy columns (mass-normalized W1, L2 ground metric), "
                        "separated by spaces or commas: --radii 0.01,0.02,0.03; each " + RADII.text())


def _radius_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or comma-separated list of numbers: {text!r}") from None


def _is_certify_or_predict(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().startswith(_LOG_PREFIX)


def _has_radius(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return "radius" in handle.readline().rstrip("\n").split("\t")


def _is_attack(path: Path) -> bool:
    from ..analysis.attack import is_attack_log

    return bool(is_attack_log(path))


def _plot_files(plot, certify_logs, attack_logs) -> list[Path]:
    """The PNGs --plot writes: FILE for the certify curves (when a certify log has radii) or the attack curves;
    with both, the attack curves go next to it as FILE-attack.png."""
    if not plot:
        return []
    plot = Path(plot)
    files = [plot] if any(_has_radius(p) for p in certify_logs) else []
    if attack_logs:
        files.append(plot.with_name(plot.stem + "-attack.png") if files else plot)
    return files


def run(args: argparse.Namespace) -> int:
    from ..analysis import (analyze_attack_logs, default_radius_grid, format_summary_table, plot_certified_accuracy,
                            summarize_certify_log)
    from ..cli import UserError
    from ..infra.options import RADII
    from ..runs.logfile import check_new_output

    if args.radii is not None:
        args.radii = [r for group in args.radii for r in group]
    if args.radii is not None and (not args.radii or not all(RADII.allows(r) for r in args.radii)):
        raise UserError(f"--radii must each be {RADII.text()}, got {args.radii}")
    certify_logs, attack_logs = [], []
    for name in args.logs:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no such log: {path}")
        # attack logs also begin with idx label predict: recognise them first
        if _is_attack(path):
            attack_logs.append(path)
        elif _is_certify_or_predict(path):
            certify_logs.append(path)
        else:
            raise UserError(f"{path} is not a certify, predict or attack log")
    if args.plot and not attack_logs and not any(_has_radius(p) for p in certify_logs):
        raise UserError("--plot needs at least one certify or attack log (predict logs have no radii)")
    for plot in _plot_files(args.plot, certify_logs, attack_logs):
        if plot.exists() and not args.overwrite:
            raise UserError(f"--plot {plot} already exists; pass --overwrite to replace it")
        check_new_output(plot, True, "--plot")  # a folder, a special file or no write access: refused now
    outputs = []
    if certify_logs:
        summaries = [summarize_certify_log(p) for p in certify_logs]
        grid = args.radii
        if grid is None:  # one grid for all logs, so the columns line up
            grid = default_radius_grid(max((s["max_radius"] or 0.0) for s in summaries))
        summaries = [summarize_certify_log(p, radius_grid=sorted(set(grid))) for p in certify_logs]
        outputs.append(format_summary_table(summaries, markdown=args.markdown))
        plottable = [p for p, s in zip(certify_logs, summaries) if s["kind"] == "certify"]
        if args.plot and plottable:
            outputs.append(f"certified-accuracy curves: {plot_certified_accuracy(plottable, args.plot)}")
    if attack_logs:
        plot = str(_plot_files(args.plot, certify_logs, attack_logs)[-1]) if args.plot else None
        outputs.append(analyze_attack_logs(attack_logs, plot=plot, markdown=args.markdown))
    print("\n\n".join(outputs))
    return 0
