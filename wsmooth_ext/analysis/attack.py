"""Attack logs (``wsmooth attack``): accuracy under attack, median attack radius, and the certificate check.

Definitions, per log of N images (``radius`` nominal ε, ``w1`` exact W1 with the L2 ground metric, both in
mass-normalized units; 0 for images misclassified before the attack, ``inf`` for images never fooled):

* accuracy under attack at ε: % of the N images classified correctly before the attack whose attack
  distance is > ε (nothing within ε fooled them) — over nominal ε, or over the exact ``w1``;
* median attack radius: the median over all N images of that distance (0 for wrong, ``inf`` for never
  fooled), i.e. the ε at which accuracy under attack falls to 50%; ``inf`` if it never does;
* w1/ε: median ratio of exact to nominal radius over fooled images (about 0.5 with the public
  implementation, ``docs/attacks.md`` — curves over nominal ε overstate robustness).

The consistency check: a certified radius R for image i promises that no image within W1 < R
(of the same mass distribution) changes the smoothed prediction. A *verified* adversarial example — the
smoothed classifier's hard prediction, with its binomial test, is a wrong class (not an abstention) — at
exact w1 < R is a violation. Each certificate fails with probability ≤ α, so violations beyond about α of
the attacked certified images indicate a bug.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..attacks.registry import get as get_attack
from ..runs.attack import ATTACK_HEADER
from ..runs.logfile import read_log
from ..core.smooth import ABSTAIN
from .rows import check_log_rows
from .tables import default_radius_grid, format_table, pct

# an attack's distances: nominal radius, exact W1 (L2 and L1 ground); inf for an image never fooled
ATTACK_DISTANCES = ("radius", "w1", "w1_l1")

# per-channel mass-share differences (summed) up to this are rounding, not a change of the threat model
CHANNEL_GAP_TOL = 1e-6


def is_attack_log(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable TSV whose header starts with the attack-log columns."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline().rstrip("\n").split("\t")
    except OSError:
        return False
    return tuple(first[:len(ATTACK_HEADER)]) == ATTACK_HEADER


def read_attack_log(path: str | os.PathLike) -> list[dict]:
    """The complete rows of an attack log (a half-written last line is ignored); ValueError if not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such attack log: {path}")
    if not is_attack_log(path):
        raise ValueError(f"{path} is not an attack log (header must start with {' '.join(ATTACK_HEADER)})")
    columns, rows = read_log(path)
    check_log_rows(path, columns, rows, distances=ATTACK_DISTANCES, infinite_ok=ATTACK_DISTANCES)
    return rows


def _distances(rows, column):
    """Per-image attack distance for accuracy: −1 for images wrong before the attack (never 'robust')."""
    out = []
    for row in rows:
        if row["predict"] != row["label"]:
            out.append(-1.0)
        elif int(row["success"]):
            value = row[column]
            out.append(float(value) if value is not None else math.nan)
        else:
            out.append(math.inf)
    return np.array(out, dtype=np.float64)


def accuracy_under_attack(rows: list[dict], eps, column: str = "radius") -> np.ndarray:
    """% of images correct before the attack and not fooled within distance ε, for each ε (array)."""
    d = _distances(rows, column)
    eps = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    if not len(d):
        return np.full(eps.shape, math.nan)
    return 100.0 * (d[None, :] > eps[:, None]).sum(axis=1) / len(d)


def median_attack_radius(rows: list[dict], column: str = "radius") -> float:
    """Median over all images of the attack distance (0 if wrong before the attack, inf if never fooled)."""
    d = np.maximum(_distances(rows, column), 0.0)
    return float(np.median(d)) if len(d) else math.nan


