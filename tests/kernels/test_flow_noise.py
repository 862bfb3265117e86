"""Tests of the fused noise ops against independent computations (docs/math.md–2).

Statistical tests use fixed seeds; each states its false-failure rate, i.e. the probability over seeds that a
correct implementation fails it (normal approximation of the estimator).
"""

import math
import warnings

import pytest
import torch

import wsmooth_ext
from wsmooth_ext.core import ops, reference
from wsmooth_ext.core.distributions import DISTRIBUTIONS

CUDA = torch.cuda.is_available() and ops.has_kernel("cuda")


def divergence_loop(flow_v, flow_h):
    """Paper Eq. 5, one pixel at a time: Δ(x, δ)[i,j] − x[i,j]."""
    h, w = flow_h.shape[-2], flow_v.shape[-1]
    out = torch.zeros(flow_v.shape[:-2] + (h, w), dtype=flow_v.dtype)
    for i in range(h):
        for j in range(w):
            total = 0.0
            if i > 0:
                total = total + flow_v[..., i - 1, j]
            if i < h - 1:
                total = total - flow_v[..., i, j]
            if j > 0:
                total = total + flow_h[..., i, j - 1]
            if j < w - 1:
                total = total - flow_h[..., i, j]
            out[..., i, j] = total
    return out


# --- the stencil --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(2, 2), (3, 5), (6, 4)])
def test_divergence_matches_eq5_loop(h, w):
    g = torch.Generator().manual_seed(0)
    fv = torch.randn(2, 3, h - 1, w, generator=g, dtype=torch.float64)
    fh = torch.randn(2, 3, h, w - 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(wsmooth_ext.divergence(fv, fh), divergence_loop(fv, fh))


def test_divergence_adjoint_identity():
    g = torch.Generator().manual_seed(1)
    fv, fh = torch.randn(4, 7, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    y = torch.randn(5, 7, generator=g, dtype=torch.float64)
    av, ah = wsmooth_ext.divergence_adjoint(y)
    lhs = (wsmooth_ext.divergence(fv, fh) * y).sum()
    torch.testing.assert_close(lhs, (fv * av).sum() + (fh * ah).sum())


def test_divergence_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="flow_v"):
        wsmooth_ext.divergence(torch.zeros(3, 4), torch.zeros(3, 3))


def test_divergence_moves_mass_down_and_right():
    fv = torch.zeros(1, 2)
    fv[0, 1] = 0.25  # from pixel (0,1) to (1,1)
    fh = torch.zeros(2, 1)
    fh[1, 0] = 0.5  # from pixel (1,0) to (1,1)
    expected = torch.tensor([[0.0, -0.25], [-0.5, 0.75]])
    torch.testing.assert_close(wsmooth_ext.divergence(fv, fh), expected)


# --- the random stream --------------------------------------------------------------------------------------

def test_reference_philox_known_answers():
    """Random123's known-answer vectors for Philox4x32-10."""
    cases = [
        ([0, 0, 0, 0], (0, 0), [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, (0xFFFFFFFF, 0xFFFFFFFF), [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], (0xA4093822, 0x299F31D0),
         [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    ]
    for counter, key, expected in cases:
        assert reference.philox4x32_10(torch.tensor(counter), key).tolist() == expected


def test_words_to_noise_extremes_are_finite_and_bounded():
    words = torch.tensor([0, 1, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFF])
    for dtype in (torch.float32, torch.float64):
        lap = reference.words_to_noise(words, "laplace", 1.0, dtype)
        assert torch.isfinite(lap).all()
        assert lap.abs().max() <= 31 * math.log(2) + 1e-5
        uni = reference.words_to_noise(words, "uniform", 1.0, dtype)
        assert uni.abs().max() <= 1.0


KERNEL_CASES = [(pixel, noise, dtype) for pixel in (False, True) for noise in DISTRIBUTIONS
                for dtype in (torch.float32, torch.float64)]


@pytest.mark.parametrize("pixel,noise,dtype", KERNEL_CASES)
@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 2, 7, 9), (2, 3, 11, 5)])
def test_kernel_matches_reference(pixel, noise, dtype, shape):
    x = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    keys = torch.tensor([5, -7, 2 ** 35][: shape[0]])
    kwargs = dict(noise=noise, seed=2 ** 40 + 3, sample_offset=11, keys=keys)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    ref = reference.pixel_noise_reference if pixel else reference.flow_noise_reference
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op(x, 5, 0.05, **kwargs), ref(x, 5, 0.05, **kwargs), **tol)


