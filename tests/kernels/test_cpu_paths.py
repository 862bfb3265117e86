"""The CPU kernel's paths (avx512 / avx2 / default, csrc/cpu/cpu_paths.h): the run-time choice, and that every
path this processor can run gives bit-identical output, forward and backward, and the reference's exact values
where the arithmetic is exact.

A path the processor lacks (AVX-512 on an AVX2-only machine) is compiled but skipped here, with the reason.
"""

import math
import os
import subprocess
import sys

import pytest
import torch

import wsmooth_ext
from wsmooth_ext.core import ops, reference
from wsmooth_ext.core.distributions import DISTRIBUTIONS

pytestmark = pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")

PATHS = ["avx512", "avx2", "default"]
STATUS = wsmooth_ext.kernel_info()["cpu_paths"]
RUNNABLE = [p for p in PATHS if STATUS.get(p) == "runnable"]


def require(path):
    if STATUS.get(path) != "runnable":
        pytest.skip(f"CPU path {path} is {STATUS.get(path, 'unknown')} on this machine (processor lacks it)")


@pytest.fixture
def force(monkeypatch):
    """force(path): the ops take `path` from now on (ATEN_CPU_CAPABILITY is read at every call)."""

    def set_path(path):
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", path)
        assert wsmooth_ext.kernel_info()["cpu_path"] == path

    return set_path


# --- the choice --------------------------------------------------------------------------------------------