def summarize_attack_log(path: str | os.PathLike, grid=None) -> dict:
    """Numbers of one attack log; ``grid`` the ε values of the accuracy columns (default: a round grid)."""
    rows = read_attack_log(path)
    if not rows:
        raise ValueError(f"{path} has no rows")
    fooled = [r for r in rows if int(r["success"]) and r["predict"] == r["label"]]
    ratios = [float(r["w1"]) / float(r["radius"]) for r in fooled
              if r.get("w1") is not None and float(r["radius"]) > 0 and math.isfinite(float(r["w1"]))]
    times = [float(r["time"]) for r in rows if r.get("time") is not None]
    first = rows[0]
    return {
        "path": str(path), "n_images": len(rows),
        "mode": first.get("mode"), "noise": first.get("noise"), "sigma": first.get("sigma"),
        "clean_accuracy": 100.0 * sum(r["predict"] == r["label"] for r in rows) / len(rows),
        "median_radius": median_attack_radius(rows, "radius"),
        "median_w1": median_attack_radius(rows, "w1"),
        "w1_over_eps": float(np.median(ratios)) if ratios else None,
        "time_per_image": float(np.mean(times)) if times else None,
        "max_finite": max([float(r[c]) for r in fooled for c in ("radius", "w1")
                           if r.get(c) is not None and math.isfinite(float(r[c]))], default=0.0),
        "rows": rows,
    }


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def analyze_attack_logs(paths, plot: str | os.PathLike | None = None, markdown: bool = False,
                        grid=None) -> str:
    """Tables of accuracy under attack (over nominal ε and over exact w1) for several attack logs.

    ``plot``: also write both curves for all logs into one PNG (two panels). ``grid``: the ε columns
    (default: a round grid up to the largest finite distance found). Returns the text (with the PNG's path).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths must name at least one attack log")
    summaries = [summarize_attack_log(p) for p in paths]
    if grid is None:
        grid = default_radius_grid(max(s["max_finite"] for s in summaries))
    grid = sorted(set(float(g) for g in grid))
    parts = []
    for column, title in (("radius", "nominal ε"), ("w1", "exact W1 (L2 ground)")):
        header = ["log", "mode", "N", "clean acc. %"] + [f"acc. % @ {_fmt(g)}" for g in grid] + [
            "median radius" if column == "radius" else "median w1"]
        if column == "radius":
            header += ["w1/ε", "s/image"]
        body = []
        for s in summaries:
            acc = accuracy_under_attack(s["rows"], grid, column)
            row = [Path(s["path"]).name, _mode(s), str(s["n_images"]), f"{s['clean_accuracy']:.2f}"]
            row += [f"{a:.2f}" for a in acc]
            row.append(_fmt(s["median_radius"] if column == "radius" else s["median_w1"]))
            if column == "radius":
                row += [_fmt(s["w1_over_eps"], 3), _fmt(s["time_per_image"], 3)]
            body.append(row)
        parts.append(f"accuracy under attack over {title}:\n" + format_table(header, body, markdown))
    if plot is not None:
        parts.append(f"attack curves: {plot_attack_curves(summaries, plot)}")
    return "\n\n".join(parts)


def _mode(summary) -> str:
    if summary["mode"] == "smoothed":
        return f"smoothed {summary['noise']} σ={summary['sigma']:g}"
    return str(summary["mode"] or "—")


def plot_attack_curves(summaries, out_png) -> Path:
    """Accuracy under attack vs nominal ε (left) and vs exact W1 (right), one line per log (Fig. 5 style)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_png = Path(out_png)
    top = max([s["max_finite"] for s in summaries] + [1e-12]) * 1.1
    eps = np.linspace(0.0, top, 400)
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for ax, column, label in zip(fig.subplots(1, 2), ("radius", "w1"),
                                 ("nominal ε (entropic ball)", "exact W1 of the example (L2 ground)")):
        for s in summaries:
            ax.step(eps, accuracy_under_attack(s["rows"], eps, column), where="post",
                    label=f"{Path(s['path']).stem} ({_mode(s)})")
        ax.set_xlabel(f"{label}, mass-normalized")
        ax.set_ylabel("accuracy under attack (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return out_png


def read_certify_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a certify log; FileNotFoundError / ValueError (one line) if it is missing or not one."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such certify log: {path}")
    if is_attack_log(path):
        raise ValueError(f"{path} is an attack log, not a certify log")
    columns, rows = read_log(path)
    if "radius" not in columns or "predict" not in columns or columns[:1] != ["idx"]:
        raise ValueError(f"{path} is not a certify log (needs idx, label, predict and radius columns)")
    check_log_rows(path, columns, rows, distances=("radius", "radius_l1"))
    return rows


def check_certified_vs_attack(certify_log: str | os.PathLike, attack_log: str | os.PathLike) -> dict:
    """Count verified adversarial examples inside the certified radius of their image .

    Joins the logs on ``idx`` (labels must agree). Returns a dict:
      pairs: images in both logs; certified: certified correct (predict = label, radius > 0);
      attacked_certified: of those, verified adversarial examples (adv_predict a wrong class, not abstain);
      violations / violation_idx: of those, exact w1 < certified radius (the certificate says impossible);
      abstain_within_radius: attack 'successes' by abstention at w1 < radius (allowed: not a violation);
      outside_threat_model: pairs whose example moved mass across channels (excluded);
      alpha: the certify log's α; expected_violations_bound: α × attacked_certified;
      warnings: settings that make the comparison meaningless (plain attack, other noise or sigma).
    """
    cert_rows = read_certify_rows(certify_log)
    attack_rows = read_attack_log(attack_log)
    certs = {row["idx"]: row for row in cert_rows}
    result = {"pairs": 0, "certified": 0, "attacked_certified": 0, "violations": 0, "violation_idx": [],
              "abstain_within_radius": 0, "outside_threat_model": 0, "warnings": []}
    alphas = {row.get("alpha") for row in cert_rows} - {None}
    result["alpha"] = alphas.pop() if len(alphas) == 1 else None
    for a in attack_rows:
        c = certs.get(a["idx"])
        if c is None:
            continue
        if c["label"] != a["label"]:
            raise ValueError(f"image {a['idx']} has label {c['label']} in {certify_log} but {a['label']} in "
                             f"{attack_log}: not the same dataset")
        result["pairs"] += 1
        if not (c["predict"] == c["label"] and float(c["radius"]) > 0):
            continue
        result["certified"] += 1
        if not int(a["success"]) or a["w1"] is None:
            continue
        if float(a.get("channel_gap") or 0.0) > CHANNEL_GAP_TOL:
            result["outside_threat_model"] += 1
            continue
        inside = float(a["w1"]) < float(c["radius"])
        adv = a.get("adv_predict")
        if adv == ABSTAIN:
            result["abstain_within_radius"] += int(inside)
            continue
        result["attacked_certified"] += 1
        if inside:
            result["violations"] += 1
            result["violation_idx"].append(a["idx"])
    alpha = result["alpha"]
    result["expected_violations_bound"] = None if alpha is None else alpha * result["attacked_certified"]
    modes = {r.get("mode") for r in attack_rows}
    if modes != {"smoothed"}:
        result["warnings"].append(f"the attack log's mode is {sorted(map(str, modes))}, not smoothed: its "
                                  "examples fool the base classifier, which the certificate says nothing about")
    for key in ("noise", "sigma"):
        mine = {r.get(key) for r in attack_rows}
        theirs = {r.get(key) for r in cert_rows}
        if mine != theirs and None not in theirs:
            result["warnings"].append(f"{key} differs: attack {sorted(map(str, mine))}, certify "
                                      f"{sorted(map(str, theirs))}")
    return result


