"""Fused flow-noise op vs the paper's pure-tensor procedure (wsmooth_ext.core.reference, rng="torch").

Run: python -m pytest benchmarks/bench_flow_noise.py --benchmark-only
Each case checks correctness first (the op against the Philox reference on a slice), then times both.
CPU cases name the kernel's CPU path in use (avx512 / avx2 / default: wsmooth_ext.kernel_info(); set
ATEN_CPU_CAPABILITY to bound it, or run bench_cpu_paths.py for every path in one run).
"""

import pytest
import torch

import wsmooth_ext
from wsmooth_ext.core import reference

from bench_common import DEVICES, sync

SIGMA = 0.01
CASES = [  # (name, shape, samples per image)
    ("mnist 1x1x28x28 x 1e4", (1, 1, 28, 28), 10_000),
    ("cifar 1x3x32x32 x 1e4", (1, 3, 32, 32), 10_000),
    ("mnist batch 100x1x28x28 x 100", (100, 1, 28, 28), 100),
]
GPU_ONLY = [("cifar 1x3x32x32 x 1e5", (1, 3, 32, 32), 100_000)]


def _label(device: str) -> str:
    """'cpu/avx2' etc. for the CPU (the path the op takes now), the device type otherwise."""
    return f"cpu/{wsmooth_ext.kernel_info()['cpu_path']}" if device == "cpu" else device


def _check_correct(x, n):
    sub = x[:2]
    ours = wsmooth_ext.flow_noise(sub, min(n, 16), SIGMA, seed=1)
    ref = reference.flow_noise_reference(sub.double(), min(n, 16), SIGMA, seed=1).to(x.dtype)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def _params():
    for device in DEVICES:
        for name, shape, n in CASES + (GPU_ONLY if device == "cuda" else []):
            yield pytest.param(device, name, shape, n, id=f"{device}-{name}")


@pytest.mark.parametrize("device,name,shape,n", list(_params()))
@pytest.mark.parametrize("impl", ["reference", "ours"])
def test_forward(record, impl, device, name, shape, n):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
    _check_correct(x, n)
    if impl == "ours":
        fn = lambda: (wsmooth_ext.flow_noise(x, n, SIGMA, seed=0), sync(device))  # noqa: E731
    else:
        fn = lambda: (reference.flow_noise_reference(x, n, SIGMA, rng="torch"), sync(device))  # noqa: E731
    record(f"forward {_label(device)} {name}", impl, fn, bytes_written=x.numel() * n * x.element_size())


@pytest.mark.parametrize("device,name,shape,n", list(_params()))
@pytest.mark.parametrize("impl", ["reference", "ours"])
def test_backward(record, impl, device, name, shape, n):
    if device == "cuda" and n >= 100_000:
        pytest.skip("forward-only case")
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
    weights = torch.randn((shape[0] * n,) + shape[1:], generator=torch.Generator().manual_seed(1)).to(device)
    op = (lambda t: wsmooth_ext.flow_noise(t, n, SIGMA, seed=0)) if impl == "ours" else (
        lambda t: reference.flow_noise_reference(t, n, SIGMA, rng="torch"))

    def step():
        (grad,) = torch.autograd.grad((op(x) * weights).sum(), x)
        sync(device)
        return grad

    record(f"forward+backward {_label(device)} {name}", impl, step)
