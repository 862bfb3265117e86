"""The Python API refuses bad values with one clear error: images without mass, labels an attack cannot use, noise
parameters whose samples would overflow."""

import numpy as np
import pytest
import torch

import wsmooth_ext
from wsmooth_ext import Smooth
from wsmooth_ext.attacks import FlowAttack, FrankWolfeAttack, SmoothedTarget, WassersteinPGD


pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")]


# ------------------------------------------------------------------------------------------ Python API
def test_certify_refuses_an_image_without_mass():
    # before: a zero image got prediction and a positive certified radius
    smooth = Smooth(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)), 3, 0.1)
    with pytest.raises(ValueError, match="no mass"):
        smooth.certify(torch.zeros(1, 4, 4), 10, 100, 0.05)
    with pytest.raises(ValueError, match=r"images \[1\]"):
        smooth.certify_batch(torch.stack([torch.rand(1, 4, 4), torch.zeros(1, 4, 4)]), 10, 100, 0.05)


@pytest.mark.parametrize("labels, message", [(torch.tensor([1.0, 2.0]), "integer"),
                                             (torch.tensor([1, 3]), r"\[0, 3\)"),
                                             (torch.tensor([-1, 0]), r"\[0, 3\)")])
@pytest.mark.parametrize("smoothed", [False, True])
def test_attacks_refuse_float_or_out_of_range_labels(labels, message, smoothed):
    # before: float labels were cast to int and labels outside the classes were attacked (or counted as fooled)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        x = torch.rand(2, 1, 4, 4)
    target = Smooth(model, 3, 0.1) if smoothed else model
    smoothing = SmoothedTarget(n_test=100) if smoothed else None
    for attack in (WassersteinPGD(target, max_iter=1, sinkhorn_iter=5, kernel_size=3, smoothing=smoothing),
                   FrankWolfeAttack(target, max_iter=1, kernel_size=3, smoothing=smoothing),
                   FlowAttack(target, max_iter=1)):
        with pytest.raises(ValueError, match=message):
            attack.attack(x, labels)


def test_noise_ops_accept_numpy_integers():
    # before: np.int64 counts (what numpy-based code hands over) were refused as "not an integer"
    x = torch.rand(2, 1, 5, 5)
    expected = wsmooth_ext.flow_noise(x, 3, 0.1, seed=7, sample_offset=2)
    got = wsmooth_ext.flow_noise(x, np.int64(3), np.float64(0.1), seed=np.int64(7), sample_offset=np.int32(2))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(wsmooth_ext.pixel_noise(x, np.int64(3), 0.1), wsmooth_ext.pixel_noise(x, 3, 0.1),
                               rtol=0, atol=0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 3))
    y = np.array([0, 1])
    for attack in (WassersteinPGD(model, kernel_size=np.int64(3), max_iter=np.int64(2), sinkhorn_iter=np.int64(5)),
                   FrankWolfeAttack(model, kernel_size=np.int64(3), max_iter=np.int64(2)),
                   FlowAttack(model, max_iter=np.int64(2), eps_every=np.int64(1))):
        assert attack.attack(x, torch.from_numpy(y)).adversarial.shape == x.shape


@pytest.mark.parametrize("op", [wsmooth_ext.flow_noise, wsmooth_ext.pixel_noise])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_ops_refuse_sigma_whose_samples_overflow(op, dtype):
    # before: flow_noise(x, 1, 1e37) returned inf pixels silently
    x = torch.rand(1, 1, 6, 6, dtype=dtype)
    huge = 1e37 if dtype == torch.float32 else 1e306
    with pytest.raises(ValueError, match="sigma=.* too large"):
        op(x, 1, huge)
    with pytest.raises(ValueError, match="too large"):  # big pixel values (Smooth accepts any non-negative image)
        Smooth(torch.nn.Flatten(), 36, 1e4).count_classes((x + 1) * (torch.finfo(dtype).max / 1e6), 2)
    # the bound is sound: just below it, the samples are finite
    out = op(x, 50, huge / 1e3)
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("shape", [(2, 1, 1, 5), (2, 3, 4, 1), (1, 1, 1, 1)])
def test_pixel_noise_takes_images_one_pixel_wide(shape):
    # before: pixel_noise refused H or W of 1 ("flows live between pixels"), though pixel noise has no flows
    from wsmooth_ext.core.reference import pixel_noise_reference

    x = torch.rand(*shape, dtype=torch.float64) + 0.1
    out = wsmooth_ext.pixel_noise(x, 4, 0.2, seed=3)
    torch.testing.assert_close(out, pixel_noise_reference(x, 4, 0.2, seed=3), rtol=1e-12, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: wsmooth_ext.pixel_noise(t, 3, 0.2, seed=3), (xg,))
    with pytest.raises(ValueError, match="H >= 2 and W >= 2"):
        wsmooth_ext.flow_noise(x, 4, 0.2)