def format_check(result: dict) -> str:
    """One paragraph for the CLI."""
    text = (f"certificate check: {result['violations']} of {result['attacked_certified']} verified adversarial "
            f"examples of certified images lie within the certified radius")
    if result["expected_violations_bound"] is not None:
        bound = result["expected_violations_bound"]
        text += f" (certificates fail with probability <= alpha: expect at most ~{bound:.2f})"
    text += (f"; {result['pairs']} images in both logs, {result['certified']} certified, "
             f"{result['abstain_within_radius']} abstentions within the radius (allowed)")
    if result["outside_threat_model"]:
        text += f", {result['outside_threat_model']} examples moved mass across channels (excluded)"
    if result["violation_idx"]:
        text += f"; violating idx: {result['violation_idx'][:20]}"
    return "\n".join([text] + [f"warning: {w}" for w in result["warnings"]])


def format_attack_tables(logs: dict, grid) -> str:
    """Two Markdown tables of accuracy under attack (%) at each ``grid`` value, of nominal ε and of exact W1; one
    row per log of ``logs`` ((model, attack) -> path, in row order). Medians over all attacked images (0: wrong
    before the attack, inf: never fooled), 4 significant digits; s/digit: mean attack seconds per image (the
    logs' time column); W1/ε: median ratio over the fooled images."""
    parts = []
    for column, title, median in (("radius", "nominal ε", "median ε"), ("w1", "exact W1", "median W1")):
        header = (["model", "attack", "N", "clean acc. %"] + [f"acc. % @ {'ε' if column == 'radius' else 'W1'} "
                                                                f"{g:g}" for g in grid] + [median])
        header += ["s/digit"] if column == "radius" else ["W1/ε"]
        body = []
        for (model, method), path in logs.items():
            summary = summarize_attack_log(path)
            rows = summary["rows"]
            acc = accuracy_under_attack(rows, grid, column)
            row = ([model, method, str(len(rows)), pct(summary["clean_accuracy"])] + [pct(a) for a in acc]
                   + [_fmt(summary["median_radius" if column == "radius" else "median_w1"])])
            if column == "radius":
                row.append(f"{summary['time_per_image']:.3g}")
            else:
                ratio = summary["w1_over_eps"]
                row.append("—" if ratio is None else f"{ratio:.3g}")
            body.append(row)
        parts.append(f"Accuracy under attack vs {title}:\n\n" + format_table(header, body, markdown=True))
    return "\n\n".join(parts)


def plot_attacks_by_method(logs: dict, models, methods, grid, out_png) -> Path:
    """One row per attack method: accuracy under attack vs nominal ε (left) and vs exact W1 (right), one step
    curve per model in each panel (an image counts as broken from its distance on). ``logs``: (model, method)
    -> path; ``grid``: the table's values (the x axis reaches past the largest)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = {key: read_attack_log(path) for key, path in logs.items()}
    fig = Figure(figsize=(10, 3.6 * len(methods)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(methods), 2, squeeze=False)
    for i, method in enumerate(methods):
        for ax, column in zip(axes[i], ("radius", "w1")):
            finite = [float(r[column]) for m in models for r in rows[(m, method)]
                      if r.get(column) is not None and math.isfinite(float(r[column]))]
            top = max(finite + [max(grid), 1e-3]) * 1.1
            eps = np.linspace(0.0, top, 400)
            for m in models:
                ax.step(eps, accuracy_under_attack(rows[(m, method)], eps, column), where="post", label=m)
            if column == "radius":
                ax.set_xlabel(f"nominal ε: {get_attack(method).nominal}, mass-normalized", fontsize=8)
            else:
                ax.set_xlabel("exact W1 of the example (L2 ground), mass-normalized", fontsize=8)
            ax.set_ylabel("accuracy under attack (%)")
            ax.set_title(f"{method} attack", fontsize=10)
            ax.set_ylim(0, 100)
            ax.set_xlim(0, top)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    return out_png
