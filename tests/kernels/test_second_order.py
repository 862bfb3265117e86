"""Second-order gradients through the fused ops equal those of the pure-tensor reference.

The op is affine in x, so its Hessian is zero, but a Hessian-vector product through a nonlinear model still
needs the backward op's own derivative (with respect to the incoming gradient).
"""

import pytest
import torch

from wsmooth_ext import flow_noise, has_kernel, pixel_noise
from wsmooth_ext.core import reference

pytestmark = pytest.mark.skipif(not has_kernel("cpu"), reason="needs the compiled CPU kernel")


def _objective(op, x, normalize, weights):
    out = op(x, 3, 0.3, noise="laplace", seed=4, keys=torch.tensor([5, 9]), normalize=normalize)
    return (torch.tanh(out.reshape(-1) * weights) ** 2).sum() + (out.sum(dim=(1, 2, 3)) ** 3).sum()


def _hvp(op, x, v, normalize, weights):
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_objective(op, x, normalize, weights), x, create_graph=True)
    (hvp,) = torch.autograd.grad((grad * v).sum(), x)
    return hvp


@pytest.mark.parametrize("pixel", [False, True], ids=["flow", "pixel"])
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "pixel-units"])
def test_hessian_vector_product_matches_reference(pixel, normalize):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 5, 6, dtype=torch.float64, generator=gen)
    v = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    weights = torch.randn(2 * 3 * 2 * 5 * 6, dtype=torch.float64, generator=gen)
    op = pixel_noise if pixel else flow_noise
    ref = reference.pixel_noise_reference if pixel else reference.flow_noise_reference
    got = _hvp(op, x, v, normalize, weights)
    want = _hvp(ref, x, v, normalize, weights)
    # before second-order autograd was registered this differed by orders of magnitude (40.9 vs 1300.0)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("pixel", [False, True], ids=["flow", "pixel"])
def test_gradgradcheck(pixel):
    op = pixel_noise if pixel else flow_noise
    x = torch.rand(2, 1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: op(t, 2, 0.3, seed=1), (x,))
