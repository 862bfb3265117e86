"""Pure-tensor implementation of the smoothing noise (``docs/math.md`` §Smoothing samples).

Two roles:

* the **oracle** for the fused C++/CUDA kernels: ``flow_noise_reference(..., rng="philox")`` draws the very
  same counter-based Philox4x32-10 words as ``csrc/flow_noise.h`` (implemented here a second time, with int64
  tensor arithmetic) and applies the divergence stencil of Eq. 5 with plain slicing, so the kernels can be
  compared value by value;
* the **baseline** of the benchmarks: ``rng="torch"`` is the paper's practice — repeat the image n times,
  sample the two flow tensors from torch's generator, and apply Eq. 5 with four slice updates.

Everything here is differentiable with respect to ``x`` through ordinary autograd.
"""

from __future__ import annotations

import torch

from . import distributions

# Philox4x32-10 constants (Salmon et al. 2011, Random123).
_PHILOX_M0 = 0xD2511F53
_PHILOX_M1 = 0xCD9E8D57
_PHILOX_W0 = 0x9E3779B9
_PHILOX_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def philox4x32_10(counter: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """Philox4x32-10 on int64 tensors holding uint32 values.

    ``counter``: int64 tensor [..., 4] (each entry in [0, 2**32)); ``key``: two uint32 ints.
    Returns an int64 tensor [..., 4] of uint32 words. int64 products of two uint32 wrap modulo 2**64,
    which keeps the low 64 bits exact; masking recovers the high and low halves.
    """
    c0, c1, c2, c3 = (counter[..., i].to(torch.int64) for i in range(4))
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for rnd in range(10):
        if rnd:
            k0 = (k0 + _PHILOX_W0) & _MASK32
            k1 = (k1 + _PHILOX_W1) & _MASK32
        p0 = c0 * _PHILOX_M0
        p1 = c2 * _PHILOX_M1
        hi0, lo0 = (p0 >> 32) & _MASK32, p0 & _MASK32
        hi1, lo1 = (p1 >> 32) & _MASK32, p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack((c0, c1, c2, c3), dim=-1)


def random_words(seed: int, keys: torch.Tensor, sample_offset: int, num_samples: int,
                 num_draws: int) -> torch.Tensor:
    """The uint32 words (as int64) [B, num_samples, num_draws] of the counter layout in csrc/flow_noise.h.

    Draw g of sample k of image b is word ``(g % 64) // 16`` of
    Philox4x32-10(counter = [16 * (g // 64) + g % 16, sample_offset + k, key_b mod 2**32, key_b >> 32 mod 2**32],
                  key = [seed mod 2**32, seed >> 32]).
    """
    keys = keys.to(torch.int64).cpu()
    num_batches = (num_draws + 63) // 64
    num_blocks = 16 * num_batches
    block = torch.arange(num_blocks, dtype=torch.int64)
    sample = torch.arange(sample_offset, sample_offset + num_samples, dtype=torch.int64)
    b, k, g = torch.meshgrid(torch.arange(keys.numel()), sample, block, indexing="ij")
    key_b = keys[b]
    counter = torch.stack((g, k & _MASK32, key_b & _MASK32, (key_b >> 32) & _MASK32), dim=-1)
    words = philox4x32_10(counter, (seed & _MASK32, (seed >> 32) & _MASK32))
    # [B, n, batch, 16 blocks, 4 words] -> word-major within each batch of 64 draws
    words = words.reshape(keys.numel(), num_samples, num_batches, 16, 4).transpose(-1, -2)
    return words.reshape(keys.numel(), num_samples, num_batches * 64)[..., :num_draws]


def words_to_noise(words: torch.Tensor, noise: str, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """Map uint32 words to noise of scale λ = ``scale`` with the rule of distribution ``noise``
    (``core/distributions.py``, the tensor form of csrc/distributions.h)."""
    return distributions.get(noise).words_to_noise(words, scale, dtype)


def noise_scale(noise: str, sigma: float) -> float:
    """λ(σ) of distribution ``noise`` (Laplace scale σ/√2, uniform half-width √3·σ): standard deviation σ."""
    return distributions.get(noise).scale(sigma)


def divergence(flow_v: torch.Tensor, flow_h: torch.Tensor) -> torch.Tensor:
    """div(δ) of paper Eq. 5: the change Δ(x, δ) − x, for flows [..., H−1, W] and [..., H, W−1].

    A flow f on an edge moves mass f from a pixel to its lower (vertical) or right (horizontal) neighbour.
    """
    if flow_v.shape[:-2] != flow_h.shape[:-2]:
        raise ValueError(f"flow_v and flow_h must share leading dims, got {tuple(flow_v.shape)} "
                         f"and {tuple(flow_h.shape)}")
    hm1, w = flow_v.shape[-2:]
    h, wm1 = flow_h.shape[-2:]
    if h != hm1 + 1 or w != wm1 + 1 or h < 2 or w < 2:
        raise ValueError(f"flow_v must be [..., H-1, W] and flow_h [..., H, W-1] with H, W >= 2, got "
                         f"{tuple(flow_v.shape)} and {tuple(flow_h.shape)}")
    out = flow_v.new_zeros(flow_v.shape[:-2] + (h, w))
    out[..., 1:, :] += flow_v
    out[..., :-1, :] -= flow_v
    out[..., :, 1:] += flow_h
    out[..., :, :-1] -= flow_h
    return out


def divergence_adjoint(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjoint of :func:`divergence`: (g[i+1,j] − g[i,j], g[i,j+1] − g[i,j]), i.e. ⟨div δ, g⟩ = ⟨δ, div* g⟩."""
    if grad.dim() < 2 or grad.shape[-2] < 2 or grad.shape[-1] < 2:
        raise ValueError(f"grad must be [..., H, W] with H, W >= 2, got {tuple(grad.shape)}")
    return grad[..., 1:, :] - grad[..., :-1, :], grad[..., :, 1:] - grad[..., :, :-1]


def _mass(x: torch.Tensor) -> torch.Tensor:
    return x.sum(dim=(1, 2, 3), keepdim=True)


def _default_keys(x: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
    if keys is None:
        return torch.arange(x.shape[0], dtype=torch.int64)
    return keys


def flow_noise_reference(x: torch.Tensor, num_samples: int, sigma: float, *, noise: str = "laplace",
                         seed: int = 0, sample_offset: int = 0, keys: torch.Tensor | None = None,
                         normalize: bool = True, rng: str = "philox") -> torch.Tensor:
    """x̃ = x + s·div(δ) for every image and sample: [B·num_samples, C, H, W], row b·n + k = sample k of b.

    ``rng="philox"`` reproduces the fused kernels' stream; ``rng="torch"`` is the paper's practice (torch's
    global generator; seed, sample_offset and keys are then ignored).
    """
    bsz, chans, h, w = x.shape
    lam = noise_scale(noise, sigma)
    rows = bsz * num_samples
    if rng == "philox":
        nv, nh = (h - 1) * w, h * (w - 1)
        words = random_words(seed, _default_keys(x, keys), sample_offset, num_samples, chans * (nv + nh))
        flows = words_to_noise(words.to(x.device), noise, lam, x.dtype).reshape(rows, chans, nv + nh)
        flow_v = flows[..., :nv].reshape(rows, chans, h - 1, w)
        flow_h = flows[..., nv:].reshape(rows, chans, h, w - 1)
    elif rng == "torch":
        flow_v = _torch_noise((rows, chans, h - 1, w), noise, lam, x)
        flow_h = _torch_noise((rows, chans, h, w - 1), noise, lam, x)
    else:
        raise ValueError(f"rng must be 'philox' or 'torch', got {rng!r}")
    # The paper's formulation: normalize, repeat, apply Eq. 5 with four slice updates, scale back.
    mass = _mass(x) if normalize else torch.ones_like(_mass(x))
    safe_mass = torch.where(mass > 0, mass, torch.ones_like(mass))
    normalized = (x / safe_mass).repeat_interleave(num_samples, dim=0)
    moved = normalized.clone()
    moved[:, :, 1:, :] += flow_v
    moved[:, :, :-1, :] -= flow_v
    moved[:, :, :, 1:] += flow_h
    moved[:, :, :, :-1] -= flow_h
    # A massless (all-zero) image has no distribution to move: it is returned unchanged.
    scale = torch.where(mass > 0, mass, torch.zeros_like(mass)).repeat_interleave(num_samples, dim=0)
    return torch.where(scale > 0, moved * scale, x.repeat_interleave(num_samples, dim=0))


def pixel_noise_reference(x: torch.Tensor, num_samples: int, sigma: float, *, noise: str = "laplace",
                          seed: int = 0, sample_offset: int = 0, keys: torch.Tensor | None = None,
                          normalize: bool = True, rng: str = "philox") -> torch.Tensor:
    """The paper's baseline: x̃ = s·(x/s + ε), ε i.i.d. on every pixel (in pixel units when normalize=False)."""
    bsz, chans, h, w = x.shape
    lam = noise_scale(noise, sigma)
    rows = bsz * num_samples
    if rng == "philox":
        words = random_words(seed, _default_keys(x, keys), sample_offset, num_samples, chans * h * w)
        eps = words_to_noise(words.to(x.device), noise, lam, x.dtype).reshape(rows, chans, h, w)
    elif rng == "torch":
        eps = _torch_noise((rows, chans, h, w), noise, lam, x)
    else:
        raise ValueError(f"rng must be 'philox' or 'torch', got {rng!r}")
    mass = _mass(x) if normalize else torch.ones_like(_mass(x))
    return x.repeat_interleave(num_samples, dim=0) + mass.repeat_interleave(num_samples, dim=0) * eps


def _torch_noise(shape, noise: str, scale: float, like: torch.Tensor) -> torch.Tensor:
    return distributions.get(noise).torch_noise(shape, scale, like)
