"""Two certify logs of the same digits side by side: accuracy, median certified radius, ACR and certified accuracy
at fixed radii of each, with the reference's 95% intervals (accuracy: Clopper–Pearson; median: percentile
bootstrap over the digits, 10,000 resamples, seed 0), the way the field compares certified results.

    python benchmarks/compare_to_reference.py OURS.tsv REFERENCE.tsv [--radii 0.01 0.02 0.03]

Both logs must hold the same images (idx column) in the same order; a wrong or abstained digit counts as −inf.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.stats import beta

from wsmooth_ext.analysis.certify import median_certified_radius
from wsmooth_ext.runs.logfile import read_log


def radii(path):
    _, rows = read_log(path)
    return [int(r["idx"]) for r in rows], np.array(
        [float(r["radius"]) if int(r["correct"]) == 1 else -math.inf for r in rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours")
    parser.add_argument("reference")
    parser.add_argument("--radii", type=float, nargs="+", default=[0.01, 0.02, 0.03])
    args = parser.parse_args(argv)
    ours_idx, ours = radii(args.ours)
    ref_idx, ref = radii(args.reference)
    if ours_idx != ref_idx:
        raise SystemExit("the two logs hold different images")
    n, rng = len(ref), np.random.default_rng(0)
    boot = [median_certified_radius(ref[rng.integers(0, n, n)]) or -math.inf for _ in range(10_000)]
    k = int(np.isfinite(ref).sum())
    low, high = beta.ppf(0.025, k, n - k + 1), beta.ppf(0.975, k + 1, n - k)
    for name, r in (("ours", ours), ("reference", ref)):
        median = median_certified_radius(r)
        print(f"{name:9s} n={n} accuracy {100 * np.isfinite(r).mean():.2f}%  median "
              f"{'N/A' if median is None else f'{median:.5f}'}  ACR {np.where(np.isfinite(r), r, 0).mean():.5f}  "
              "certified accuracy " + " / ".join(f"{100 * (r >= t).mean():.1f}@{t:g}" for t in args.radii))
    print(f"reference 95% intervals: accuracy [{100 * low:.2f}, {100 * high:.2f}] (Clopper-Pearson), median "
          f"[{np.percentile(boot, 2.5):.5f}, {np.percentile(boot, 97.5):.5f}] (bootstrap)")


if __name__ == "__main__":
    main()
