"""Exact Wasserstein-1 distances between images, as linear programs (SciPy HiGHS).

What is computed (``docs/math.md`` §Lemma 1 and §Scope: the certificate's threat model):

* Each image is divided by its **own total mass** s = Σ x over all channels and pixels, so it sums to 1.
* Transport stays **within a channel** (flows never cross channels, paper Cor. 2). The distance is therefore
  the sum over channels c of the optimal cost of moving X_c onto Y_c, which exists only when every channel
  carries the same share of the mass in both images: Σ X_c = Σ Y_c. For one channel this always holds.
  When the shares differ by more than ``mass_tol`` no within-channel plan exists and ``on_mismatch`` decides:
  ``"error"`` (default) raises ValueError, ``"inf"`` returns ``math.inf`` (the distance in the threat model:
  no mass-preserving flow maps one image onto the other, so no certificate covers it), ``"rescale"`` first
  scales each channel of Y to the share it has in X (an explicit extension, for reporting attacks on colour
  images whose clamping moved a little mass between channels; it is *not* the threat-model distance).
  Differences within ``mass_tol`` are rounding and are always removed by that rescaling.
* ``ground="l2"``: cost of moving unit mass between pixels (i, j) and (k, l) is the Euclidean distance
  √((i−k)² + (j−l)²) in pixels (Wong et al.'s threat model; the certificates report this). Solved as a
  transport LP over the supports. ``window=k`` (odd) restricts moves to max(|i−k|, |j−l|) ≤ k//2, the
  attack's local k×k transport; the result is then an upper bound of the unrestricted W1 and ``math.inf``
  when no plan within the window exists.
* ``ground="l1"``: cost |i−k| + |j−l|. Solved, by Lemma 1 of the paper, as min ‖δ‖₁ over local flow plans
  δ with Y = Δ(X, δ): a sparse min-cost-flow LP on the grid edges with about 4·H·W variables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

GROUNDS = ("l1", "l2")
ON_MISMATCH = ("error", "inf", "rescale")
# Largest transport LP we build (variables); beyond it the caller should pass a window.
MAX_TRANSPORT_VARIABLES = 4_000_000


def _as_image(x, name: str) -> np.ndarray:
    """[C,H,W] or [H,W] tensor/array -> float64 [C,H,W] with non-negative finite entries and positive mass."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be an image [C, H, W] or [H, W], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative: images are treated as mass distributions")
    if not arr.sum() > 0:
        raise ValueError(f"{name} has zero mass: an all-zero image is not a distribution")
    return arr


