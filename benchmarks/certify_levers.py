"""One Markdown row per certify log, in the columns of issue 19's lever table.

    python benchmarks/certify_levers.py [--certificate tight] [--skip K] LABEL=LOG [LABEL=LOG ...]

Each row: accuracy (certified at radius 0: correct and not abstained) and abstentions, the median and the average
certified W1 (wrong or abstained images count as radius 0 for the average and below every radius for the
median), the certified accuracy at W1 0.01 / 0.02 / 0.03 / 0.04 (L2 ground metric, mass-normalized), seconds
per image, and the median that n = 100,000 would give if every image kept its observed vote frequency
(a projection, never a measurement: kept in its own column).

The radii are recomputed from each row's ``p_lower`` with ``--certificate`` (default: tight), so a log
certified with the paper's certificate gives the tight radii of the same samples. ``--skip K`` keeps only
the rows whose image index is a multiple of K (to compare logs over a common subset of digits).
"""

from __future__ import annotations

import argparse
import math
import statistics

from wsmooth_ext.analysis.certify import median_certified_radius, rederived_radius
from wsmooth_ext.core.certificates import certified_radius
from wsmooth_ext.core.statistics import clopper_pearson_lower
from wsmooth_ext.runs.logfile import read_log

RADII = (0.01, 0.02, 0.03, 0.04)
PROJECTED_N = 100_000


def _projected_radius(row: dict, certificate: str) -> float:
    """The radius of this row's top class had it been estimated from PROJECTED_N samples at its observed
    frequency (counts scaled, Clopper-Pearson at the row's alpha)."""
    if row["correct"] != 1:
        return -math.inf
    count = round(row["count_top"] / row["n"] * PROJECTED_N)
    p_lower = clopper_pearson_lower(count, PROJECTED_N, row["alpha"])
    if p_lower <= 0.5:
        return -math.inf
    return certified_radius(p_lower, row["sigma"], row["noise"], certificate)


def summarize(path: str, certificate: str, skip: int) -> dict:
    rows = [r for r in read_log(path)[1] if r["idx"] % skip == 0]
    if not rows:
        raise SystemExit(f"{path}: no rows with an index divisible by {skip}")
    radii = [rederived_radius(r, certificate) if r["correct"] == 1 else -math.inf for r in rows]
    return {"n": len(rows), "accuracy": 100.0 * sum(r["correct"] == 1 for r in rows) / len(rows),
            "abstain": 100.0 * sum(r["predict"] == -1 for r in rows) / len(rows),
            "median": median_certified_radius(radii), "acr": statistics.fmean(max(r, 0.0) for r in radii),
            "at": [100.0 * sum(r >= t for r in radii) / len(rows) for t in RADII],
            "seconds": statistics.fmean(r["time"] for r in rows),
            "median_100k": median_certified_radius([_projected_radius(r, certificate) for r in rows])}


def markdown(label: str, s: dict) -> str:
    def radius(value):
        return "N/A" if value is None else f"{value:.4f}"
    cells = [label, str(s["n"]), f"{s['accuracy']:.1f} ({s['abstain']:.1f})", radius(s["median"]),
             f"{s['acr']:.4f}", *[f"{a:.1f}" for a in s["at"]], f"{s['seconds']:.2f}", radius(s["median_100k"])]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", metavar="LABEL=LOG")
    parser.add_argument("--certificate", default="tight", choices=("tight", "paper"))
    parser.add_argument("--skip", type=int, default=1)
    args = parser.parse_args()
    header = ["model", "N", "cert. acc. at 0 % (abstain %)", f"median W1 ({args.certificate})", "ACR",
              *[f"cert. acc. at {t} %" for t in RADII], "s/image", "median at n=100,000 (projection)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for item in args.logs:
        label, _, path = item.rpartition("=")  # labels may hold "=" (σ=0.01); paths here do not
        print(markdown(label, summarize(path, args.certificate, args.skip)))


if __name__ == "__main__":
    main()
