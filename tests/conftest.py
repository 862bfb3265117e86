"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread.

    Modules whose tensors are tiny use it: a second thread only adds synchronization, and on a 2-core machine
    shared with other processes a parallel region can stall for seconds. The kernel's own tests keep the
    default threads, so its parallel path stays covered.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """(train, test) of scikit-learn's 8x8 digits: the small real dataset of the training tests."""
    from wsmooth_ext.inputs.data import load_dataset

    return load_dataset("digits", "train"), load_dataset("digits", "test")


def wong_digits_model(seed: int = 0):
    """A fresh wong_mnist for the 8x8 digits, its weights drawn from ``seed`` (import it from conftest)."""
    from wsmooth_ext.inputs.data import DATASETS
    from wsmooth_ext.inputs.models import build_model

    info = DATASETS["digits"]
    return build_model("wong_mnist", input_shape=(1, 8, 8), mean=info.mean, std=info.std, seed=seed)


@pytest.fixture(scope="session")
def digits_model():
    """A logistic-regression classifier of the 8×8 digits, trained full-batch in about a second: the target of
    the attack tests on plain and smoothed classifiers."""
    from wsmooth_ext.inputs.data import load_dataset

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model = _linear_classifier(*load_dataset("digits", "train"), lr=0.05, steps=150)
    torch.set_num_threads(before)
    return model


@pytest.fixture(scope="session")
def linear_digits():
    """A linear classifier of 2,000 mnist5k training digits (about 60 Adam steps): a small real target for the
    attack tests, trained once per test run."""
    from wsmooth_ext.inputs.data import load_dataset

    x, y = load_dataset("mnist5k", "train")
    return _linear_classifier(x[:2000], y[:2000], lr=0.01, steps=60)


def _linear_classifier(x, y, lr: float, steps: int):
    """Logistic regression of images x [N, C, H, W] on labels y: full-batch Adam from seed 0, in eval mode."""
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def interrupted_after(real, count: int):
    """``real`` (a runner taking ``(target, images, labels, indices, ...)``: certify_to_log, attack_to_log) that
    handles only the first ``count`` indices and then stops as Ctrl-C would (import it from conftest)."""
    def run(target, images, labels, indices, *args, **kwargs):
        real(target, images, labels, indices[:count], *args, **kwargs)
        raise KeyboardInterrupt
    return run


@pytest.fixture(scope="session")
def trained_digits_checkpoint(tmp_path_factory):
    """A checkpoint of wong_mnist on the 8×8 digits after 60 full-batch Adam steps (about 90% test accuracy)."""
    from wsmooth_ext.inputs.checkpoint import save_checkpoint
    from wsmooth_ext.inputs.data import load_dataset
    from wsmooth_ext.inputs.models import build_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = load_dataset("digits", "train")
    model = build_model("wong_mnist", input_shape=(1, 8, 8), num_classes=10, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.set_num_threads(before)
    path = tmp_path_factory.mktemp("trained") / "digits.pt"
    save_checkpoint(path, model.eval(), {"dataset": "digits", "noise": "flow-laplace", "sigma": 0.005})
    return path


# ---------------------------------------------------------------------------- global random state, per test
_SEEDERS = ((torch, "manual_seed"), (torch.random, "manual_seed"))


@pytest.fixture(autouse=True)
def no_leaked_global_seed(monkeypatch):
    """Fail a test that leaves the global RNGs (torch's CPU generator, numpy's, Python's) seeded by itself or by
    the code it calls: the tests after it would draw from that seed, so their outcome would depend on which
    tests ran before. A test that needs a seeded stream uses a ``torch.Generator``, ``build_model(seed=)`` or
    ``torch.random.fork_rng()``. Whatever a test does, the next one starts from the state this one found."""
    import random

    import numpy as np

    import contextlib

    seeded, forks = [], [0]  # seeds set outside a fork_rng; fork_rng depth
    for module, name in _SEEDERS:
        real = getattr(module, name)

        def recording(*args, _real=real, **kwargs):
            if not forks[0]:
                seeded.append("torch.manual_seed")
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, recording)
    real_fork = torch.random.fork_rng

    @contextlib.contextmanager
    def counted_fork(*args, **kwargs):
        with real_fork(*args, **kwargs):
            forks[0] += 1
            try:
                yield
            finally:
                forks[0] -= 1

    monkeypatch.setattr(torch.random, "fork_rng", counted_fork)
    real_np_seed, real_py_seed = np.random.seed, random.seed
    monkeypatch.setattr(np.random, "seed", lambda *a, **k: (seeded.append("numpy.random.seed"), real_np_seed(*a, **k)))
    monkeypatch.setattr(random, "seed", lambda *a, **k: (seeded.append("random.seed"), real_py_seed(*a, **k)))
    before = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    yield
    after = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    torch.random.set_rng_state(before[0])
    np.random.set_state(before[1])
    random.setstate(before[2])
    changed = [name for name, b, a in zip(("torch", "numpy", "random"), before, after)
               if not (torch.equal(b, a) if name == "torch" else _same_state(b, a))]
    if seeded and changed:
        pytest.fail(f"the test left the global RNG of {', '.join(changed)} seeded ({', '.join(sorted(set(seeded)))}): "
                    "draw from a torch.Generator, build_model(seed=...) or inside torch.random.fork_rng()")


def _same_state(a, b) -> bool:
    import numpy as np

    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b
