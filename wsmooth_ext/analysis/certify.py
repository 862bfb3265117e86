"""Table-1-style summaries and certified-accuracy curves of certify / predict logs.

Definitions (Levine & Feizi 2020, §6; Cohen et al. 2019):

* accuracy: % of logged images whose smoothed prediction is the label (abstentions count as wrong);
  abstain: % of images where the procedure abstained;
* certified accuracy at radius r: % of images predicted correctly with certified radius ≥ r;
* median certified radius: the largest r at which certified accuracy is still ≥ 50% — the ⌈N/2⌉-th largest
  radius when wrong or abstained images count as −∞; ``None`` (N/A) when fewer than half the images are
  certified correct;
* average certified radius (ACR, Zhai et al. 2020): the mean over all logged images of the certified radius
  when the prediction is correct and 0 otherwise (wrong and abstained images count 0);
* base accuracy under noise: % of the estimation samples on which the base classifier output the label
  (Σ count_label / Σ n), when the log has those columns.

Numbers shown in tables are truncated (never rounded up) to 4 significant digits.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..runs.logfile import read_log
from ..core.certificates import certified_radius
from ..core.smooth import ABSTAIN
from .rows import check_log_rows
from .tables import default_radius_grid, floor_sig, format_table, pct


def _one_setting(rows: list[dict], column: str):
    values = {row.get(column) for row in rows}
    if len(values) == 1:
        return values.pop()
    return "mixed" if values else None


def rederived_radius(row: dict, certificate: str, ground: str = "l2") -> float:
    """The radius a certify log ``row`` would hold under ``certificate`` (ground metric ``ground``: "l2" for the
    ``radius`` column, "l1" for ``radius_l1``), recomputed from the row's ``p_lower``, ``sigma`` and ``noise``;
    0.0 for an abstention, as certify logs it. One certification thus gives every valid certificate's radii from
    the same votes (the demo's paper log, table1's tight median, benchmarks/certify_levers.py)."""
    if row["predict"] == ABSTAIN:
        return 0.0
    return certified_radius(float(row["p_lower"]), float(row["sigma"]), row["noise"], certificate, ground)


def median_certified_radius(radii) -> float | None:
    """The median certified radius of per-image ``radii`` (wrong or abstained images: −inf): the ⌈N/2⌉-th
    largest, or None (N/A) when fewer than half the images are certified correct."""
    ordered = sorted((float(r) for r in radii), reverse=True)
    value = ordered[math.ceil(len(ordered) / 2) - 1]
    return None if value == -math.inf else value


def summarize_certify_log(path: str | os.PathLike, radius_grid=None) -> dict:
    """Summary of one certify (or predict) log; see the module docstring for the definitions.

    Returns a dict: path, kind ("certify"/"predict"), n_images, accuracy, abstain, median_radius (None if N/A
    or a predict log), acr (average certified radius; None for a predict log), max_radius, certified_accuracy (list of (radius, %); empty for predict logs),
    base_accuracy (None without count_label/n), and the run's noise, sigma, certificate, n0, n, alpha.
    """
    columns, rows = read_log(path)
    missing = [c for c in ("idx", "label", "predict", "correct") if c not in columns]
    if missing:
        raise ValueError(f"{path} is not a certify or predict log: missing columns {missing}")
    if not rows:
        raise ValueError(f"{path} has no rows")
    check_log_rows(path, columns, rows, distances=("radius", "radius_l1"))
    kind = "certify" if "radius" in columns else "predict"
    total = len(rows)
    correct = np.array([int(r["correct"]) == 1 for r in rows])
    abstain = np.array([r["predict"] == ABSTAIN for r in rows])
    summary = {
        "path": str(path), "kind": kind, "n_images": total,
        "accuracy": 100.0 * correct.mean(), "abstain": 100.0 * abstain.mean(),
        "median_radius": None, "acr": None, "max_radius": None, "certified_accuracy": [], "base_accuracy": None,
    }
    for column in ("noise", "sigma", "certificate", "n0", "n", "alpha"):
        summary[column] = _one_setting(rows, column) if column in columns else None
    if kind == "certify":
        radii = np.array([float(r["radius"]) if ok else -math.inf for r, ok in zip(rows, correct)])
        summary["max_radius"] = float(radii.max()) if correct.any() else 0.0
        summary["acr"] = float(np.where(correct, radii, 0.0).mean())
        summary["median_radius"] = median_certified_radius(radii)
        grid = default_radius_grid(summary["max_radius"]) if radius_grid is None else [float(r) for r in radius_grid]
        summary["certified_accuracy"] = [(r, 100.0 * float((radii >= r).mean())) for r in grid]
    if "count_label" in columns and "n" in columns:
        pairs = [(r["count_label"], r["n"]) for r in rows if r["count_label"] is not None and r["n"]]
        if pairs:
            summary["base_accuracy"] = 100.0 * sum(c for c, _ in pairs) / sum(n for _, n in pairs)
    return summary


def format_summary_table(summaries: list[dict], markdown: bool = False) -> str:
    """A table, one row per summary: accuracy (abstain %), median radius, ACR, base accuracy, certified accuracy.

    Certified-accuracy columns are the union of the summaries' radius grids ("—" where a log lacks one).
    """
    if not summaries:
        raise ValueError("summaries must not be empty")
    grid = sorted({r for s in summaries for r, _ in s["certified_accuracy"]})
    header = ["log", "noise", "sigma", "certificate", "N", "accuracy % (abstain %)", "median radius",
              "ACR", "base acc. %"] + [f"cert. acc. % @ {floor_sig(r)}" for r in grid]
    body = []
    for s in summaries:
        by_radius = dict(s["certified_accuracy"])
        median = "—" if s["kind"] == "predict" else ("N/A" if s["median_radius"] is None
                                                     else floor_sig(s["median_radius"]))
        body.append([Path(s["path"]).name, str(s["noise"] or "—"), "—" if s["sigma"] is None else f"{s['sigma']:g}",
                     str(s["certificate"] or "—"), str(s["n_images"]), f"{s['accuracy']:.2f} ({s['abstain']:.2f})",
                     median, "—" if s["acr"] is None else floor_sig(s["acr"]), pct(s["base_accuracy"])] + [pct(by_radius.get(r)) for r in grid])
    return format_table(header, body, markdown)


def _curve(path) -> tuple[np.ndarray, int]:
    columns, rows = read_log(path)
    if "radius" not in columns or "correct" not in columns:
        raise ValueError(f"{path} is not a certify log (no radius column): cannot plot certified accuracy")
    if not rows:
        raise ValueError(f"{path} has no rows")
    check_log_rows(path, columns, rows, distances=("radius", "radius_l1"))
    radii = np.array([float(r["radius"]) for r in rows if int(r["correct"]) == 1])
    return np.sort(radii), len(rows)


def plot_certified_accuracy(paths, out_png, labels=None) -> Path:
    """Certified accuracy (%) against radius for each certify log, all in one PNG (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths must name at least one certify log")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"labels must have one entry per log ({len(paths)}), got {len(labels)}")
    curves = [_curve(p) for p in paths]
    finite = [r[np.isfinite(r)] for r, _ in curves]
    top = max([float(r.max()) for r in finite if r.size] + [0.0]) or 1.0
    xs = np.linspace(0.0, 1.05 * top, 600)
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (path, (radii, total)) in enumerate(zip(paths, curves)):
        # % of images correct with radius >= x; radii are sorted ascending
        ys = 100.0 * (radii.size - np.searchsorted(radii, xs, side="left")) / total
        ax.step(xs, ys, where="post", label=labels[i] if labels else path.stem)
    ax.set_xlabel("certified W1 radius (L2 ground metric, mass-normalized)")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(0, xs[-1])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
