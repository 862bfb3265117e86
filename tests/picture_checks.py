"""Checks of what a picture draws, shared by the tests of `wsmooth show` and of the experiments' pictures
(import them: ``from picture_checks import ...``). Each compares a Figure's panels with data computed outside
the picture code: saved tensors, or the fused op called directly."""

import numpy as np
import torch

from wsmooth_ext.core import ops
from wsmooth_ext.analysis.pictures import save_figure


def attack_axes(fig, rows: int) -> np.ndarray:
    """The [rows, 3] panels (clean, adversarial, difference) of an attack figure; its colour bars come after."""
    return np.array(fig.axes[:3 * rows]).reshape(rows, 3)


def assert_attack_row_shows(axes_row, clean: torch.Tensor, adv: torch.Tensor) -> None:
    """One row of an attack figure draws exactly these one-channel images [1, H, W] and their difference."""
    clean_ax, adv_ax, diff_ax = axes_row
    np.testing.assert_array_equal(clean_ax.images[0].get_array(), clean[0].double().numpy())
    np.testing.assert_array_equal(adv_ax.images[0].get_array(), adv[0].double().numpy())
    np.testing.assert_array_equal(diff_ax.images[0].get_array(), (adv[0] - clean[0]).double().numpy())


def op_samples(images: torch.Tensor, keys, noise: str, sigma: float, samples: int, seed: int) -> torch.Tensor:
    """Samples [0, samples) of each image's votes, from the op itself (not the noise registry): [B, k, C, H, W]."""
    domain, distribution = noise.split("-")
    op = {"flow": ops.flow_noise, "pixel": ops.pixel_noise}[domain]
    keys = torch.as_tensor(keys, dtype=torch.int64)
    drawn = op(images, samples, sigma, noise=distribution, seed=seed, sample_offset=0, keys=keys)
    return drawn.reshape(images.shape[0], samples, *images.shape[1:])


def assert_noise_grid_shows(fig, images: torch.Tensor, keys, noise_names, sigmas, samples: int, seed: int):
    """A noise grid draws, row by row (image, noise, σ), the clean one-channel image and the op's samples with
    ``seed`` and the images' ``keys``; returns the panels [rows, 1 + samples]."""
    rows = len(keys) * len(noise_names) * len(sigmas)
    axes = np.array(fig.axes[:rows * (samples + 1)]).reshape(rows, samples + 1)  # the colour bar's axes come last
    row = 0
    for b, key in enumerate(keys):
        for noise in noise_names:
            for sigma in sigmas:
                np.testing.assert_array_equal(axes[row, 0].images[0].get_array(), images[b, 0].double().numpy())
                assert axes[row, 0].get_ylabel() == f"{noise}\nσ = {sigma:g}"
                drawn = op_samples(images[b:b + 1], [key], noise, sigma, samples, seed)[0]
                for k in range(samples):
                    np.testing.assert_array_equal(axes[row, k + 1].images[0].get_array(), drawn[k, 0].double().numpy())
                row += 1
    return axes


def png_bytes(fig, folder) -> bytes:
    """The PNG a Figure makes when written as the package writes pictures (save_figure)."""
    path = folder / "rendered.png"
    save_figure(fig, path, overwrite=True)
    return path.read_bytes()
