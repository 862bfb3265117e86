"""The group-sequential hard smoothed prediction (the attacks' success test): its looks, its level α
(simulated, with a stated false-failure rate), and exact agreement with ``predict_batch`` on the votes it counts."""

import numpy as np
import pytest
import torch
from scipy import stats

from wsmooth_ext import Smooth
from wsmooth_ext.attacks import DualProjectionPGD, FlowAttack, FrankWolfeAttack, SmoothedTarget, WassersteinPGD
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.core.smooth import ABSTAIN
from wsmooth_ext.core.statistics import decide_look, min_samples_to_predict, sequential_looks

from test_smooth import CornerThreshold

pytestmark = pytest.mark.usefixtures("one_thread")


def test_looks_of_the_paper_setting():
    looks = sequential_looks(10_000, 0.05)
    assert [m for m, _ in looks] == [100, 300, 1000, 3000, 10_000]
    assert all(a == pytest.approx(0.05 * 1e-3 / 4) for _, a in looks[:-1])
    assert looks[-1][1] == pytest.approx(0.05 * (1 - 1e-3))
    assert sum(a for _, a in looks) <= 0.05 * (1 + 1e-12)


def test_looks_that_cannot_decide_are_dropped():
    # looks of fewer than 100 votes are dropped: n = 64 keeps one look, the fixed test at alpha
    assert sequential_looks(64, 0.05) == [(64, 0.05)]
    assert sequential_looks(330, 0.05) == [(330, 0.05)]
    looks = sequential_looks(1000, 0.05)  # 10 and 30 votes are dropped; alpha/1000 is shared by the other two
    assert [m for m, _ in looks] == [100, 300, 1000] and looks[0][1] == pytest.approx(0.05 * 1e-3 / 2)
    # a look that can never decide at its level is dropped too (100 votes reach p = 2^-99 at best)
    assert sequential_looks(10_000, 1e-30, early_share=0.5)[0][0] == 300
    assert looks[0][1] >= 0 and 100 >= min_samples_to_predict(looks[0][1])
    assert sequential_looks(1, 0.05) == [(1, 0.05)]
    with pytest.raises(ValueError, match="n must"):
        sequential_looks(0, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        sequential_looks(100, 1.5)


def test_decide_look_is_cohens_test():
    assert decide_look([0, 90, 10], 0.05) == (1, True)
    assert decide_look([50, 50, 0], 0.05)[1] is False
    # the runner-up is the second-largest count, whatever its index
    top, ok = decide_look([7, 0, 12, 3], 0.05)
    assert top == 2 and ok == (stats.binomtest(12, 19, 0.5).pvalue <= 0.05)


def _simulate(probs, looks, trials, rng, naive_alpha=None):
    """Run the sequential decision on simulated votes: prefix counts are sums of independent multinomial
    increments, exactly the law of the votes of looks on one sample range. Returns (answers, looks used)."""
    sizes = [m for m, _ in looks]
    increments = [rng.multinomial(m - prev, probs, size=trials) for prev, m in zip([0] + sizes[:-1], sizes)]
    prefix = np.cumsum(np.stack(increments), axis=0)  # [looks, trials, classes]
    answers = np.full(trials, ABSTAIN)
    used = np.full(trials, len(looks) - 1)
    for t in range(trials):
        for k, (_, level) in enumerate(looks):
            top, decided = decide_look(prefix[k, t], naive_alpha if naive_alpha is not None else level)
            if decided:
                answers[t], used[t] = top, k
                break
    return answers, used


def test_sequential_test_keeps_its_level_alpha():
    """Votes simulated (no model) under the hardest case for the test, two classes tied at 1/2 (any class
    returned is an error, both sides counted), with n = 10,000 and the default looks 100/300/1,000/3,000/10,000.

    Stated error rate: a returned class at most alpha = 0.05 (Bonferroni). The test fails only if the observed
    count exceeds the 1 − 1e-6 quantile of Binomial(trials, alpha): if the true rate were alpha, a false
    failure has probability ≤ 1e-6 (and the true rate is lower, ~0.04995 at most). The fixed seed makes the
    outcome reproducible.
    """
    rng = np.random.default_rng(20260101)
    trials, alpha = 4000, 0.05
    looks = sequential_looks(10_000, alpha)
    answers, _ = _simulate([0.5, 0.5], looks, trials, rng)
    errors = int((answers != ABSTAIN).sum())
    assert errors <= stats.binom.ppf(1 - 1e-6, trials, alpha), errors
    # the same simulation sees an invalid procedure: the plain test at alpha repeated after every look returns
    # a class far more often than alpha (~0.09 here). Failure if its true rate were below alpha: < 1e-6.
    naive, _ = _simulate([0.5, 0.5], looks, trials, np.random.default_rng(7), naive_alpha=alpha)
    assert int((naive != ABSTAIN).sum()) > stats.binom.ppf(1 - 1e-6, trials, alpha)


def test_sequential_test_wrong_class_rate_near_a_tie_and_its_cost():
    """Top class 0 at 0.52 vs 0.46 (+ a third class): returning class 1 is the false-"robust"/false-class error,
    allowed at most alpha/2 for the two-sided test; same 1e-6 false-failure quantile as above. A clear-cut image
    (0.97 vs 0.02) is decided at the first look (1% of the votes) in ≥ 99% of trials."""
    rng = np.random.default_rng(11)
    trials, alpha = 3000, 0.05
    looks = sequential_looks(10_000, alpha)
    answers, _ = _simulate([0.46, 0.52, 0.02], looks, trials, rng)
    assert int((answers == 0).sum()) <= stats.binom.ppf(1 - 1e-6, trials, alpha / 2)
    assert float((answers == 1).mean()) > 0.99  # and it has the power of the fixed test here
    answers, used = _simulate([0.97, 0.02, 0.01], looks, 500, rng)
    assert (answers == 0).all() and float((used == 0).mean()) >= 0.99


def _corner_images():
    # top-left pixel near the threshold 0.5 (borderline votes) or far from it (clear-cut), mass from the rest
    x = torch.full((6, 1, 4, 4), 0.2, dtype=torch.float64)
    x[:, 0, 0, 0] = torch.tensor([0.1, 0.9, 0.5, 0.502, 0.49, 0.3], dtype=torch.float64)
    return x


def test_predict_sequential_counts_are_prefixes_of_predict():
    """Exact check against the fixed test: an image's votes at the look where it stops are the votes that
    ``predict_batch_details`` counts with n = m_k (same samples [0, m_k)), its answer is that look's test, and
    images that reach the last look get exactly ``predict_batch``'s answer at that look's level."""
    smooth = Smooth(CornerThreshold(0.5), num_classes=2, sigma=0.01, noise="flow-laplace", seed=5)
    x, keys = _corner_images(), torch.arange(10, 16)
    looks = [(40, 0.001), (200, 0.001), (1000, 0.048)]
    pred, counts, samples = smooth.predict_batch_sequential(x, 1000, 0.05, batch_size=128, keys=keys, looks=looks)
    assert set(samples.tolist()) >= {40, 1000}  # clear-cut images stop at once, borderline ones go to the end
    for b in range(x.shape[0]):
        m = int(samples[b])
        level = dict(looks)[m]
        _, full_counts, _ = smooth.predict_batch_details(x[b:b + 1], m, 0.05, batch_size=128, keys=keys[b:b + 1])
        assert torch.equal(counts[b], full_counts[0])
        top, decided = decide_look(full_counts[0].tolist(), level)
        assert int(pred[b]) == (top if decided else ABSTAIN)
        if m == 1000:
            fixed = smooth.predict_batch(x[b:b + 1], 1000, level, batch_size=128, keys=keys[b:b + 1])
            assert int(pred[b]) == int(fixed[0])
    # an image's answer depends on its key, not on the batch it is tested in
    alone = [smooth.predict_batch_sequential(x[b:b + 1], 1000, 0.05, batch_size=7, keys=keys[b:b + 1],
                                             looks=looks) for b in range(x.shape[0])]
    assert torch.equal(pred, torch.cat([a[0] for a in alone]))
    assert torch.equal(samples, torch.cat([a[2] for a in alone]))


def test_predict_sequential_with_one_look_is_predict():
    smooth = Smooth(CornerThreshold(0.5), num_classes=2, sigma=0.01, noise="flow-laplace", seed=2)
    x, keys = _corner_images(), torch.arange(6)
    pred, counts, samples = smooth.predict_batch_sequential(x, 64, 0.05, batch_size=50, keys=keys)
    fixed, fixed_counts, _ = smooth.predict_batch_details(x, 64, 0.05, batch_size=50, keys=keys)
    assert torch.equal(pred, fixed) and torch.equal(counts, fixed_counts) and (samples == 64).all()
    with pytest.raises(ValueError, match="looks"):
        smooth.predict_batch_sequential(x, 64, 0.05, looks=[(80, 0.05)])
    with pytest.raises(ValueError, match="looks"):
        smooth.predict_batch_sequential(x, 64, 0.05, looks=[(32, 0.01), (16, 0.01)])


@pytest.mark.parametrize("method", ["sinkhorn", "frank-wolfe", "pgd-dual", "flow"])
def test_smoothed_attack_sequential_agrees_with_fixed(digits_model, method):
    """Smoothed attacks with the sequential and the fixed success test (n_test = 2,000: looks 200/600/2,000) on
    the same digits: every example's outcome, radius, first-flip iteration and predictions agree, and the
    sequential test's answer on each returned example is what a fresh sequential predict says."""
    x, y = load_dataset("digits", "test")
    x, y = x[:6], y[:6]
    keys = torch.arange(200, 206)
    results = {}
    for test in ("fixed", "sequential"):
        smooth = Smooth(digits_model, num_classes=10, sigma=0.005, noise="flow-laplace", seed=3)
        common = dict(eps_factor=1.5, eps_every=2, max_iter=6,
                      smoothing=SmoothedTarget(n_grad=8, n_test=2000, alpha=0.05, batch_size=500, success_test=test))
        attack = {"sinkhorn": lambda: WassersteinPGD(smooth, eps0=0.05, step=0.1, sinkhorn_iter=50, **common),
                  "frank-wolfe": lambda: FrankWolfeAttack(smooth, eps=0.05, **common),
                  "pgd-dual": lambda: DualProjectionPGD(smooth, eps=0.05, **common),
                  "flow": lambda: FlowAttack(smooth, eps=0.05, **common)}[method]()
        results[test] = attack.attack(x, y, keys=keys)
        if test == "sequential":
            again = smooth.predict_batch_sequential(results[test].adversarial, 2000, 0.05, 500, keys=keys)[0]
            assert torch.equal(again, results[test].adversarial_prediction)
    fixed, seq = results["fixed"], results["sequential"]
    assert bool(fixed.success.any())
    for field in ("success", "radius", "iterations", "clean_prediction", "adversarial_prediction", "adversarial"):
        assert torch.equal(getattr(fixed, field), getattr(seq, field)), field


def test_success_test_argument():
    smooth = Smooth(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), 10, 0.1)
    with pytest.raises(ValueError, match="success_test must be one of sequential, fixed, got 'bonferroni'"):
        SmoothedTarget(success_test="bonferroni")
    assert FlowAttack(smooth).smoothing.success_test == "sequential"
    fixed = SmoothedTarget(success_test="fixed")
    assert FrankWolfeAttack(smooth, smoothing=fixed).smoothing.success_test == "fixed"
    assert DualProjectionPGD(smooth).smoothing.success_test == "sequential"
    assert WassersteinPGD(smooth, smoothing=fixed).smoothing is fixed
