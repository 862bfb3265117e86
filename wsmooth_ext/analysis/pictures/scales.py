"""Colour scales that show every value: pixels that leave [0, 1] get colours of their own, never a clipped grey."""

from __future__ import annotations

import math

import numpy as np
import torch

# pixel scale: grey from black (0) to white (1) as MNIST is usually shown, blue below 0, red above 1
BELOW, BLACK, WHITE, ABOVE = "#2b6cd9", "#000000", "#ffffff", "#d7301f"


def value_range(arrays) -> tuple[float, float]:
    """(min, max) over all arrays, widened to contain [0, 1] so the grey part of the scale is always whole."""
    lo = min([0.0] + [float(np.min(a)) for a in arrays])
    hi = max([1.0] + [float(np.max(a)) for a in arrays])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("pixel values must be finite to be drawn")
    return lo, hi


def stretch(v):
    """The pixel scale's axis: the identity on [0, 1] (grey, linear) and asinh beyond it (v < 0: −asinh(−v),
    v > 1: 1 + asinh(v − 1)), continuous with slope 1 at both joints. Noise takes pixels tens of units out of
    [0, 1]; a linear scale would squeeze the grey part of every picture into a sliver."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v < 0, -np.arcsinh(-np.minimum(v, 0)), np.where(v > 1, 1 + np.arcsinh(np.maximum(v, 1) - 1), v))


def unstretch(t):
    """The inverse of :func:`stretch`."""
    t = np.asarray(t, dtype=np.float64)
    return np.where(t < 0, -np.sinh(-np.minimum(t, 0)), np.where(t > 1, 1 + np.sinh(np.maximum(t, 1) - 1), t))


def pixel_scale(lo: float, hi: float):
    """(colormap, norm) over [lo, hi] ⊇ [0, 1]: grey from black (0) to white (1), darker to brighter blue
    below 0 and white to red above 1, on the :func:`stretch` axis (linear inside [0, 1]). Every value in
    [lo, hi] has its own colour: nothing is clipped."""
    from matplotlib.colors import FuncNorm, LinearSegmentedColormap

    if not (lo <= 0.0 and hi >= 1.0):
        raise ValueError(f"the pixel scale must contain [0, 1], got [{lo}, {hi}]")
    t_lo, t_hi = float(stretch(lo)), float(stretch(hi))
    span = t_hi - t_lo
    stops = ([(0.0, BELOW)] if lo < 0 else []) + [(-t_lo / span, BLACK), ((1.0 - t_lo) / span, WHITE)]
    stops += [(1.0, ABOVE)] if hi > 1 else []
    return (LinearSegmentedColormap.from_list("wsmooth_pixels", stops),
            FuncNorm((stretch, unstretch), vmin=lo, vmax=hi))


def pixel_ticks(lo: float, hi: float) -> list[float]:
    """Colour-bar ticks: the ends of the range, 0, 1 and round values between, not crowding each other."""
    inner = [-1000, -300, -100, -30, -10, -3, -1, 0, 0.5, 1, 2, 4, 11, 31, 101, 301, 1001]
    span = float(stretch(hi) - stretch(lo))
    ticks = [lo, hi]
    for value in [0, 1] + [v for v in inner if lo < v < hi]:
        if all(abs(float(stretch(value) - stretch(t))) > 0.05 * span for t in ticks) or value in (0, 1):
            ticks.append(value)
    return sorted(set(ticks))


def pixel_scale_label(lo: float, hi: float, what: str = "pixel value") -> str:
    """The colour bar's label: what the colours mean, and that nothing was clipped."""
    if lo == 0.0 and hi == 1.0:
        return f"{what}: grey, black 0 to white 1 (all values lie in [0, 1])"
    parts = ["grey [0, 1] (linear)"]
    if lo < 0:
        parts.insert(0, "blue < 0")
    if hi > 1:
        parts.append("red > 1")
    return (f"{what}: {', '.join(parts)}; asinh axis outside [0, 1]; full range [{lo:.3g}, {hi:.3g}] shown, "
            "nothing clipped")


def difference_scale(arrays):
    """(colormap, norm, limit) for signed differences: blue lost, white 0, red gained, symmetric about 0 and
    wide enough for the largest |value| (at least 1e-6, so an all-zero difference still has a scale)."""
    from matplotlib.colors import Normalize

    limit = max([1e-6] + [float(np.max(np.abs(a))) for a in arrays])
    return "RdBu_r", Normalize(-limit, limit), limit


def displayed(image: torch.Tensor) -> np.ndarray:
    """What a panel draws of an image [C, H, W]: its one channel, or the mean over the channels of a colour
    image (an RGB picture would have to clip values outside [0, 1]); float64 [H, W]."""
    return image.detach().mean(dim=0).double().cpu().numpy()