def test_normalize_false_uses_pixel_units():
    x = torch.rand(2, 1, 4, 5, dtype=torch.float64) * 3
    a = wsmooth_ext.flow_noise(x, 3, 0.2, seed=4, normalize=False)
    b = reference.flow_noise_reference(x, 3, 0.2, seed=4, normalize=False)
    torch.testing.assert_close(a, b)
    unit = wsmooth_ext.flow_noise(x, 3, 0.2, seed=4, normalize=True) - x.repeat_interleave(3, 0)
    mass = x.sum(dim=(1, 2, 3)).repeat_interleave(3).view(-1, 1, 1, 1)
    torch.testing.assert_close(unit / mass, a - x.repeat_interleave(3, 0))


def test_seed_determinism():
    x = torch.rand(2, 1, 6, 6)
    a = wsmooth_ext.flow_noise(x, 4, 0.1, seed=7)
    assert torch.equal(a, wsmooth_ext.flow_noise(x, 4, 0.1, seed=7))
    b = wsmooth_ext.flow_noise(x, 4, 0.1, seed=8)
    assert not torch.equal(a, b)
    # different seeds must not share any sample
    assert (a - b).abs().flatten(1).amax(1).min() > 0


def test_chunk_invariance():
    x = torch.rand(2, 3, 5, 6)
    whole = wsmooth_ext.flow_noise(x, 10, 0.1, seed=3).view(2, 10, 3, 5, 6)
    first = wsmooth_ext.flow_noise(x, 4, 0.1, seed=3, sample_offset=0).view(2, 4, 3, 5, 6)
    rest = wsmooth_ext.flow_noise(x, 6, 0.1, seed=3, sample_offset=4).view(2, 6, 3, 5, 6)
    assert torch.equal(whole, torch.cat((first, rest), dim=1))


def test_key_invariance():
    x = torch.rand(3, 1, 5, 5)
    keys = torch.tensor([10, 20, 30])
    batch = wsmooth_ext.flow_noise(x, 4, 0.1, seed=1, keys=keys).view(3, 4, 1, 5, 5)
    alone = wsmooth_ext.flow_noise(x[1:2], 4, 0.1, seed=1, keys=torch.tensor([20])).view(1, 4, 1, 5, 5)
    assert torch.equal(batch[1], alone[0])
    default_keys = wsmooth_ext.flow_noise(x, 4, 0.1, seed=1).view(3, 4, 1, 5, 5)
    shifted = wsmooth_ext.flow_noise(x[1:], 4, 0.1, seed=1, keys=torch.tensor([1, 2])).view(2, 4, 1, 5, 5)
    assert torch.equal(default_keys[1:], shifted)


