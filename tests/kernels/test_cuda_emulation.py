"""The CUDA kernels, run on the CPU through csrc/cuda_emulation, against the reference and the CPU kernel.

The exact source of csrc/cuda/flow_noise_kernels.cuh and the host side of csrc/cuda/flow_noise_launch.h (launch
plans included) is compiled by the host compiler against cuda_emulation.h, which runs every block with one OS
thread per CUDA thread, std::barrier for __syncthreads and poisoned (NaN) shared memory. The build is a small
extension made here with torch.utils.cpp_extension.load (ninja, cached under build/cuda_emulation); it needs
no nvcc and no GPU, so these tests run on every machine.

Tolerances. The emulation's arithmetic is the host compiler's, built with -ffp-contract=off: IEEE operations
one at a time, no fused multiply-adds, no fast-math intrinsics. A GPU build (--use_fast_math, FMA contraction)
rounds differently in the last bits, so the emulation checks indexing, tiling, synchronization and the random
stream, not a GPU's last bits. Against the reference (torch.log instead of the kernels' polynomial log, flows
scaled before instead of after the stencil, x/s·s instead of x + s·λ·div) and the CPU kernel (another
summation order; FMA in its AVX2/AVX-512 clones) values agree to rounding: 1e-5 (relative and absolute) in
float32, where the outputs are O(1) and the log polynomial is within ~1 ulp, and 1e-12 in float64. Where the
arithmetic is the same operation for operation — uniform noise (no logarithm) on an all-zero image in pixel
units with λ = 1/4 (scaling by a power of two is exact, so scaling flows first or last gives the same bits) —
the outputs must be bit-identical.
"""

import math
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

import wsmooth_ext
from wsmooth_ext.core import distributions, ops, reference

ROOT = Path(__file__).resolve().parents[2]
EMULATION_DIR = ROOT / "csrc" / "cuda_emulation"
KERNELS_HEADER = ROOT / "csrc" / "cuda" / "flow_noise_kernels.cuh"
BUILD_DIR = ROOT / "build" / "cuda_emulation"  # build/ is git-ignored; ninja rebuilds what changed
CFLAGS = ["-O2", "-std=c++20", "-ffp-contract=off"]

SEED = 2 ** 40 + 3


def _build(name: str, sources: list[Path]) -> None:
    """Compile and load an extension; its static TORCH_LIBRARY registrations run on load."""
    build_dir = BUILD_DIR / name
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(name, [str(s) for s in sources], extra_cflags=CFLAGS, build_directory=str(build_dir),
                       is_python_module=False, verbose=False)


@pytest.fixture(scope="session")
def emulated():
    """torch.ops.wsmooth_emulated: the CUDA ops compiled for CPU tensors through the emulation."""
    _build("wsmooth_emulated", [EMULATION_DIR / "flow_noise_emulated.cpp"])
    return torch.ops.wsmooth_emulated


def tol(expected):
    """Relative to the largest magnitude: an output pixel near 0 can be the sum of large flows that cancel."""
    r = 1e-5 if expected.dtype == torch.float32 else 1e-12
    return dict(rtol=r, atol=r * max(1.0, float(expected.abs().max())))


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, **tol(expected))


def run(op_lib, x, n, sigma, *, noise="laplace", seed=SEED, sample_offset=0, keys=None, normalize=True,
        pixel=False):
    keys = torch.arange(x.shape[0]) if keys is None else keys
    op = op_lib.pixel_noise if pixel else op_lib.flow_noise
    return op(x, n, sigma, distributions.get(noise).code, seed, sample_offset, keys, normalize)


def run_reference(x, n, sigma, *, pixel=False, seed=SEED, **kwargs):
    """The reference with run()'s defaults."""
    impl = reference.pixel_noise_reference if pixel else reference.flow_noise_reference
    return impl(x, n, sigma, rng="philox", seed=seed, **kwargs)


# --- forward: emulated CUDA vs reference and CPU kernel -----------------------------------------------------

# flow kernel tiles of (1024 // W) rows: (2, 2) one band; (7, 9) odd width; (45, 32) two bands, width a multiple
# of 4; (61, 50) four bands, the last one row high.
SHAPES = [(1, 1, 2, 2), (2, 3, 7, 9), (1, 3, 45, 32), (2, 1, 61, 50)]
KINDS = [(pixel, noise, dtype) for pixel in (False, True) for noise in distributions.DISTRIBUTIONS
         for dtype in (torch.float32, torch.float64)]


