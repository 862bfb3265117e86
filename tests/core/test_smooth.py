"""Smooth: predict/certify against toy base classifiers whose smoothed probability is known in closed form."""

import math
import warnings

import pytest
import torch
from scipy import stats
from torch import nn

from wsmooth_ext import flow_noise, pixel_noise
from wsmooth_ext.core import noises
from wsmooth_ext.core.certificates import certified_radius
from wsmooth_ext.core.smooth import ABSTAIN, CertifyRecord, Smooth
from wsmooth_ext.core.statistics import clopper_pearson_lower

# The pure-tensor fallback warns once per device until the C++ kernel is built; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")


class CornerThreshold(nn.Module):
    """Class 1 iff the noisy top-left pixel is below c, else class 0 (extra classes never win).

    For flow noise the top-left pixel of a sample is x00 − s·(δv00 + δh00): a sum of two i.i.d. edge flows;
    for pixel noise it is x00 + s·ε. So p(class 1) = G((c − x00)/s) with G the CDF of that sum.
    """

    def __init__(self, c: float, num_classes: int = 2):
        super().__init__()
        self.c, self.num_classes = c, num_classes
        self.max_batch = 0

    def forward(self, x):
        self.max_batch = max(self.max_batch, x.shape[0])
        out = torch.full((x.shape[0], self.num_classes), -1e4, dtype=x.dtype)
        out[:, 0] = 0.0
        out[:, 1] = 1e4 * (self.c - x[:, 0, 0, 0])
        return out


def _sum_cdf(noise: str, sigma: float, u: float) -> float:
    """Closed-form CDF of the noise on the top-left pixel (mass-normalized), see CornerThreshold."""
    lam = noises.get(noise).scale(sigma)
    if noise == "pixel-laplace":
        return float(stats.laplace(0, lam).cdf(u))
    if noise == "flow-laplace":  # sum of two Laplace(0, λ)
        tail = 0.25 * math.exp(-abs(u) / lam) * (2 + abs(u) / lam)
        return 1 - tail if u >= 0 else tail
    tri = (2 * lam - abs(u)) ** 2 / (8 * lam ** 2) if abs(u) < 2 * lam else 0.0  # sum of two U[−λ, λ]
    return 1 - tri if u >= 0 else tri


