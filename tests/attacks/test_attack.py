"""WassersteinPGD on plain and smoothed classifiers, checked against exact W1 and an analytic classifier."""

import math

import pytest
import torch
from torch import nn

from wsmooth_ext import Smooth
from wsmooth_ext.attacks import SmoothedTarget, WassersteinPGD
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.core.wasserstein import wasserstein_distance

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


class CentreOfMass(nn.Module):
    """Two classes by the horizontal centre of mass m(x) = Σ j·x / Σ x of the image: class 1 iff m > t.

    m is 1-Lipschitz in j, so by Kantorovich–Rubinstein any image of the other class is at W1 ≥ |m(x) − t|
    from x (either ground metric): an exact lower bound on every successful attack's distance.
    """

    def __init__(self, threshold: float, scale: float = 10.0):
        super().__init__()
        self.threshold, self.scale = threshold, scale

    def centre(self, x):
        cols = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
        return (x * cols).sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))

    def forward(self, x):
        d = self.centre(x) - self.threshold
        return self.scale * torch.stack([-d, d], dim=1)


def _blobs(n=6, size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    for b in range(n):
        r, c = int(torch.randint(1, size - 2, (1,), generator=gen)), b % 2 + 1
        x[b, 0, r:r + 2, c:c + 2] = 0.5 + 0.5 * torch.rand(2, 2, generator=gen)
    return x


def test_analytic_classifier_radii_and_lower_bound():
    # blobs with centres of mass near columns 1.5 and 2.5; a 7×7 window lets mass move 3 pixels: reachable
    model = CentreOfMass(threshold=3.0)
    x = _blobs()
    y = torch.zeros(6, dtype=torch.int64)
    attack = WassersteinPGD(model, kernel_size=7, eps0=0.3, eps_factor=1.3, eps_every=2, max_iter=30, step=0.1,
                            sinkhorn_iter=100)
    result = attack.attack(x, y)
    assert bool(result.success.all())
    margin = (3.0 - model.centre(x)).tolist()
    for b in range(6):
        assert result.iterations[b] >= 1
        # radius = ε in force at the first flip: eps0 · factor^(growth steps completed before that iteration)
        growths = (int(result.iterations[b]) - 1) // 2
        assert float(result.radius[b]) == pytest.approx(0.3 * 1.3 ** growths, rel=1e-5)
        w1 = wasserstein_distance(x[b], result.adversarial[b])
        assert w1 >= margin[b] - 1e-6  # no attack can beat the Kantorovich–Rubinstein bound
        assert w1 <= 3 * float(result.radius[b])  # and the found example is not absurdly far
    adv = result.adversarial
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert torch.equal(model(adv).argmax(1), result.adversarial_prediction)
    assert bool((result.adversarial_prediction != y).all())


def test_wrong_from_start_and_never_fooled():
    model = CentreOfMass(threshold=3.0)
    x = _blobs(n=3)
    y = torch.tensor([1, 0, 0])  # example 0 is misclassified before any attack
    result = WassersteinPGD(model, eps0=1e-3, eps_factor=1.0, max_iter=2, step=1e-3).attack(x, y)
    assert result.radius[0] == 0.0 and result.iterations[0] == 0 and bool(result.success[0])
    assert torch.equal(result.adversarial[0], x[0])
    assert result.radius[1:].tolist() == [math.inf, math.inf] and result.iterations[1:].tolist() == [-1, -1]
    assert not bool(result.success[1:].any())
    assert torch.equal(result.clean_prediction, torch.tensor([0, 0, 0]))


def test_attack_flips_a_trained_model(digits_model):
    x, y = load_dataset("digits", "test")
    x, y = x[:12], y[:12]
    clean = digits_model(x).argmax(1)
    assert float((clean == y).float().mean()) >= 0.8
    attack = WassersteinPGD(digits_model, eps0=0.05, eps_factor=1.5, eps_every=3, max_iter=30, step=0.1,
                            sinkhorn_iter=100)
    result = attack.attack(x, y)
    assert float(result.success.float().mean()) >= 0.9
    assert torch.equal(result.success, digits_model(result.adversarial).argmax(1) != y)
    fooled = result.success & (clean == y)
    for b in fooled.nonzero().flatten().tolist()[:4]:
        assert 0 < wasserstein_distance(x[b], result.adversarial[b]) < math.inf
    # l2 steps run too
    result_l2 = WassersteinPGD(digits_model, eps0=0.05, eps_factor=1.5, eps_every=3, max_iter=5, step=0.5,
                               norm="l2", sinkhorn_iter=50).attack(x[:4], y[:4])
    assert torch.equal(result_l2.success, digits_model(result_l2.adversarial).argmax(1) != y[:4])


def test_smoothed_mode_uses_the_hard_smoothed_prediction(digits_model):
    x, y = load_dataset("digits", "test")
    x, y = x[:4], y[:4]
    smooth = Smooth(digits_model, num_classes=10, sigma=0.005, noise="flow-laplace", seed=3)
    keys = torch.tensor([100, 101, 102, 103])
    attack = WassersteinPGD(smooth, eps0=0.05, eps_factor=1.5, eps_every=2, max_iter=6, step=0.1,
                            smoothing=SmoothedTarget(n_grad=8, n_test=64, alpha=0.05, batch_size=256),
                            sinkhorn_iter=50)
    assert attack.smoothed
    result = attack.attack(x, y, keys=keys)
    # success is exactly "the smoothed prediction (same keys, same samples) is not the label", abstain = fooled
    again = smooth.predict_batch(result.adversarial, n=64, alpha=0.05, batch_size=256, keys=keys)
    assert torch.equal(again, result.adversarial_prediction)
    assert torch.equal(result.success, again != y)
    clean = smooth.predict_batch(x, n=64, alpha=0.05, batch_size=256, keys=keys)
    assert torch.equal(clean, result.clean_prediction)
    assert bool(result.success.any())


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=4), "kernel_size"), (dict(reg=0), "reg"), (dict(eps0=-1), "eps0"),
    (dict(eps_factor=0.5), "eps_factor"), (dict(eps_every=0), "eps_every"), (dict(max_iter=-1), "max_iter"),
    (dict(step=0), "step"), (dict(norm="l1"), "norm"), (dict(p=0), "p must")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WassersteinPGD(CentreOfMass(3.0), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_grad=0), "n_grad must be an integer in [1, 100000], got 0"),
    (dict(n_grad=8.0), "n_grad must be an integer in [1, 100000], got 8.0"),
    (dict(n_test=True), "n_test must be an integer in [1, 2**31], got True"),
    (dict(alpha=1.5), "alpha must be a number in (0, 1), got 1.5"),
    (dict(batch_size=0), "batch_size must be an integer in [1, 1e+07], got 0"),
    (dict(success_test="fixed-ish"), "success_test must be one of sequential, fixed, got 'fixed-ish'")])
