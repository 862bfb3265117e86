"""Python entry to the fused noise ops: validation, fake kernels, autograd, and the reference fallback.

The C++ library (``wsmooth_ext._C``) registers ``torch.ops.wsmooth_ext.flow_noise``, ``pixel_noise`` and their
backwards with ``TORCH_LIBRARY`` (schemas in csrc/op_schemas.h: ``(x, num_samples, sigma, noise, seed,
sample_offset, keys, normalize)``, ``noise`` a distribution's code); this module adds what the dispatcher needs
from Python (``register_fake`` for ``torch.compile``, ``register_autograd``) and the public functions
``flow_noise`` and ``pixel_noise``.
Where no compiled kernel exists for the input's device, the pure-tensor reference (same Philox stream) runs
instead, with a one-time warning: never a silent wrong answer.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from . import distributions, reference

try:  # The compiled library registers the ops on import; its Python module holds only cuda_version.
    from .. import _C
    _IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _C = None
    _IMPORT_ERROR = exc


def check_cuda_versions(built: str, running: str | None) -> None:
    """Refuse kernels built for another CUDA major version than the running torch's (as torchvision does):
    they would fail on the first GPU call, far from the cause."""
    if not built or not running:
        return  # a CPU-only build, or a CPU-only torch (whose import of CUDA kernels fails on its own)
    if built.split(".")[0] != running.split(".")[0]:
        raise RuntimeError(f"wsmooth_ext's kernels were built with CUDA {built}, but torch {torch.__version__} uses "
                           f"CUDA {running}: rebuild wsmooth_ext against this torch "
                           "(pip install --no-build-isolation --force-reinstall .)")


if _C is not None:
    check_cuda_versions(getattr(_C, "cuda_version", ""), torch.version.cuda)

SAMPLE_INDEX_LIMIT = 2 ** 32  # the sample index fills one 32-bit word of the Philox counter
OPS = {"flow": "flow_noise", "pixel": "pixel_noise"}  # the op of each graph; each has its "<op>_backward"
_OP_NAMES = tuple(name for op in OPS.values() for name in (op, f"{op}_backward"))
_warned_devices: set[str] = set()


def _has_op() -> bool:
    return _IMPORT_ERROR is None and hasattr(torch.ops, "wsmooth_ext") and all(
        hasattr(torch.ops.wsmooth_ext, name) for name in _OP_NAMES)


def _compiled_device_types() -> frozenset[str]:
    """The device types for which every op (both graphs, forward and backward) has a compiled kernel."""
    if not _has_op():
        return frozenset()
    return frozenset(dev for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"))
                     if all(torch._C._dispatch_has_kernel_for_dispatch_key(f"wsmooth_ext::{name}", key)
                            for name in _OP_NAMES))


# Known at import (registration happens when _C loads), so the check is free and torch.compile-friendly.
_KERNEL_DEVICE_TYPES = _compiled_device_types()


def has_kernel(device: torch.device | str) -> bool:
    """Whether a compiled fused kernel serves tensors on ``device`` (else the reference runs)."""
    return torch.device(device).type in _KERNEL_DEVICE_TYPES


def kernel_info() -> dict:
    """What serves the fused ops here: the devices with a compiled kernel, and the CPU path the next call takes.

    ``cpu_path`` is "avx512", "avx2" or "default" (None without the compiled library): the most capable path
    that is compiled, that this processor supports and that the environment allows. ``ATEN_CPU_CAPABILITY``
    (PyTorch's variable: default, avx2, avx512) bounds it from above; it is read at every call.
    ``cpu_path_note`` says why the path differs from the request (or why a value was ignored); ``cpu_paths``
    maps every path to "runnable", "compiled" (not on this processor) or "not compiled". Every path gives
    bit-identical output.
    """
    info = {"devices": sorted(_KERNEL_DEVICE_TYPES), "cpu_path": None, "cpu_path_requested": "",
            "cpu_path_note": "", "cpu_paths": {}}
    if _C is not None and hasattr(_C, "cpu_kernel_info"):
        cpu = _C.cpu_kernel_info()
        info.update(cpu_path=cpu["path"], cpu_path_requested=cpu["requested"], cpu_path_note=cpu["note"],
                    cpu_paths={p["name"]: "runnable" if p["runnable"] else "compiled" if p["compiled"] else
                               "not compiled" for p in cpu["paths"]})
    return info


def _warn_fallback(device: torch.device) -> None:
    if device.type in _warned_devices:
        return
    _warned_devices.add(device.type)
    reason = f" (the C++ library failed to load: {_IMPORT_ERROR})" if _IMPORT_ERROR else ""
    warnings.warn(f"wsmooth_ext: no compiled flow_noise kernel for device '{device.type}'{reason}; "
                  "using the pure-tensor reference (same random stream, slower).", RuntimeWarning,
                  stacklevel=3)


def _validate(x, num_samples, sigma, noise, seed, sample_offset, keys, pixel=False) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"x must be float32 or float64, got {x.dtype}")
    if not pixel and (x.shape[2] < 2 or x.shape[3] < 2):
        raise ValueError(f"x must have H >= 2 and W >= 2 (flows live between pixels), got {tuple(x.shape)}")
    if pixel and (x.shape[2] < 1 or x.shape[3] < 1):
        raise ValueError(f"x must have H >= 1 and W >= 1, got {tuple(x.shape)}")
    # Value checks read the data (a host sync on CUDA): the C++ op makes them itself, so Python scans x only
    # for the reference fallback; under torch.compile they are left to the op at run time.
    if x.numel() and not has_kernel(x.device) and not torch.compiler.is_compiling():
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x must be finite (found NaN or inf)")
        if bool((x < 0).any()):
            raise ValueError("x must be non-negative: images are treated as mass distributions")
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if (isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(sigma)
            or sigma <= 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    distributions.get(noise)  # ValueError naming the valid ones
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if isinstance(sample_offset, bool) or not isinstance(sample_offset, numbers.Integral) or sample_offset < 0:
        raise ValueError(f"sample_offset must be an integer >= 0, got {sample_offset!r}")
    if sample_offset + num_samples > SAMPLE_INDEX_LIMIT:
        raise ValueError(f"sample_offset + num_samples must be <= 2**32, got {sample_offset + num_samples}")
    if keys is None:
        return torch.arange(x.shape[0], dtype=torch.int64, device=x.device)
    keys = torch.as_tensor(keys)
    if keys.dim() != 1 or keys.shape[0] != x.shape[0]:
        raise ValueError(f"keys must be a 1-D tensor with one key per image ({x.shape[0]}), "
                         f"got shape {tuple(keys.shape)}")
    if keys.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"keys must be an integer tensor, got {keys.dtype}")
    return keys.to(device=x.device, dtype=torch.int64)


def _check_range(x, sigma, noise, normalize, pixel) -> None:
    """Refuse σ (for these images) whose samples could overflow x's dtype: a bound, not a draw, decides.

    A unit draw is at most the distribution's ``unit_bound`` in size (31·ln 2 for Laplace, 1 for uniform:
    core/distributions.py); a pixel receives one draw (pixel noise) or four edge flows, scaled by s·λ (or λ in
    pixel units)."""
    if not x.numel() or torch.compiler.is_compiling():
        return
    largest, mass = torch.stack((x.amax(), x.sum(dim=(1, 2, 3)).amax())).tolist()
    if math.isnan(largest) or math.isnan(mass) or math.isinf(largest):
        return  # not images: the op's own value checks say so
    distribution = distributions.get(noise)
    bound = (largest + (mass if normalize else 1.0) * distribution.scale(sigma) * distribution.unit_bound
             * (1 if pixel else 4))
    limit = torch.finfo(x.dtype).max
    if not bound < limit:
        raise ValueError(f"sigma={sigma:g} is too large for these images (mass up to {mass:.3g}): noisy pixels "
                         f"could reach {bound:.3g}, beyond {x.dtype}'s range {limit:.3g}")


def _noise_op(x, num_samples, sigma, noise, seed, sample_offset, keys, normalize, pixel):
    keys = _validate(x, num_samples, sigma, noise, seed, sample_offset, keys, pixel)
    if not has_kernel(x.device):  # the compiled op checks the same bound in its one pass over x
        _check_range(x, sigma, noise, normalize, pixel)
    num_samples, seed, sample_offset = int(num_samples), int(seed), int(sample_offset)
    if has_kernel(x.device):
        op = getattr(torch.ops.wsmooth_ext, OPS["pixel" if pixel else "flow"])
        return op(x.contiguous(), num_samples, float(sigma), distributions.get(noise).code, seed, sample_offset, keys,
                  bool(normalize))
    _warn_fallback(x.device)
    impl = reference.pixel_noise_reference if pixel else reference.flow_noise_reference
    return impl(x, num_samples, float(sigma), noise=noise, seed=seed, sample_offset=sample_offset,
                keys=keys, normalize=normalize, rng="philox")


def flow_noise(x: torch.Tensor, num_samples: int, sigma: float, *, noise: str = "laplace", seed: int = 0,
               sample_offset: int = 0, keys: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
    """Wasserstein-smoothing samples x̃ = x + s·div(δ) for a batch of images, in one fused pass.

    Args:
        x: images [B, C, H, W], float32/float64, non-negative and finite (pixel values, e.g. in [0, 1]).
        num_samples: samples per image (n >= 1).
        sigma: standard deviation of the noise on each edge flow; in mass-normalized units (the image is
            treated as x/s with s = x.sum() over C, H, W) when ``normalize`` is true, else in pixel units.
        noise: "laplace" (scale σ/√2, the paper's) or "uniform" (half-width √3·σ).
        seed: 64-bit seed of the counter-based RNG (0 <= seed < 2**63).
        sample_offset: index of the first sample; samples [o, o+n) are the same whatever the chunking.
        keys: int64 [B] identifying each image in the RNG (default 0..B−1); an image's samples depend only
            on (seed, key, sample index), not on the rest of the batch.
        normalize: see ``sigma``.

    Returns:
        [B·num_samples, C, H, W]; row b·num_samples + k is sample k of image b. Mass is preserved exactly
        (up to rounding); pixels are not clamped. Differentiable w.r.t. ``x``.
    """
    return _noise_op(x, num_samples, sigma, noise, seed, sample_offset, keys, normalize, False)


def pixel_noise(x: torch.Tensor, num_samples: int, sigma: float, *, noise: str = "laplace", seed: int = 0,
                sample_offset: int = 0, keys: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
    """The paper's Laplace-smoothing baseline: x̃ = s·(x/s + ε), ε i.i.d. on every pixel of every channel.

    Same arguments, output layout and random-stream guarantees as :func:`flow_noise`.
    """
    return _noise_op(x, num_samples, sigma, noise, seed, sample_offset, keys, normalize, True)


def divergence(flow_v: torch.Tensor, flow_h: torch.Tensor) -> torch.Tensor:
    """Apply the divergence stencil of paper Eq. 5 to explicit flows: Δ(x, δ) − x.

    ``flow_v`` [..., H−1, W] moves mass down, ``flow_h`` [..., H, W−1] moves it right. Differentiable;
    its adjoint is :func:`divergence_adjoint`.
    """
    return reference.divergence(flow_v, flow_h)


divergence_adjoint = reference.divergence_adjoint


def _register(op: str) -> None:
    """Fake kernels (torch.compile) and autograd, first and second order, of ``op`` and ``op``_backward."""
    forward = getattr(torch.ops.wsmooth_ext, op)
    backward = getattr(torch.ops.wsmooth_ext, f"{op}_backward")

    @torch.library.register_fake(f"wsmooth_ext::{op}")
    def _fake(x, num_samples, sigma, noise, seed, sample_offset, keys, normalize):
        torch._check(x.dim() == 4)
        return x.new_empty((x.shape[0] * num_samples,) + tuple(x.shape[1:]))

    @torch.library.register_fake(f"wsmooth_ext::{op}_backward")
    def _backward_fake(grad, x, num_samples, sigma, noise, seed, sample_offset, keys, normalize):
        return torch.empty_like(x)

    def _setup_context(ctx, inputs, output):
        x, num_samples, sigma, noise, seed, sample_offset, keys, normalize = inputs
        ctx.save_for_backward(x, keys)
        ctx.args = (num_samples, sigma, noise, seed, sample_offset, normalize)

    def _backward(ctx, grad):
        x, keys = ctx.saved_tensors
        num_samples, sigma, noise, seed, sample_offset, normalize = ctx.args
        grad_x = backward(grad.contiguous(), x, num_samples, sigma, noise, seed, sample_offset, keys, normalize)
        return grad_x, None, None, None, None, None, None, None

    torch.library.register_autograd(f"wsmooth_ext::{op}", _backward, setup_context=_setup_context)

    # Second order. out_k = x + s·λ·D_k (s = Σx when normalizing, else 1) is affine in x, so the backward
    # grad ↦ Σ_k grad_k + λ·Σ_k ⟨grad_k, D_k⟩ (on every pixel) is linear in grad and does not depend on x.
    # Its own backward maps gg (shaped like x) to gg + λ·D_k·Σgg for every sample k; λ·D_k is the op applied
    # to a zero image in pixel units (normalize=False), which regenerates exactly the same draws.
    def _setup_backward_context(ctx, inputs, output):
        _, x, num_samples, sigma, noise, seed, sample_offset, keys, normalize = inputs
        ctx.save_for_backward(x, keys)
        ctx.args = (num_samples, sigma, noise, seed, sample_offset, normalize)

    def _double_backward(ctx, gg):
        x, keys = ctx.saved_tensors
        num_samples, sigma, noise, seed, sample_offset, normalize = ctx.args
        grad_grad = gg.repeat_interleave(num_samples, dim=0)
        if normalize:
            unit = forward(torch.zeros_like(x), num_samples, sigma, noise, seed, sample_offset, keys, False)
            total = gg.sum(dim=(1, 2, 3), keepdim=True).repeat_interleave(num_samples, dim=0)
            grad_grad = grad_grad + unit * total
        return grad_grad, None, None, None, None, None, None, None, None

    torch.library.register_autograd(f"wsmooth_ext::{op}_backward", _double_backward,
                                    setup_context=_setup_backward_context)


if _has_op():
    for _op in OPS.values():
        _register(_op)