def test_default_is_always_runnable_and_the_best_path_is_chosen(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    info = wsmooth_ext.kernel_info()
    assert info["cpu_paths"]["default"] == "runnable"
    assert info["cpu_path"] == RUNNABLE[0]
    assert info["cpu_path_requested"] == "" and info["cpu_path_note"] == ""


@pytest.mark.parametrize("path", PATHS)
def test_each_path_can_be_forced(force, path):
    require(path)
    force(path)


def test_a_request_above_the_processor_falls_back_with_a_note(monkeypatch):
    above = [p for p in PATHS if STATUS[p] != "runnable"]
    if not above:
        pytest.skip("this processor runs every path")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", above[0])
    info = wsmooth_ext.kernel_info()
    below = PATHS[PATHS.index(above[0]) + 1:]
    assert info["cpu_path"] == next(p for p in below if STATUS[p] == "runnable")
    assert info["cpu_path_requested"] == above[0]
    assert above[0] in info["cpu_path_note"] and info["cpu_path"] in info["cpu_path_note"]


@pytest.mark.parametrize("value,ignored", [("not-a-capability", True), ("sve256", False)])
def test_values_without_a_path_of_ours_keep_the_best_path(monkeypatch, value, ignored):
    """An invalid value is ignored (as PyTorch ignores it); a capability PyTorch knows for another architecture
    matches no path of ours."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", value)
    info = wsmooth_ext.kernel_info()
    assert info["cpu_path"] == RUNNABLE[0]
    assert value in info["cpu_path_note"]
    assert ("invalid" in info["cpu_path_note"]) == ignored


# --- identical output on every path --------------------------------------------------------------------------

SHAPES = [
    (1, 1, 28, 28),   # MNIST
    (2, 3, 7, 9),     # multi-channel, rows not a multiple of 8 or 16
    (1, 1, 2, 17),    # two rows
    (1, 2, 19, 2),    # two columns
    (3, 1, 2, 2),     # smallest image
    (1, 3, 32, 33),   # CIFAR-like, odd width; draws not a multiple of 64
]
CASES = [(shape, noise, pixel, dtype) for shape in SHAPES for noise in DISTRIBUTIONS
         for pixel in (False, True) for dtype in (torch.float32, torch.float64)]


def _inputs(shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=gen, dtype=dtype)
    keys = torch.tensor([3, -11, 2 ** 40][: shape[0]])
    return x, keys


def _forward_and_gradient(shape, noise, pixel, dtype, normalize=True):
    x, keys = _inputs(shape, dtype)
    x.requires_grad_(True)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    out = op(x, 7, 0.05, noise=noise, seed=2 ** 33 + 5, sample_offset=123, keys=keys, normalize=normalize)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("path", [p for p in PATHS if p != "default"])
@pytest.mark.parametrize("shape,noise,pixel,dtype", CASES)
def test_path_is_bit_identical_to_default(force, path, shape, noise, pixel, dtype):
    require(path)
    force("default")
    expected = _forward_and_gradient(shape, noise, pixel, dtype)
    force(path)
    got = _forward_and_gradient(shape, noise, pixel, dtype)
    assert torch.equal(got[0], expected[0]), "forward differs"
    assert torch.equal(got[1], expected[1]), "gradient differs"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pixel", [False, True])
def test_exact_arithmetic_equals_the_reference_bit_for_bit(force, path, shape, pixel):
    """float64 uniform noise with a power-of-two scale on pixels of a 2^-8 grid: every operation of the kernel
    and of the reference is exact, so the Philox words, their layout and the stencil must agree to the bit."""
    require(path)
    force(path)
    sigma = 2.0 ** -4 / math.sqrt(3.0)  # uniform half-width sqrt(3)*sigma = 2^-4 exactly in double
    assert sigma * math.sqrt(3.0) == 2.0 ** -4
    gen = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, shape, generator=gen).double() / 256
    keys = torch.tensor([9, 2 ** 35, -4][: shape[0]])
    kwargs = dict(noise="uniform", seed=12345, sample_offset=2 ** 31, keys=keys, normalize=False)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    ref = reference.pixel_noise_reference if pixel else reference.flow_noise_reference
    assert torch.equal(op(x, 5, sigma, **kwargs), ref(x, 5, sigma, **kwargs))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_laplace_matches_the_reference_on_every_path(force, path, dtype):
    """The log differs from torch.log by an ulp, so values agree to rounding (forward and gradient)."""
    require(path)
    force(path)
    x, keys = _inputs((2, 3, 7, 9), dtype)
    x.requires_grad_(True)
    kwargs = dict(seed=77, sample_offset=3, keys=keys)
    out = wsmooth_ext.flow_noise(x, 6, 0.05, **kwargs)
    ref = reference.flow_noise_reference(x, 6, 0.05, **kwargs)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    grads = [torch.autograd.grad((y * weights).sum(), x, retain_graph=True)[0] for y in (out, ref)]
    torch.testing.assert_close(grads[0], grads[1], **tol)


@pytest.mark.parametrize("shape", [(1, 1, 1, 5), (1, 1, 5, 1)])
def test_one_pixel_wide_or_tall_images_are_refused_on_every_path(force, shape):
    for path in RUNNABLE:
        force(path)
        with pytest.raises(ValueError, match="H >= 2 and W >= 2"):
            wsmooth_ext.flow_noise(torch.rand(shape), 3, 0.1)


def test_threads_and_chunks_do_not_change_the_output():
    """Rows are handed out in chunks to whichever thread is free: the result is the same on 1 and 2 threads."""
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = wsmooth_ext.flow_noise(x, 700, 0.02, seed=1)
        torch.set_num_threads(2)
        two = wsmooth_ext.flow_noise(x, 700, 0.02, seed=1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


_CHILD = """
import sys, torch, wsmooth_ext
x = torch.rand(2, 3, 9, 13, generator=torch.Generator().manual_seed(5))
out = wsmooth_ext.flow_noise(x, 20, 0.05, seed=9)
torch.save({"path": wsmooth_ext.kernel_info()["cpu_path"], "out": out}, sys.argv[1])
"""


def test_the_variable_set_before_start_up_selects_the_path(tmp_path):
    """As a user sets it: in the environment of a fresh process (one per runnable path), same samples."""
    results = {}
    for path in RUNNABLE:
        env = {**os.environ, "ATEN_CPU_CAPABILITY": path}
        target = tmp_path / f"{path}.pt"
        subprocess.run([sys.executable, "-c", _CHILD, str(target)], env=env, check=True, timeout=300)
        results[path] = torch.load(target, weights_only=True)
        assert results[path]["path"] == path
    for path in RUNNABLE:
        assert torch.equal(results[path]["out"], results["default"]["out"])


# --- the generator-floor timer of the benchmarks --------------------------------------------------------------

def test_generator_timer_runs_and_checks_its_arguments():
    assert ops._C.time_cpu_generator("default", False, 0, 1512, 3) > 0
    for args, match in [(("nope", False, 0, 10, 1), "unknown path"), (("default", False, 5, 10, 1), "noise"),
                        (("default", True, 0, 0, 1), "draws")]:
        with pytest.raises(ValueError, match=match):
            ops._C.time_cpu_generator(*args)
    for path in PATHS:
        if STATUS[path] != "runnable":
            with pytest.raises(ValueError, match="cannot run here"):
                ops._C.time_cpu_generator(path, False, 0, 10, 1)