def test_all_outputs_finite_over_ten_million_draws():
    x = torch.rand(1, 1, 28, 28)
    draws = 2 * 27 * 28
    n = -(-10 ** 7 // draws)
    out = wsmooth_ext.flow_noise(x, n, 0.01, seed=12345)
    assert n * draws >= 10 ** 7
    assert torch.isfinite(out).all()


def test_massless_image_is_unchanged():
    x = torch.zeros(1, 2, 3, 3)
    assert torch.equal(wsmooth_ext.flow_noise(x, 3, 0.1), torch.zeros(3, 2, 3, 3))


# --- the distribution ----------------------------------------------------------------------------------------

def _close(estimates, expected, se, z=6.0):
    """|estimate − expected| ≤ z·SE; z = 6 gives a two-sided false-failure rate ≈ 2e-9 per comparison."""
    assert torch.all((estimates - expected).abs() <= z * se), (estimates, expected, se)


def test_mass_is_conserved_per_channel():
    x = torch.rand(3, 2, 9, 7, dtype=torch.float64)
    out = wsmooth_ext.flow_noise(x, 50, 0.5, seed=2).view(3, 50, 2, 9, 7)
    torch.testing.assert_close(out.sum(dim=(3, 4)), x.sum(dim=(2, 3)).unsqueeze(1).expand(3, 50, 2),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("noise", ["laplace", "uniform"])
def test_pixel_variances_and_edge_covariance(noise):
    """Var = k·σ²s² for a pixel with k neighbours (2 corner, 3 edge, 4 interior); Cov = −σ²s² across an edge."""
    sigma, n = 0.05, 200_000
    x = torch.rand(1, 1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = x.sum().item()
    d = (wsmooth_ext.flow_noise(x, n, sigma, noise=noise, seed=99) - x)[:, 0] / (sigma * s)  # unit σs
    expected_var = torch.tensor([[2, 3, 3, 3, 2], [3, 4, 4, 4, 3], [3, 4, 4, 4, 3], [2, 3, 3, 3, 2]],
                                dtype=torch.float64)
    sq = d ** 2
    _close(sq.mean(0), expected_var, sq.std(0) / math.sqrt(n))
    for (a, b) in [((1, 1), (1, 2)), ((1, 1), (2, 1)), ((0, 0), (0, 1)), ((3, 4), (2, 4))]:
        prod = d[:, a[0], a[1]] * d[:, b[0], b[1]]
        _close(prod.mean(), torch.tensor(-1.0, dtype=torch.float64), prod.std() / math.sqrt(n))
    far = d[:, 0, 0] * d[:, 2, 2]  # no shared edge: uncorrelated
    _close(far.mean(), torch.tensor(0.0, dtype=torch.float64), far.std() / math.sqrt(n))


@pytest.mark.parametrize("noise,expected", [("laplace", 0.75), ("uniform", -0.3)])
def test_interior_pixel_excess_kurtosis(noise, expected):
    """An interior pixel sums 4 i.i.d. edge draws: excess kurtosis 3/4 (Laplace) or −1.2/4 (uniform).

    The standard error is estimated from 50 independent batches; z = 6 (false-failure rate ≈ 2e-9).
    """
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    d = (wsmooth_ext.flow_noise(x, 1_000_000, 0.1, noise=noise, seed=5) - x)[:, 0, 1, 1].view(50, -1)
    centred = d - d.mean(1, keepdim=True)
    kurt = (centred ** 4).mean(1) / (centred ** 2).mean(1) ** 2 - 3.0
    _close(kurt.mean(), torch.tensor(expected, dtype=torch.float64), kurt.std() / math.sqrt(50))


@pytest.mark.parametrize("noise,expected_kurt", [("laplace", 3.0), ("uniform", -1.2)])
def test_pixel_noise_distribution(noise, expected_kurt):
    """The baseline: i.i.d. noise of standard deviation σ·s on every pixel (z = 6, false-failure ≈ 2e-9)."""
    sigma = 0.1
    x = torch.rand(1, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    s = x.sum().item()
    d = ((wsmooth_ext.pixel_noise(x, 400_000, sigma, noise=noise, seed=6) - x) / (sigma * s)).flatten(1)
    sq = d ** 2
    _close(sq.mean(0), torch.ones(18, dtype=torch.float64), sq.std(0) / math.sqrt(d.shape[0]))
    prod = d[:, 0] * d[:, 1]
    _close(prod.mean(), torch.tensor(0.0, dtype=torch.float64), prod.std() / math.sqrt(d.shape[0]))
    batches = d[:, 4].view(40, -1)
    c = batches - batches.mean(1, keepdim=True)
    kurt = (c ** 4).mean(1) / (c ** 2).mean(1) ** 2 - 3.0
    _close(kurt.mean(), torch.tensor(expected_kurt, dtype=torch.float64), kurt.std() / math.sqrt(40))


def test_laplace_edge_flow_law_ks():
    """The law of the flows themselves: in a 2×2 image the bottom row gains v[0,0] + v[0,1] (horizontal flows
    stay within the row), a sum of two i.i.d. Laplace(λ = σ/√2) with a closed-form CDF. KS test at α = 1e-6
    (the false-failure rate)."""
    import numpy as np
    from scipy import stats

    sigma = 0.3
    lam = sigma / math.sqrt(2)
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64) / 4  # mass 1: normalized and pixel units agree
    out = wsmooth_ext.flow_noise(x, 100_000, sigma, seed=8)
    bottom_gain = (out[:, 0, 1, :].sum(1) - 0.5).numpy()

    def cdf(t):  # density (1 + |t|/λ) e^{−|t|/λ} / (4λ); upper tail ½ e^{−a} (1 + a/2) with a = |t|/λ
        a = np.abs(t) / lam
        tail = 0.5 * np.exp(-a) * (1 + a / 2)
        return np.where(t >= 0, 1 - tail, tail)

    assert stats.kstest(bottom_gain, cdf).pvalue > 1e-6


# --- autograd, dispatcher, compile ---------------------------------------------------------------------------

@pytest.mark.parametrize("pixel", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck_float64(pixel, normalize):
    x = torch.rand(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    assert torch.autograd.gradcheck(lambda t: op(t, 3, 0.3, seed=1, normalize=normalize), (x,))


@pytest.mark.parametrize("pixel", [False, True])
def test_gradient_matches_reference_autograd(pixel):
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2 * 6, 3, 5, 4, dtype=torch.float64)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    ref = reference.pixel_noise_reference if pixel else reference.flow_noise_reference
    (g_op,) = torch.autograd.grad((op(x, 6, 0.2, seed=3) * weights).sum(), x)
    (g_ref,) = torch.autograd.grad((ref(x, 6, 0.2, seed=3) * weights).sum(), x)
    torch.testing.assert_close(g_op, g_ref)


@pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["flow_noise", "pixel_noise"])
def test_opcheck(dtype, name):
    x = torch.rand(2, 1, 4, 5, dtype=dtype, requires_grad=True)
    keys = torch.tensor([0, 1])
    grad = torch.rand(6, 1, 4, 5, dtype=dtype)
    with torch.random.fork_rng(devices=[]):  # opcheck seeds torch's global RNG itself
        for normalize in (True, False):
            torch.library.opcheck(getattr(torch.ops.wsmooth_ext, name).default, (x, 3, 0.1, 0, 5, 0, keys, normalize))
            torch.library.opcheck(getattr(torch.ops.wsmooth_ext, f"{name}_backward").default,
                                  (grad, x.detach(), 3, 0.1, 1, 5, 0, keys, normalize))


@pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")
def test_each_graph_has_its_own_op():
    # flow_noise and pixel_noise are separate ops (no graph flag), each with a backward, for CPU and CUDA
    for name in ("flow_noise", "flow_noise_backward", "pixel_noise", "pixel_noise_backward"):
        schema = getattr(torch.ops.wsmooth_ext, name).default._schema
        assert [a.name for a in schema.arguments][-8:] == ["x", "num_samples", "sigma", "noise", "seed",
                                                           "sample_offset", "keys", "normalize"], name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"wsmooth_ext::{name}", "CPU")
    x = torch.rand(2, 1, 4, 5)
    keys = torch.tensor([0, 1])
    torch.testing.assert_close(torch.ops.wsmooth_ext.pixel_noise(x, 3, 0.1, 0, 5, 0, keys, True),
                               reference.pixel_noise_reference(x, 3, 0.1, seed=5, keys=keys))
    torch.testing.assert_close(torch.ops.wsmooth_ext.flow_noise(x, 3, 0.1, 0, 5, 0, keys, True),
                               reference.flow_noise_reference(x, 3, 0.1, seed=5, keys=keys))


@pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")
@pytest.mark.parametrize("op", [wsmooth_ext.flow_noise, wsmooth_ext.pixel_noise])
def test_works_under_torch_compile(op):
    x = torch.rand(2, 1, 6, 6)

    def smoothed_mean(t):
        return op(t, 8, 0.1, seed=2).view(2, 8, -1).mean(1)

    compiled = torch.compile(smoothed_mean, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), smoothed_mean(x))
    # and the gradient, through the registered autograd and the backward's fake kernel
    xc, xe = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    compiled(xc).sum().backward()
    smoothed_mean(xe).sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad)