@pytest.mark.parametrize("pixel,noise,dtype", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_emulated_matches_reference_and_cpu_kernel(emulated, pixel, noise, dtype, shape):
    x = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    keys = torch.tensor([5, -7][: shape[0]])
    kwargs = dict(noise=noise, seed=SEED, sample_offset=11, keys=keys)
    out = run(emulated, x, 3, 0.05, pixel=pixel, **kwargs)
    assert_close(out, run_reference(x, 3, 0.05, pixel=pixel, **kwargs))
    if ops.has_kernel("cpu"):
        assert_close(out, run(torch.ops.wsmooth_ext, x, 3, 0.05, pixel=pixel, **kwargs))


@pytest.mark.parametrize("pixel", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_sample_offset_at_its_limit(emulated, pixel, dtype):
    """The last samples of the 32-bit sample counter: sample_offset + num_samples = 2**32."""
    x = torch.rand(2, 2, 5, 6, dtype=dtype, generator=torch.Generator().manual_seed(1))
    kwargs = dict(noise="laplace", seed=7, sample_offset=2 ** 32 - 3, keys=torch.tensor([2 ** 35, 3]))
    out = run(emulated, x, 3, 0.1, pixel=pixel, **kwargs)
    assert_close(out, run_reference(x, 3, 0.1, pixel=pixel, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [1025, 5000])
def test_emulated_wide_images_tile_columns(emulated, dtype, width):
    """Wider than one tile (1024 columns): tiles of balanced columns, shared memory under 48 KiB."""
    x = torch.rand(1, 2 if width < 2000 else 1, 3, width, dtype=dtype, generator=torch.Generator().manual_seed(2))
    kwargs = dict(noise="uniform", seed=3, sample_offset=1, keys=torch.tensor([9]))
    out = run(emulated, x, 2, 0.05, **kwargs)
    assert_close(out, run_reference(x, 2, 0.05, **kwargs))


def _exact_quarter_sigma() -> float:
    """The sigma whose uniform half-width sigma·√3 is exactly 1/4 in float64 (as C++ and Python compute it)."""
    sigma = 0.25 / math.sqrt(3.0)
    for step in range(-4, 5):
        candidate = sigma + step * math.ulp(sigma)
        if candidate * math.sqrt(3.0) == 0.25:
            return candidate
    raise AssertionError("no sigma with sigma * sqrt(3) == 0.25")


@pytest.mark.parametrize("pixel", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_bit_exact_where_arithmetic_is_identical(emulated, pixel, dtype):
    x = torch.zeros(2, 3, 9, 13, dtype=dtype)
    kwargs = dict(noise="uniform", seed=5, sample_offset=4, keys=torch.tensor([1, 2 ** 33]), normalize=False)
    sigma = _exact_quarter_sigma()
    out = run(emulated, x, 4, sigma, pixel=pixel, **kwargs)
    expected = run_reference(x, 4, sigma, pixel=pixel, **kwargs)
    assert out.abs().max() > 0
    assert torch.equal(out, expected)


# --- backward: the dot kernel ------------------------------------------------------------------------------

@pytest.mark.parametrize("pixel", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_backward_matches_reference_autograd(emulated, pixel, dtype):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 9, 8, dtype=dtype, generator=gen)
    weights = torch.randn(2 * 5, 3, 9, 8, dtype=dtype, generator=gen)
    keys = torch.tensor([4, 11])
    kwargs = dict(noise="laplace", seed=3, sample_offset=6, keys=keys)
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((run_reference(xr, 5, 0.2, pixel=pixel, **kwargs) * weights).sum(), xr)
    args = (weights, x, 5, 0.2, 0, 3, 6, keys, True)
    name = "pixel_noise_backward" if pixel else "flow_noise_backward"
    grad = getattr(emulated, name)(*args)
    loose = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected, **loose)
    if ops.has_kernel("cpu"):
        torch.testing.assert_close(grad, getattr(torch.ops.wsmooth_ext, name)(*args), **loose)


# --- the serial schedule: threads take turns between barriers ----------------------------------------------

def test_emulated_kernels_pass_in_the_serial_schedule(emulated, monkeypatch):
    monkeypatch.setenv("CUDA_EMULATION_SCHEDULE", "serial")
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert_close(run(emulated, x, 3, 0.05), run_reference(x, 3, 0.05))
    weights = torch.randn(6, 3, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((run_reference(xr, 3, 0.05, seed=SEED) * weights).sum(), xr)
    grad = emulated.flow_noise_backward(weights, x, 3, 0.05, 0, SEED, 0, torch.arange(2), True)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)


def test_emulated_ops_have_the_cuda_ops_schemas(emulated):
    if not ops.has_kernel("cpu"):
        pytest.skip("wsmooth_ext's compiled library (which defines the schemas) is not built")
    for name in ("flow_noise", "flow_noise_backward", "pixel_noise", "pixel_noise_backward"):
        ours = str(getattr(emulated, name).default._schema).replace("wsmooth_emulated::", "")
        theirs = str(getattr(torch.ops.wsmooth_ext, name).default._schema).replace("wsmooth_ext::", "")
        assert ours == theirs


# --- the tests can fail: deliberately broken copies of the kernels -----------------------------------------

# name -> (text in flow_noise_kernels.cuh, its replacement). Each text must occur exactly once.
MUTATIONS = {
    # the outflow below is added instead of subtracted
    "flipped_sign": ("    if (i < H - 1) acc -= sv[(li + 1) * t.tile_cols + lj];",
                     "    if (i < H - 1) acc += sv[(li + 1) * t.tile_cols + lj];"),
    # the flow kernel reads the shared draws without waiting for the threads that write them
    "no_sync": ("  fill_rows(s, kind, chan_base + nv, W - 1, r0, r0 + rows_here, h0, h_hi, sh, t.sh_stride);\n"
                "  __syncthreads();\n",
                "  fill_rows(s, kind, chan_base + nv, W - 1, r0, r0 + rows_here, h0, h_hi, sh, t.sh_stride);\n"),
    # one thread of the backward's reduction leaves before the barriers the others wait at
    "early_return": ("  dot_partial[threadIdx.x] = acc;\n",
                     "  if (threadIdx.x == 7) return;\n  dot_partial[threadIdx.x] = acc;\n"),
    # thread 7 waits at another __syncthreads than the rest of its block (undefined behaviour on a GPU)
    "divergent_barrier": ("  dot_partial[threadIdx.x] = acc;\n  __syncthreads();\n",
                          "  dot_partial[threadIdx.x] = acc;\n"
                          "  if (threadIdx.x == 7) __syncthreads(); else __syncthreads();\n"),
    # the launch plan asks for one row of horizontal edges less shared memory than the kernel uses
    "short_smem": ("(t.band_rows + 1) * t.tile_cols + t.band_rows * t.sh_stride)",
                   "(t.band_rows + 1) * t.tile_cols + (t.band_rows - 1) * t.sh_stride)"),
}


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # an unchanged file keeps its mtime: no rebuild
        path.write_text(text)


@pytest.fixture(scope="session")
def mutants():
    """{name: torch.ops.wsmooth_mutant_<name>}: the emulated build with one mutation each, in one extension."""
    src_dir = BUILD_DIR / "mutant_sources"
    src_dir.mkdir(parents=True, exist_ok=True)
    original = KERNELS_HEADER.read_text()
    include = '#include "../distributions.h"'
    assert original.count(include) == 1
    sources = []
    for name, (old, new) in MUTATIONS.items():
        assert original.count(old) == 1, f"mutation {name}: its target text is not in the kernels header once"
        header = src_dir / f"kernels_{name}.cuh"
        text = original.replace(old, new).replace(include, f'#include "{ROOT / "csrc" / "distributions.h"}"')
        _write_if_changed(header, text)
        source = src_dir / f"emulated_{name}.cpp"
        _write_if_changed(source, f'#define WS_KERNELS_HEADER "{header}"\n'
                                  f"#define WS_EMULATED_LIBRARY wsmooth_mutant_{name}\n"
                                  f'#include "{EMULATION_DIR / "flow_noise_emulated.cpp"}"\n')
        sources.append(source)
    _build("wsmooth_emulated_mutants", sources)
    return {name: getattr(torch.ops, f"wsmooth_mutant_{name}") for name in MUTATIONS}


def test_flipped_sign_is_caught(mutants):
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    out = run(mutants["flipped_sign"], x, 3, 0.05)
    assert torch.isfinite(out).all()  # wrong values, not poison
    with pytest.raises(AssertionError):
        assert_close(out, run_reference(x, 3, 0.05))


def test_missing_syncthreads_reads_poison(mutants, monkeypatch):
    monkeypatch.setenv("CUDA_EMULATION_SCHEDULE", "serial")  # deterministic: thread 0 reads before others write
    x = torch.rand(2, 3, 7, 9, dtype=torch.float32, generator=torch.Generator().manual_seed(8))
    out = run(mutants["no_sync"], x, 3, 0.05)
    assert torch.isnan(out).any()  # the poison of unwritten shared memory reached the output
    with pytest.raises(AssertionError):
        assert_close(out, run_reference(x, 3, 0.05))


def test_early_return_while_others_wait_is_reported(mutants):
    x = torch.rand(1, 1, 4, 5, dtype=torch.float64)
    grad = torch.ones(2, 1, 4, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"1 thread\(s\) returned from the kernel while 255 wait at __syncthreads"):
        mutants["early_return"].flow_noise_backward(grad, x, 2, 0.1, 0, 0, 0, torch.tensor([0]), True)
    # the same emulated build without the early return is fine
    forward = run(mutants["early_return"], x, 2, 0.1)
    assert_close(forward, run_reference(x, 2, 0.1))


def test_divergent_barriers_are_reported(mutants):
    x = torch.rand(1, 1, 4, 5, dtype=torch.float64)
    grad = torch.ones(2, 1, 4, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="threads of one block wait at different __syncthreads calls"):
        mutants["divergent_barrier"].flow_noise_backward(grad, x, 2, 0.1, 0, 0, 0, torch.tensor([0]), True)


def test_shared_memory_overrun_is_reported(mutants):
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="past the .* bytes launched"):
        run(mutants["short_smem"], x, 1, 0.1)


def test_emulation_builds_with_the_public_op(emulated):
    """The public op and the emulated CUDA build agree (the public op runs the CPU kernel or the reference)."""
    x = torch.rand(1, 2, 6, 7, generator=torch.Generator().manual_seed(9))
    assert_close(run(emulated, x, 4, 0.05, seed=2), wsmooth_ext.flow_noise(x, 4, 0.05, seed=2))