def test_smoothed_target_is_checked_once_by_the_shared_ranges(kwargs, message):
    """Every attack takes the smoothed target's settings as one SmoothedTarget, checked when it is made with the
    ranges `wsmooth attack --n-grad/--n-test/--alpha/--batch` state (infra/options.py) and success_test's choices."""
    with pytest.raises(ValueError) as refused:
        SmoothedTarget(**kwargs)
    assert str(refused.value) == message


def test_smoothing_argument_of_the_attacks(digits_model):
    from wsmooth_ext.attacks import DualProjectionPGD, FlowAttack, FrankWolfeAttack

    smooth = Smooth(digits_model, num_classes=10, sigma=0.005, noise="flow-laplace", seed=3)
    target = SmoothedTarget(n_grad=4, n_test=50, alpha=0.1, success_test="fixed", batch_size=25)
    assert (target.n_grad, target.n_test, target.alpha, target.success_test, target.batch_size) == (
        4, 50, 0.1, "fixed", 25)
    assert SmoothedTarget() == SmoothedTarget(n_grad=128, n_test=10000, alpha=0.05, success_test="sequential",
                                              batch_size=1000)  # the paper's, and `wsmooth attack --smoothed`'s
    for cls in (WassersteinPGD, FrankWolfeAttack, DualProjectionPGD, FlowAttack):
        assert cls(smooth, smoothing=target).smoothing is target
        assert cls(smooth).smoothing == SmoothedTarget()
        assert cls(digits_model).smoothing is None  # a plain classifier has no smoothed target
        with pytest.raises(ValueError, match="smoothing applies to a smoothed target"):
            cls(digits_model, smoothing=target)
        with pytest.raises(ValueError, match="smoothing must be a SmoothedTarget, got dict"):
            cls(smooth, smoothing={"n_grad": 4})
        with pytest.raises(TypeError, match="n_grad"):  # the five keywords each attack took are one argument now
            cls(smooth, n_grad=4)
    # the target's settings are the ones the attack uses: gradients over n_grad samples, the fixed test's votes
    x, y = load_dataset("digits", "test")
    calls = []
    real_soft, real_predict = smooth.soft_forward, smooth.predict_batch
    smooth.soft_forward = lambda images, n, **kw: calls.append(("soft", n)) or real_soft(images, n, **kw)
    smooth.predict_batch = lambda images, n, alpha, batch_size, keys: (
        calls.append(("predict", n, alpha, batch_size)) or real_predict(images, n, alpha, batch_size, keys=keys))
    FlowAttack(smooth, eps=0.05, max_iter=1, smoothing=target).attack(x[:2], y[:2])
    assert set(calls) == {("predict", 50, 0.1, 25), ("soft", 4)}


def test_bad_inputs():
    attack = WassersteinPGD(CentreOfMass(3.0), max_iter=1)
    with pytest.raises(ValueError, match="all zero"):
        attack.attack(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack.attack(2 * torch.ones(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="one label"):
        attack.attack(torch.ones(2, 1, 4, 4), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="model_or_callable"):
        WassersteinPGD(42)