def _image(seed=0, shape=(1, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("noise", ["flow-laplace", "flow-uniform", "pixel-laplace"])
def test_counts_follow_the_closed_form_probability(noise):
    # count_top ~ Binomial(n, p) with p from the closed form; a two-sided exact binomial test at 1e-4 per
    # case (false-failure rate 1e-4 each, for a fixed seed it is deterministic anyway).
    x = _image()
    sigma = 0.05
    s = float(x.sum())
    for shift in (0.1, 0.3):
        c = float(x[0, 0, 0]) + shift
        p = _sum_cdf(noise, sigma, (c - float(x[0, 0, 0])) / s)
        smooth = Smooth(CornerThreshold(c), 2, sigma, noise=noise, seed=3)
        n = 4000
        record = smooth.certify_batch(x.unsqueeze(0), 200, n, 0.05, 1000, keys=[17], labels=[1])[0]
        assert record.prediction == 1
        assert stats.binomtest(record.count_top, n, p).pvalue > 1e-4, (noise, shift, record.count_top / n, p)
        assert record.count_label == record.count_top
        assert record.p_lower == clopper_pearson_lower(record.count_top, n, 0.05)
        assert record.radius == certified_radius(record.p_lower, sigma, noise, None, "l2")
        assert record.radius_l1 == certified_radius(record.p_lower, sigma, noise, None, "l1")


def test_certify_recomputed_independently_from_the_noise_op():
    # Selection uses samples [0, n0), estimation [n0, n0 + n) of the image's key: recount by hand.
    x = _image(1)
    model = CornerThreshold(float(x[0, 0, 0]) + 0.15, num_classes=3)
    smooth = Smooth(model, 3, 0.05, noise="flow-laplace", certificate="paper", seed=11)
    n0, n, key = 64, 500, 42
    pred, radius = smooth.certify(x, n0, n, 0.01, 128, key=key)
    keys = torch.tensor([key])
    sel = model(flow_noise(x.unsqueeze(0), n0, 0.05, seed=11, sample_offset=0, keys=keys)).argmax(1)
    est = model(flow_noise(x.unsqueeze(0), n, 0.05, seed=11, sample_offset=n0, keys=keys)).argmax(1)
    top = int(torch.bincount(sel, minlength=3).argmax())
    p_lower = clopper_pearson_lower(int((est == top).sum()), n, 0.01)
    assert pred == (top if p_lower > 0.5 else ABSTAIN)
    assert radius == certified_radius(p_lower, 0.05, "flow-laplace", "paper")
    # pixel noise goes through pixel_noise
    smooth_px = Smooth(model, 3, 0.05, noise="pixel-laplace", seed=11)
    est_px = model(pixel_noise(x.unsqueeze(0), n, 0.05, seed=11, sample_offset=n0, keys=keys)).argmax(1)
    record = smooth_px.certify_batch(x.unsqueeze(0), n0, n, 0.01, 128, keys=keys)[0]
    assert record.count_top == int((est_px == record.prediction).sum()) or record.prediction == ABSTAIN


def test_results_do_not_depend_on_batching_or_position():
    x = torch.stack([_image(i) for i in range(5)])
    model = CornerThreshold(0.6)
    smooth = Smooth(model, 2, 0.05, seed=5)
    keys = torch.arange(10, 15)
    results = []
    for batch_size in (7, 64, 5000):
        model.max_batch = 0
        results.append(smooth.certify_batch(x, 50, 300, 0.05, batch_size, keys=keys))
        assert model.max_batch <= batch_size  # never more than batch_size noisy images at once
    assert results[0] == results[1] == results[2]
    # one image alone, with its key, gives its record from the batch
    single = smooth.certify_batch(x[3:4], 50, 300, 0.05, 7, keys=[13])
    assert single[0] == results[0][3]
    pred = smooth.predict_batch(x, 300, 0.05, 7, keys=keys)
    assert pred.dtype == torch.int64 and pred.shape == (5,)
    assert int(smooth.predict(x[2], 300, 0.05, 1000, key=12)) == int(pred[2])
    # different keys give different draws
    other = smooth.certify_batch(x, 50, 300, 0.05, 7, keys=keys + 100)
    assert [r.count_top for r in other] != [r.count_top for r in results[0]]


def test_abstains_when_two_classes_tie():
    # c = x00: p(class 1) = 1/2 exactly, so certify abstains unless p_lower > 1/2 (probability <= alpha)
    # and predict abstains unless the binomial test rejects (probability <= alpha); alpha = 1e-3.
    x = _image(2)
    smooth = Smooth(CornerThreshold(float(x[0, 0, 0])), 2, 0.05, seed=0)
    assert smooth.certify(x, 100, 1000, 0.001, 500) == (ABSTAIN, 0.0)
    assert smooth.predict(x, 1000, 0.001, 500) == ABSTAIN
    record = smooth.certify_batch(x.unsqueeze(0), 100, 1000, 0.001, 500, labels=[0])[0]
    assert record.prediction == ABSTAIN and record.radius == 0.0 and record.radius_l1 == 0.0
    assert 0.3 < record.p_lower <= 0.5
    assert record.count_label == 1000 - record.count_top or record.count_label == record.count_top


def test_constant_classifier_gets_the_all_votes_bound():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, 0.0, 5.0]]).expand(x.shape[0], 3)

    smooth = Smooth(Constant(), 3, 0.1, noise="flow-uniform")
    record = smooth.certify_batch(_image().unsqueeze(0), 10, 100, 0.05, 1000, labels=[0])[0]
    assert (record.prediction, record.count_top, record.count_label) == (2, 100, 0)
    assert record.p_lower == pytest.approx(0.05 ** (1 / 100))
    assert record.radius == certified_radius(0.05 ** (1 / 100), 0.1, "flow-uniform", "uniform")
    assert smooth.predict(_image(), 100, 0.05, 30) == 2
    assert isinstance(record, CertifyRecord) and record.as_dict()["n0"] == 10