def test_fallback_to_reference_warns_once(monkeypatch):
    x = torch.rand(2, 1, 5, 5)
    expected = reference.flow_noise_reference(x, 3, 0.1, seed=4)
    monkeypatch.setattr(ops, "has_kernel", lambda device: False)
    monkeypatch.setattr(ops, "_warned_devices", set())
    with pytest.warns(RuntimeWarning, match="no compiled flow_noise kernel"):
        out = wsmooth_ext.flow_noise(x, 3, 0.1, seed=4)
    torch.testing.assert_close(out, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wsmooth_ext.flow_noise(x, 3, 0.1, seed=4)


# --- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", [wsmooth_ext.flow_noise, wsmooth_ext.pixel_noise])
@pytest.mark.parametrize("kwargs,match", [
    (dict(x=-torch.ones(1, 1, 3, 3)), "non-negative"),
    (dict(x=torch.full((1, 1, 3, 3), float("nan"))), "finite"),
    (dict(x=torch.ones(1, 3, 3)), "4-D"),
    (dict(x=torch.ones(1, 1, 1, 3)), "H >= 2"),
    (dict(x=torch.ones(1, 1, 3, 1)), "W >= 2"),
    (dict(x=torch.ones(1, 1, 3, 3, dtype=torch.int64)), "float32 or float64"),
    (dict(sigma=0.0), "sigma"),
    (dict(sigma=-1.0), "sigma"),
    (dict(sigma=float("nan")), "sigma"),
    (dict(num_samples=0), "num_samples"),
    (dict(noise="gaussian"), "noise"),
    (dict(seed=-1), "seed"),
    (dict(sample_offset=-1), "sample_offset"),
    (dict(sample_offset=2 ** 32), "sample_offset"),
    (dict(keys=torch.tensor([1, 2])), "keys"),
])
def test_bad_input_raises_value_error(op, kwargs, match):
    if op is wsmooth_ext.pixel_noise and match in ("H >= 2", "W >= 2"):
        pytest.skip("pixel noise has no flows: 1-pixel-wide images are valid (tests/core/test_python_api_refusals.py)")
    args = dict(x=torch.ones(1, 1, 3, 3), num_samples=2, sigma=0.1)
    args.update(kwargs)
    x = args.pop("x")
    with pytest.raises(ValueError, match=match):
        op(x, **args)


@pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")
@pytest.mark.parametrize("args,match", [
    ((-torch.ones(1, 1, 3, 3), 2, 0.1, 0, 0, 0, torch.tensor([0]), True), "non-negative"),
    ((torch.ones(1, 1, 3, 3), 0, 0.1, 0, 0, 0, torch.tensor([0]), True), "num_samples"),
    ((torch.ones(1, 1, 3, 3), 2, -0.1, 0, 0, 0, torch.tensor([0]), True), "sigma"),
    ((torch.ones(1, 1, 1, 3), 2, 0.1, 0, 0, 0, torch.tensor([0]), True), "H >= 2"),
    ((torch.ones(1, 1, 3, 3), 2, 0.1, 7, 0, 0, torch.tensor([0]), True), "noise"),
    ((torch.ones(1, 1, 3, 3), 2, 0.1, 0, 0, 0, torch.tensor([0, 1]), True), "keys"),
])
def test_raw_op_checks_its_arguments(args, match):
    # value checks of x raise ValueError (TORCH_CHECK_VALUE), like the Python API; the rest RuntimeError
    with pytest.raises(ValueError if match == "non-negative" else RuntimeError, match=match):
        torch.ops.wsmooth_ext.flow_noise(*args)


@pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")
def test_raw_pixel_op_checks_its_arguments_in_its_own_name():
    keys = torch.tensor([0])
    with pytest.raises(ValueError, match="wsmooth_ext.pixel_noise: x must be non-negative"):
        torch.ops.wsmooth_ext.pixel_noise(-torch.ones(1, 1, 3, 3), 2, 0.1, 0, 0, 0, keys, True)
    with pytest.raises(RuntimeError, match=r"wsmooth_ext.pixel_noise_backward: noise must be 0 \(laplace\) or 1 "
                                           r"\(uniform\), got 7"):
        torch.ops.wsmooth_ext.pixel_noise_backward(torch.ones(2, 1, 3, 3), torch.ones(1, 1, 3, 3), 2, 0.1, 7, 0, 0,
                                                   keys, True)
    assert torch.ops.wsmooth_ext.pixel_noise(torch.ones(1, 1, 1, 3), 2, 0.1, 0, 0, 0, keys, True).shape == (2, 1, 1, 3)


# --- CUDA (skipped without a GPU) -------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and the compiled CUDA kernel")
@pytest.mark.parametrize("pixel,noise,dtype", KERNEL_CASES)
# (1, 1, 3, 5000): wider than one tile of the flow kernel, which then tiles columns too
@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 2, 7, 9), (2, 3, 32, 32), (1, 1, 40, 70), (1, 1, 3, 5000)])
def test_cuda_matches_cpu(pixel, noise, dtype, shape):
    x = torch.rand(shape, dtype=dtype)
    kwargs = dict(noise=noise, seed=11, sample_offset=5, keys=torch.arange(shape[0]) * 3 + 1)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    on_cpu = op(x, 7, 0.05, **kwargs)
    # Relative to the largest output: mass-normalized noise scales with the image's mass (~650 for 3 x 5000
    # pixels at 0.5), where one float32 ulp is 6e-5, and the GPU contracts x + f * acc into one FMA.
    scale = max(1.0, float(on_cpu.abs().max()))
    tol = 1e-6 * scale if dtype == torch.float32 else 1e-12 * scale
    torch.testing.assert_close(op(x.cuda(), 7, 0.05, **kwargs).cpu(), on_cpu, rtol=0, atol=tol)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and the compiled CUDA kernel")