def _normalized_pair(x, y, on_mismatch: str, mass_tol: float):
    """Both images divided by their own total mass; per-channel shares matched (see module docstring).

    Returns (X, Y, mismatch) where ``mismatch`` is Σ_c |Σ X_c − Σ Y_c| before any rescaling.
    """
    xa, ya = _as_image(x, "x"), _as_image(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
    xn, yn = xa / xa.sum(), ya / ya.sum()
    share_x, share_y = xn.sum(axis=(1, 2)), yn.sum(axis=(1, 2))
    mismatch = float(np.abs(share_x - share_y).sum())
    if mismatch > mass_tol:
        if on_mismatch == "error":
            raise ValueError(
                "x and y distribute their mass differently over channels (shares "
                f"{np.round(share_x, 6).tolist()} vs {np.round(share_y, 6).tolist()}); transport stays within a "
                "channel, so no plan exists. Pass on_mismatch='inf' or 'rescale' to handle this")
        if on_mismatch == "inf":
            return xn, yn, mismatch
    # Give each channel of Y exactly the share it has in X (removes rounding, or the documented extension).
    for c in range(yn.shape[0]):
        if share_y[c] > 0:
            yn[c] *= share_x[c] / share_y[c]
        elif share_x[c] > 0:
            raise ValueError(f"channel {c} of y is empty while x has mass there: no plan exists")
    return xn, yn, mismatch


def _check_args(ground, window, on_mismatch, mass_tol):
    if ground not in GROUNDS:
        raise ValueError(f"ground must be one of {GROUNDS}, got {ground!r}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ValueError(f"window must be None or an odd integer >= 1, got {window!r}")
        if ground == "l1":
            raise ValueError("window is only supported with ground='l2' (the l1 distance is a grid flow LP)")
    if on_mismatch not in ON_MISMATCH:
        raise ValueError(f"on_mismatch must be one of {ON_MISMATCH}, got {on_mismatch!r}")
    if not (isinstance(mass_tol, (int, float)) and 0 <= mass_tol < 1):
        raise ValueError(f"mass_tol must be a number in [0, 1), got {mass_tol!r}")


def wasserstein_distance(x, y, ground: str = "l2", window: int | None = None, *, on_mismatch: str = "error",
                         mass_tol: float = 1e-6) -> float:
    """Exact W1 between two images, each normalized by its own total mass (see the module docstring).

    Args:
        x, y: images [C, H, W] or [H, W] (tensors or arrays), non-negative, with positive mass.
        ground: "l2" (Euclidean pixel distance, the reported threat model) or "l1" (Manhattan, Lemma 1).
        window: odd k restricting l2 moves to the k×k neighbourhood (an upper bound; inf if infeasible).
        on_mismatch: what to do when channels carry different mass shares: "error", "inf" or "rescale".
        mass_tol: per-channel share differences (summed over channels) up to this are treated as rounding.

    Returns:
        The distance in pixels of mass-normalized images, as a Python float (``math.inf`` as described).
    """
    _check_args(ground, window, on_mismatch, mass_tol)
    xn, yn, mismatch = _normalized_pair(x, y, on_mismatch, mass_tol)
    if mismatch > mass_tol and on_mismatch == "inf":
        return math.inf
    total = 0.0
    for c in range(xn.shape[0]):
        if ground == "l1":
            total += flow_lp(xn[c], yn[c])[0]
        else:
            total += transport_lp(xn[c], yn[c], ground="l2", window=window)
    return total


def min_cost_flow(x, y, *, mass_tol: float = 1e-6):
    """Lemma 1 made explicit: the local flow plan δ of least ‖δ‖₁ with Y = Δ(X, δ), per channel.

    Returns (‖δ‖₁, flow_v [C, H−1, W], flow_h [C, H, W−1]) as float64 tensors, for the mass-normalized
    images X, Y (mismatched channel shares raise ValueError). ``wsmooth_ext.divergence(flow_v, flow_h)``
    equals Y − X up to the LP tolerance.
    """
    _check_args("l1", None, "error", mass_tol)
    xn, yn, _ = _normalized_pair(x, y, "error", mass_tol)
    value, flows_v, flows_h = 0.0, [], []
    for c in range(xn.shape[0]):
        v, fv, fh = flow_lp(xn[c], yn[c])
        value += v
        flows_v.append(fv)
        flows_h.append(fh)
    return value, torch.from_numpy(np.stack(flows_v)), torch.from_numpy(np.stack(flows_h))


@dataclass(frozen=True)
class TransportPlan:
    """An optimal plan of :func:`transport_plan`: move k carries ``mass[k]`` (a fraction of the image's total
    mass) in channel ``channel[k]`` from pixel ``source[k]`` = (row, column) to pixel ``target[k]``.
    ``value`` is the plan's cost Σ mass·distance, the W1 distance. Mass that stays where it is is not listed."""

    value: float
    channel: np.ndarray  # [n] int64
    source: np.ndarray  # [n, 2] int64 (row, column)
    target: np.ndarray  # [n, 2] int64
    mass: np.ndarray  # [n] float64

    @property
    def moved_mass(self) -> float:
        """Σ mass over the moves: the fraction of the image's mass the plan transports."""
        return float(self.mass.sum())


def transport_plan(x, y, ground: str = "l2", window: int | None = None, *, on_mismatch: str = "error",
                   mass_tol: float = 1e-6) -> TransportPlan:
    """:func:`wasserstein_distance` (same arguments and normalization) together with the optimal plan of its
    transport LP, per channel: which pixel's mass moves where. ``value`` equals ``wasserstein_distance``
    for the same arguments. With ``window`` a plan may keep mass in place (zero-length moves are dropped).
    ``math.inf`` (mismatched shares with on_mismatch="inf", or no plan within the window) has no moves.
    """
    _check_args(ground, window, on_mismatch, mass_tol)
    xn, yn, mismatch = _normalized_pair(x, y, on_mismatch, mass_tol)
    if mismatch > mass_tol and on_mismatch == "inf":
        return _plan_without_moves(math.inf)
    total, parts = 0.0, []
    for c in range(xn.shape[0]):
        value, (src, dst, mass) = _solve_transport(xn[c], yn[c], ground, window)
        total += value
        moving = src != dst
        parts.append((np.full(int(moving.sum()), c, dtype=np.int64), src[moving], dst[moving], mass[moving]))
    if math.isinf(total):
        return _plan_without_moves(math.inf)
    channel, src, dst, mass = (np.concatenate(columns) for columns in zip(*parts))
    w = xn.shape[2]
    return TransportPlan(total, channel, np.stack(np.divmod(src, w), axis=1), np.stack(np.divmod(dst, w), axis=1),
                         mass.astype(np.float64))


def _plan_without_moves(value: float) -> TransportPlan:
    pixels = np.zeros((0, 2), np.int64)
    return TransportPlan(value, np.zeros(0, np.int64), pixels, pixels, np.zeros(0))


def _scale_for(a: np.ndarray) -> float:
    # HiGHS tolerances are absolute (~1e-7); pixels of a unit-mass image are ~1/(H·W). Scaling the masses
    # to O(1) keeps the tolerance small relative to the data; the objective is divided back.
    return float(a.size)


def flow_lp(a: np.ndarray, b: np.ndarray):
    """min Σ|δ| s.t. div(δ) = b − a on the H×W grid (one channel, equal masses). Returns (value, δv, δh)."""
    from scipy import sparse
    from scipy.optimize import linprog

    h, w = a.shape
    idx = np.arange(h * w).reshape(h, w)
    # Vertical edge (i,j)->(i+1,j) and horizontal edge (i,j)->(i,j+1): +1 at the head, -1 at the tail.
    tails = np.concatenate([idx[:-1, :].ravel(), idx[:, :-1].ravel()])
    heads = np.concatenate([idx[1:, :].ravel(), idx[:, 1:].ravel()])
    n_edges = tails.size
    nv = (h - 1) * w
    if n_edges == 0:  # a single pixel: both images are the same unit mass
        return 0.0, np.zeros((max(h - 1, 0), w)), np.zeros((h, max(w - 1, 0)))
    cols = np.arange(n_edges)
    div = sparse.coo_matrix((np.concatenate([np.ones(n_edges), -np.ones(n_edges)]),
                             (np.concatenate([heads, tails]), np.concatenate([cols, cols]))),
                            shape=(h * w, n_edges)).tocsr()
    # δ = δ⁺ − δ⁻ with δ± ≥ 0, so the objective Σ(δ⁺ + δ⁻) = ‖δ‖₁ at the optimum.
    a_eq = sparse.hstack([div, -div]).tocsc()
    scale = _scale_for(a)
    res = linprog(np.ones(2 * n_edges), A_eq=a_eq, b_eq=(b - a).ravel() * scale, bounds=(0, None),
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"flow LP failed: {res.message}")
    delta = (res.x[:n_edges] - res.x[n_edges:]) / scale
    return float(res.fun) / scale, delta[:nv].reshape(h - 1, w), delta[nv:].reshape(h, w - 1)


def transport_lp(a: np.ndarray, b: np.ndarray, ground: str = "l2", window: int | None = None) -> float:
    """Optimal transport cost between two equal-mass H×W arrays with a pixel-distance ground metric.

    Only pixels with mass enter the LP. Without a window the cost is a metric, so mass common to both
    arrays at a pixel stays put in some optimal plan and is removed first (smaller LP, same value).
    """
    return _solve_transport(a, b, ground, window)[0]


def _solve_transport(a: np.ndarray, b: np.ndarray, ground: str, window: int | None):
    """transport_lp's LP: (value, moves) with moves = (source pixels [n], target pixels [n], mass [n]) of an
    optimal plan (flat pixel indices, unscaled mass; entries of zero mass dropped). No moves when the value
    is 0 or inf."""
    from scipy import sparse
    from scipy.optimize import linprog

    no_moves = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if window is None:
        common = np.minimum(a, b)
        a, b = a - common, b - common
    src, dst = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    if src.size == 0 or dst.size == 0:
        return 0.0, no_moves  # equal masses: the other side is empty too (up to rounding)
    w = a.shape[1]
    si, sj = np.divmod(src, w)
    ti, tj = np.divmod(dst, w)
    di = np.abs(si[:, None] - ti[None, :])
    dj = np.abs(sj[:, None] - tj[None, :])
    if src.size * dst.size > MAX_TRANSPORT_VARIABLES:
        raise ValueError(f"transport LP too large ({src.size}×{dst.size} pixel pairs); pass window=k to "
                         "restrict moves to a k×k neighbourhood")
    cost = np.sqrt(di ** 2 + dj ** 2) if ground == "l2" else (di + dj).astype(np.float64)
    allowed = np.ones_like(cost, dtype=bool) if window is None else np.maximum(di, dj) <= window // 2
    rows, cols = np.nonzero(allowed)
    n_var = rows.size
    if n_var == 0:  # no source pixel may reach any target pixel within the window
        return math.inf, no_moves
    var = np.arange(n_var)
    a_eq = sparse.coo_matrix((np.ones(2 * n_var), (np.concatenate([rows, src.size + cols]),
                                                   np.concatenate([var, var]))),
                             shape=(src.size + dst.size, n_var)).tocsc()
    scale = _scale_for(a)
    b_eq = np.concatenate([a.ravel()[src], b.ravel()[dst]]) * scale
    # HiGHS presolve wrongly declares some of these (feasible, balanced) problems infeasible when masses
    # span many orders of magnitude; the simplex without presolve solves them reliably.
    res = linprog(cost[rows, cols], A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs",
                  options={"presolve": False})
    if res.status == 2:  # infeasible: only possible with a window
        return math.inf, no_moves
    if res.status != 0:
        raise RuntimeError(f"transport LP failed: {res.message}")
    used = res.x > 0
    return float(res.fun) / scale, (src[rows[used]], dst[cols[used]], res.x[used] / scale)