def test_soft_forward_is_differentiable_fresh_and_unbiased():
    x = _image(4)
    c = float(x[0, 0, 0]) + 0.2
    smooth = Smooth(CornerThreshold(c), 2, 0.05, seed=1)
    xb = x.unsqueeze(0).repeat(2, 1, 1, 1)
    first, second = smooth.soft_forward(xb, 3000), smooth.soft_forward(xb, 3000)
    assert first.shape == (2, 2)
    assert torch.allclose(first.sum(1), torch.ones(2, dtype=first.dtype))
    assert not torch.equal(first, second)  # fresh samples on every call
    # the hard toy model's mean softmax is the vote fraction: ~Binomial(3000, p)/3000 (binomtest at 1e-4)
    p = _sum_cdf("flow-laplace", 0.05, 0.2 / float(x.sum()))
    assert stats.binomtest(round(float(first[0, 1]) * 3000), 3000, p).pvalue > 1e-4
    # gradients reach x through the noise op (a smooth model)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    xg = xb.clone().requires_grad_(True)
    Smooth(lin, 3, 0.05).soft_forward(xg, 16)[:, 0].sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def test_warns_when_n_is_too_small():
    smooth = Smooth(CornerThreshold(0.5), 2, 0.05)
    with pytest.warns(UserWarning, match="too small to ever certify"):
        smooth.certify(_image(), 10, 4, 0.05, 100)
    with pytest.warns(UserWarning, match="too small to ever predict"):
        smooth.predict(_image(), 5, 0.05, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        smooth.certify(_image(), 10, 5, 0.05, 100)
        smooth.predict(_image(), 6, 0.05, 100)


@pytest.mark.parametrize("call,name", [
    (lambda s, x: s.certify(x, 10, 100, 0.0, 10), "alpha"),
    (lambda s, x: s.certify(x, 10, 100, 1.0, 10), "alpha"),
    (lambda s, x: s.predict(x, 100, 1.5, 10), "alpha"),
    (lambda s, x: s.certify(x, 0, 100, 0.05, 10), "n0"),
    (lambda s, x: s.certify(x, 10, 0, 0.05, 10), "n"),
    (lambda s, x: s.predict(x, 0, 0.05, 10), "n"),
    (lambda s, x: s.certify(x, 10, 100, 0.05, 0), "batch_size"),
    (lambda s, x: s.predict(x, 10, 0.05, 0), "batch_size"),
    (lambda s, x: s.certify(-x, 10, 100, 0.05, 10), "x"),
    (lambda s, x: s.certify(x * float("nan"), 10, 100, 0.05, 10), "x"),
    (lambda s, x: s.certify(x.unsqueeze(0), 10, 100, 0.05, 10), "x"),
    (lambda s, x: s.predict_batch(x, 10, 0.05, 10), "x"),
    (lambda s, x: s.soft_forward(x.unsqueeze(0), 0), "num_samples"),
    (lambda s, x: s.certify_batch(x.unsqueeze(0), 10, 100, 0.05, 10, keys=[1, 2]), "keys"),
    (lambda s, x: s.certify_batch(x.unsqueeze(0), 10, 100, 0.05, 10, labels=[1, 2]), "labels"),
    (lambda s, x: s.certify_batch(x.unsqueeze(0), 10, 100, 0.05, 10, labels=[2]), "labels"),
])
def test_bad_inputs_name_the_argument(call, name):
    smooth = Smooth(CornerThreshold(0.5), 2, 0.05)
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call(smooth, _image())


def test_bad_constructor_arguments_and_output_width():
    model = CornerThreshold(0.5)
    for kwargs, name in [(dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"), (dict(noise="gauss"), "noise"),
                         (dict(noise="flow-uniform", certificate="tight"), "certificate"),
                         (dict(num_classes=1), "num_classes"), (dict(seed=-1), "seed")]:
        args = dict(base_classifier=model, num_classes=2, sigma=0.05)
        args.update(kwargs)
        with pytest.raises(ValueError, match=name):
            Smooth(**args)
    assert Smooth(model, 2, 0.05).certificate == "tight"
    assert Smooth(model, 2, 0.05, noise="flow-uniform").certificate == "uniform"
    # the model emits 2 logits, the smoothed classifier was told 3 classes
    with pytest.raises(ValueError, match="num_classes=3 does not match"):
        Smooth(model, 3, 0.05).certify(_image(), 10, 100, 0.05, 10)