@pytest.mark.parametrize("pixel", [False, True])
def test_cuda_backward_matches_cpu(pixel):
    x = torch.rand(2, 3, 9, 8, dtype=torch.float64)
    weights = torch.randn(2 * 5, 3, 9, 8, dtype=torch.float64)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    grads = []
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_(True)
        (g,) = torch.autograd.grad((op(xd, 5, 0.2, seed=3) * weights.to(device)).sum(), xd)
        grads.append(g.cpu())
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")
@pytest.mark.parametrize("pixel", [False, True])
def test_cpu_simd_and_portable_paths_agree(monkeypatch, pixel):
    """The best CPU path here and the portable one (ATEN_CPU_CAPABILITY=default) give the very same samples
    (every path, forced in turn: tests/kernels/test_cpu_paths.py)."""
    x = torch.rand(2, 3, 9, 13)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    default = op(x, 20, 0.05, seed=9)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert wsmooth_ext.kernel_info()["cpu_path"] == "default"
    portable = op(x, 20, 0.05, seed=9)
    assert torch.equal(default, portable)


@pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")
@pytest.mark.parametrize("change,match", [
    (dict(keys=torch.tensor([0])), "keys"),
    (dict(keys=torch.tensor([0.0, 1.0])), "keys"),
    (dict(noise=7), "noise"),
    (dict(sample_offset=-5), "sample_offset"),
    (dict(sigma=0.0), "sigma"),
    (dict(grad=torch.rand(5, 1, 4, 5)), "grad"),
])
def test_raw_backward_checks_its_arguments(change, match):
    args = dict(grad=torch.rand(6, 1, 4, 5), x=torch.rand(2, 1, 4, 5), num_samples=3, sigma=0.1, noise=0, seed=0,
                sample_offset=0, keys=torch.tensor([0, 1]), normalize=True)
    args.update(change)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.wsmooth_ext.flow_noise_backward(*args.values())
