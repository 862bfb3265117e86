"""The noise grid: clean images beside the smoothing samples the base classifier votes on.

The samples come from the registry's op (``noises.FAMILIES[name].sample``) with the image's dataset index as
key and sample indices [0, k) of ``noises.VOTE_SAMPLES``: for the same seed they are exactly the first k
samples ``Smooth.predict`` counts and the first k selection samples of ``Smooth.certify`` (``docs/math.md``
§RNG contract). What the picture shows is what the classifier sees.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ...core import noises
from .layout import wrap_to_width
from .scales import displayed, pixel_scale, pixel_scale_label, pixel_ticks, value_range

DEFAULT_NOISES = ("flow-laplace", "pixel-laplace")
DEFAULT_SIGMAS = (0.01, 0.02)
FIRST_SAMPLE = noises.VOTE_SAMPLES.start  # the votes' first sample index
MAX_IMAGES = 8  # beyond these a grid is no longer readable on a page
MAX_SAMPLES = 12
MAX_ROWS = 32


def _count(value, name: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= limit:
        raise ValueError(f"{name} must be an integer in [1, {limit}], got {value!r}")
    return int(value)


def _check_images(images, keys) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor [B, C, H, W]")
    _count(images.shape[0], "the number of images", MAX_IMAGES)
    keys = torch.as_tensor(keys)
    if keys.dim() != 1 or keys.shape[0] != images.shape[0] or keys.is_floating_point():
        raise ValueError(f"keys must be one integer per image ({images.shape[0]}): the images' dataset indices")
    return images, keys.to(torch.int64).cpu()


def noise_samples(images: torch.Tensor, keys, noise: str, sigma: float, samples: int,
                  seed: int = 0) -> torch.Tensor:
    """Samples [0, ``samples``) of the vote range for each image: [B, samples, C, H, W], not clamped.

    ``keys``: the images' dataset indices (the RNG keys certification uses); ``seed``: the smoothing seed.
    """
    images, keys = _check_images(images, keys)
    samples = _count(samples, "samples", MAX_SAMPLES)
    family = noises.get(noise)
    sigma = noises.check_sigma(sigma)
    drawn = family.sample(images, samples, sigma, seed=seed, sample_offset=FIRST_SAMPLE, keys=keys)
    return drawn.reshape(images.shape[0], samples, *images.shape[1:])


def _votes(model, noisy: torch.Tensor) -> np.ndarray:
    device = next((p.device for p in model.parameters()), noisy.device)
    with torch.inference_mode():
        return model(noisy.to(device)).argmax(dim=1).cpu().numpy()


def noise_grid(images: torch.Tensor, keys, *, labels=None, noise_names=DEFAULT_NOISES, sigmas=DEFAULT_SIGMAS,
               samples: int = 4, seed: int = 0, model=None, title: str | None = None):
    """A Figure: one row per (image, noise family, σ) with the clean image and ``samples`` smoothing samples.

    Args:
        images: [B, C, H, W] pixel values (B <= 8); keys: their dataset indices (the RNG keys).
        labels: optional true labels [B] (shown, and a wrong vote is printed in red).
        noise_names: families of ``noises.FAMILIES``; sigmas: standard deviations (mass-normalized units).
        samples: samples per row (1..12), sample indices [0, samples) of the vote range; seed: smoothing seed.
        model: optional base classifier: each sample's panel shows its vote (the model's class for it).
        title: first line of the figure's title (default: a description of the samples).
    Each panel's title gives its mass Σ pixels (flow noise keeps it exactly, pixel noise does not). One colour
    scale for all panels, stated on its colour bar: grey on [0, 1], blue below 0, red above 1, nothing clipped.
    """
    from matplotlib.figure import Figure

    images, keys = _check_images(images, keys)
    names = tuple(noise_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"noise_names must name distinct families of {list(noises.NOISES)}, got {list(names)}")
    sigmas = tuple(noises.check_sigma(s, "sigmas") for s in sigmas)
    if not sigmas or len(set(sigmas)) != len(sigmas):
        raise ValueError(f"sigmas must be distinct numbers, got {list(sigmas)}")
    samples = _count(samples, "samples", MAX_SAMPLES)
    rows = images.shape[0] * len(names) * len(sigmas)
    if rows > MAX_ROWS:
        raise ValueError(f"images x noise families x sigmas must give at most {MAX_ROWS} rows, got {rows}")
    if labels is not None:
        labels = [int(v) for v in torch.as_tensor(labels).reshape(-1).tolist()]
        if len(labels) != images.shape[0]:
            raise ValueError(f"labels must have one entry per image ({images.shape[0]}), got {len(labels)}")

    grid = []  # (image b, noise, sigma, samples [k, C, H, W], votes or None)
    for b in range(images.shape[0]):
        for name in names:
            for sigma in sigmas:
                drawn = noise_samples(images[b:b + 1], keys[b:b + 1], name, sigma, samples, seed)[0]
                grid.append((b, name, sigma, drawn, None if model is None else _votes(model, drawn)))
    lo, hi = value_range([displayed(x) for x in images] + [displayed(s) for *_, drawn, _ in grid for s in drawn])
    cmap, norm = pixel_scale(lo, hi)

    width = 1.45 * (samples + 1) + 0.9
    fig = Figure(figsize=(width, 1.62 * rows + 1.9), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, samples + 1, squeeze=False))
    for r, (b, name, sigma, drawn, votes) in enumerate(grid):
        label = None if labels is None else labels[b]
        head = f"idx {int(keys[b])}" + ("" if label is None else f", label {label}")
        _panel(axes[r, 0], images[b], cmap, norm, f"{head}\nclean, mass {float(images[b].sum()):.1f}")
        axes[r, 0].set_ylabel(f"{name}\nσ = {sigma:g}", fontsize=9)
        for k in range(samples):
            text = f"sample {FIRST_SAMPLE + k}\nmass {float(drawn[k].sum()):.1f}"
            wrong = False
            if votes is not None:
                text += f", vote {int(votes[k])}"
                wrong = label is not None and int(votes[k]) != label
            _panel(axes[r, k + 1], drawn[k], cmap, norm, text, color="#c00000" if wrong else "black")
    what = "pixel value" + (" (mean over channels)" if images.shape[1] > 1 else "")
    bar = fig.colorbar(axes[0, 0].images[0], ax=axes, location="bottom", shrink=0.8, aspect=40, pad=0.01)
    bar.set_label(wrap_to_width(pixel_scale_label(lo, hi, what), 0.8 * width, 9), fontsize=9)
    bar.set_ticks(pixel_ticks(lo, hi), labels=[f"{t:.3g}" for t in pixel_ticks(lo, hi)])
    bar.ax.tick_params(labelsize=8)
    first = title or "Smoothing samples the classifier votes on"
    detail = (f"sample indices {FIRST_SAMPLE}-{FIRST_SAMPLE + samples - 1} of the vote range, seed {seed}, key = "
              "dataset index:\nthe first votes of predict and of certify's selection step")
    if model is not None:
        detail += "; vote = the base classifier's class" + (" (red: wrong)" if labels is not None else "")
    fig.suptitle(wrap_to_width(f"{first}\n{detail}", width, 10), fontsize=10)
    return fig


def _panel(ax, image: torch.Tensor, cmap, norm, text: str, color: str = "black") -> None:
    ax.imshow(displayed(image), cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(text, fontsize=8, color=color)
    ax.set_xticks([])
    ax.set_yticks([])
