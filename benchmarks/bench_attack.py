"""Attacks on a smoothed classifier: the sequential success test vs the fixed one (Cohen's predict), same run.

Run: python -m pytest benchmarks/bench_attack.py
     (WSMOOTH_BENCH_THREADS=1 for one intra-op thread; WSMOOTH_BENCH_ROUNDS=2 on a busy machine)

Target: `wong_mnist` trained for 10 epochs under flow-laplace noise, sigma 0.01, on mnist5k (a few seconds; a
module fixture), smoothed with the same noise. Attacks at the paper's sample counts (128 gradient samples,
success test with up to 10,000 votes, alpha 0.05, vote batch 1,000) and radius schedule (eps0 0.3, x1.1 every 10
iterations), each method with its CLI defaults, on the first 8 mnist5k test digits, for ITERATIONS iterations
(one round = one attack of the 8 digits; the ratio is the per-image speed-up of those iterations).

* "reference": success_test="fixed": all 10,000 votes at every test (the procedure before the sequential test);
* "ours": success_test="sequential": looks after 100, 300, 1,000, 3,000 and 10,000 votes
  (statistics.sequential_looks).
Both run the same attack code otherwise, so the ratio is the success test's alone; the Frank-Wolfe update got
faster in the same change (cap_columns' fixed-point exit), which the old-vs-new runs in RESULTS.md include.

Correctness first: both attacks must return identical results (examples, radii, predictions, iterations) on
these digits before anything is timed. The full-length (200-iteration) comparison is in RESULTS.md.
"""

import os

import pytest
import torch

from wsmooth_ext import Smooth
from wsmooth_ext.attacks import FlowAttack, FrankWolfeAttack, SmoothedTarget, WassersteinPGD
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.training.keywords import train

SIGMA, IMAGES, ITERATIONS = 0.01, 8, 10
if os.environ.get("WSMOOTH_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["WSMOOTH_BENCH_THREADS"]))


@pytest.fixture(scope="module")
def smoothed_target():
    torch.manual_seed(0)
    x, y = load_dataset("mnist5k", "train")
    model = build_model("wong_mnist", input_shape=(1, 28, 28), num_classes=10)
    train(model, x, y, noise="flow-laplace", sigma=SIGMA, epochs=10, optimizer="adam", progress=False,
          log=lambda _: None)
    return model.eval()


def make_attack(method, model, success_test):
    smooth = Smooth(model, 10, SIGMA, noise="flow-laplace", seed=0)  # fresh: its gradient samples restart
    common = dict(eps_factor=1.1, eps_every=10, max_iter=ITERATIONS,
                  smoothing=SmoothedTarget(n_grad=128, n_test=10_000, alpha=0.05, batch_size=1000,
                                           success_test=success_test))
    if method == "sinkhorn":
        return WassersteinPGD(smooth, eps0=0.3, **common)
    if method == "frank-wolfe":
        return FrankWolfeAttack(smooth, eps=0.3, **common)
    return FlowAttack(smooth, eps=0.3, **common)


CHECKED = set()


@pytest.mark.parametrize("method", ["sinkhorn", "frank-wolfe", "flow"])
@pytest.mark.parametrize("impl", ["reference", "ours"])
def test_smoothed_attack(record, smoothed_target, method, impl):
    x, y = load_dataset("mnist5k", "test")
    x, y, keys = x[:IMAGES], y[:IMAGES], torch.arange(IMAGES)
    if method not in CHECKED:  # correctness first: both tests give the same attack, example for example
        fixed = make_attack(method, smoothed_target, "fixed").attack(x, y, keys=keys)
        sequential = make_attack(method, smoothed_target, "sequential").attack(x, y, keys=keys)
        for field in ("adversarial", "radius", "success", "clean_prediction", "adversarial_prediction",
                      "iterations"):
            assert torch.equal(getattr(fixed, field), getattr(sequential, field)), field
        CHECKED.add(method)
    test = "fixed" if impl == "reference" else "sequential"
    record(f"smoothed attack {method} [mnist5k x{IMAGES}, {ITERATIONS} it]", impl,
           lambda: make_attack(method, smoothed_target, test).attack(x, y, keys=keys))
