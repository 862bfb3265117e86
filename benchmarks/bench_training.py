"""Training throughput: `wsmooth_ext.training.train` (the loop `wsmooth train` runs) against a bare PyTorch loop of the
same model, optimizer, batch and noise op, in the same run.

Run: python -m pytest benchmarks/bench_training.py
     WSMOOTH_BENCH_THREADS=1 python -m pytest benchmarks/bench_training.py    (and =2; on a quiet machine)

One round is one epoch of `wong_mnist` over the 4,000 mnist5k training digits, flow-laplace σ = 0.01, batch 128:

* "bare": shuffle, one flow-noise draw per image (the fused op), forward, cross-entropy, backward, step — the
  floor of any training loop with this noise;
* "package": `train(...)` for one epoch without a test set (its batch order, per-example keys, NaN check,
  history, progress off);
* "package-eval": the same, plus the per-epoch evaluation `wsmooth train` does (clean and noisy accuracy on the
  1,000 held-out digits), which the bare loop does not do.

The summary prints images per second and each case's ratio to "bare" (the issue's target: the package's loop
within 10% of the bare one). SGD (the paper's optimizer) and Adam are both measured.
"""

import os
import time

import pytest
import torch
import torch.nn.functional as F

from wsmooth_ext.core.noises import add_noise
from wsmooth_ext.inputs.data import DATASETS, load_dataset
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.training import train

if os.environ.get("WSMOOTH_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["WSMOOTH_BENCH_THREADS"]))

SIGMA, BATCH, LR = 0.01, 128, 1e-3
RESULTS: dict = {}


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")


def _model():
    info = DATASETS["mnist5k"]
    return build_model("wong_mnist", input_shape=info.input_shape, mean=info.mean, std=info.std, seed=0)


def _optimizer(name, model):
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    return torch.optim.Adam(model.parameters(), lr=LR, weight_decay=5e-4)


def bare_epoch(x, y, optimizer_name):
    model = _model().train()
    opt = _optimizer(optimizer_name, model)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(x), BATCH):
        idx = order[start:start + BATCH]
        noisy = add_noise(x[idx], "flow-laplace", SIGMA, seed=1, keys=idx)
        loss = F.cross_entropy(model(noisy), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def package_epoch(x, y, optimizer_name, test=None):
    model = _model()
    tx, ty = test if test is not None else (None, None)
    train(model, x, y, noise="flow-laplace", sigma=SIGMA, epochs=1, lr=LR, batch_size=BATCH, seed=0,
          optimizer=optimizer_name, test_images=tx, test_labels=ty, progress=False, log=lambda line: None)
    return model


CASES = {"bare": lambda d, o: bare_epoch(*d[0], o), "package": lambda d, o: package_epoch(*d[0], o),
         "package-eval": lambda d, o: package_epoch(*d[0], o, test=d[1])}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("case", list(CASES))
def test_training_epoch(benchmark, data, case, optimizer):
    benchmark.group = f"training epoch, {optimizer}, {torch.get_num_threads()} thread(s)"
    run = CASES[case]
    run(data, optimizer)  # warm-up: allocator, kernels
    benchmark.pedantic(run, args=(data, optimizer), rounds=3, iterations=1)
    RESULTS[(optimizer, case)] = len(data[0][0]) / benchmark.stats.stats.median


def teardown_module(module):
    lines = []
    for (optimizer, case), rate in sorted(RESULTS.items()):
        bare = RESULTS.get((optimizer, "bare"))
        ratio = f"  {rate / bare:.3f}x bare" if bare else ""
        lines.append(f"{optimizer:5s} {case:13s} {rate:8.0f} images/s{ratio}")
    if lines:
        print(f"\ntraining throughput ({torch.get_num_threads()} thread(s), {time.strftime('%Y-%m-%d %H:%M')}):")
        print("\n".join(lines))
