"""Smoothed attacks equal themselves resumed or re-batched; the box projection keeps mass and pixels."""

import numpy as np
import pytest
import torch

from wsmooth_ext import Smooth
from wsmooth_ext.cli import main
from wsmooth_ext.runs.logfile import read_log


pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")]


# ------------------------------------------------------------------------------------------ smoothed resume
SMOOTHED_FAST = ["--smoothed", "--n-grad", "8", "--n-test", "64", "--batch", "512", "--max-iter", "6", "--eps0",
                 "0.02", "--eps-factor", "2", "--eps-every", "2", "--no-progress"]


def _rows_without_time(path):
    return [{k: v for k, v in row.items() if k != "time"} for row in read_log(path)[1]]


@pytest.fixture(scope="module")
def trained_checkpoint(trained_digits_checkpoint):
    """wong_mnist on the 8×8 digits (conftest.trained_digits_checkpoint)."""
    return str(trained_digits_checkpoint)


@pytest.mark.parametrize("method", ["sinkhorn", "flow", "frank-wolfe", "pgd-dual"])
def test_smoothed_attack_is_the_same_resumed_or_rebatched(tmp_path, trained_checkpoint, method):
    # before: soft_forward's gradient noise came from a per-object counter, so every row after a resume point
    # (or with another --attack-batch) differed from the uninterrupted run
    base = (["attack", trained_checkpoint, "--dataset", "digits", "--method", method] + SMOOTHED_FAST
            + (["--sinkhorn-iter", "30"] if method == "sinkhorn" else []))  # refused for the other methods

    def run(name, *extra):
        out, adv = tmp_path / f"{name}.tsv", tmp_path / f"{name}.pt"
        assert main(base + ["--out", str(out), "--save-adv", str(adv)] + list(extra)) == 0
        return _rows_without_time(out), torch.load(adv, weights_only=True)

    whole, whole_adv = run("whole", "--max-images", "6", "--attack-batch", "6")
    # the gradients mattered: images were attacked for more than one iteration (fooled later, or never)
    assert any(r["iterations"] > 1 or r["iterations"] == -1 for r in whole)
    for name, extra in (("b2", ["--attack-batch", "2"]), ("b4", ["--attack-batch", "4"])):
        rows, adv = run(name, "--max-images", "6", *extra)
        assert rows == whole
        for key in ("clean", "adv", "idx"):
            assert torch.equal(adv[key], whole_adv[key]), (name, key)
    # interrupted after 3 images (what a kill between batches leaves), then resumed
    run("resumed", "--max-images", "3", "--attack-batch", "2")
    rows, adv = run("resumed", "--max-images", "6", "--attack-batch", "5", "--resume")
    assert rows == whole
    for key in ("clean", "adv", "idx"):
        assert torch.equal(adv[key], whole_adv[key]), key


def test_soft_forward_with_a_step_is_a_pure_function_of_seed_key_and_step():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        smooth = Smooth(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)), 3, 0.2, seed=5)
        x = torch.rand(3, 1, 4, 4)
    keys = torch.tensor([7, 8, 9])
    first = smooth.soft_forward(x, 16, keys=keys, step=4)
    smooth.soft_forward(x, 16, keys=keys)  # other calls in between change nothing
    torch.testing.assert_close(smooth.soft_forward(x[1:], 16, keys=keys[1:], step=4), first[1:], rtol=0, atol=0)
    assert not torch.equal(smooth.soft_forward(x, 16, keys=keys, step=5), first)
    # the samples are the documented ones: [step·n, (step+1)·n) of the soft range
    from wsmooth_ext.core.noises import SOFT_SAMPLES

    noisy = smooth._noisy(x, 16, SOFT_SAMPLES.start + 4 * 16, keys)
    expected = torch.softmax(smooth.base_classifier(noisy), dim=1).reshape(3, 16, 3).mean(dim=1)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="soft samples"):
        smooth.soft_forward(x, 2 ** 20, keys=keys, step=2 ** 11)

# ------------------------------------------------------------------------------------------ box projection
def _projection_case():
    from wsmooth_ext.inputs.data import load_dataset

    x = load_dataset("digits", "test")[0][:6].double()
    signs = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype).sign()
    candidate = (x + 0.5 * signs).clamp(0, 1.5)  # well outside [0, 1] in places
    return x, candidate


def test_box_projection_keeps_mass_and_pixels_within_one():
    # before: the projected image was clamped to [0, 1] after projecting, which changed its mass
    from wsmooth_ext.attacks import local_cost, projected_sinkhorn

    x, candidate = _projection_case()
    mass = x.sum(dim=(1, 2, 3), keepdim=True)
    cost = local_cost(5, 1.0, dtype=torch.float64)
    eps = 0.3
    z, info = projected_sinkhorn(x / mass, candidate / mass, eps, 1000.0, cost, max_iter=3000, tol=1e-4,
                                 upper=1.0 / mass, return_info=True)
    assert bool(info["converged"].all())
    pixels = z * mass
    assert float(pixels.max()) <= 1.0 + 1e-12 and float(pixels.min()) >= 0.0
    torch.testing.assert_close(pixels.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=1e-4, atol=0)
    assert bool((info["transport_cost"] <= eps * (1 + 1e-3)).all())
    # the exact W1 of the example (an LP, independent of the projection) is within the ball
    from wsmooth_ext.core.wasserstein import wasserstein_distance

    for b in range(x.shape[0]):
        w1 = wasserstein_distance(x[b], pixels[b], ground="l2", window=5, on_mismatch="rescale")
        assert w1 <= eps * (1 + 1e-3) + 1e-6
    # the published projection: the same ball without the cap puts pixels above 1, so its clamp loses mass
    free = projected_sinkhorn(x / mass, candidate / mass, eps, 1000.0, cost, max_iter=2000, tol=1e-6) * mass
    assert float(free.max()) > 1.0
    assert float((free.clamp(0, 1).sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3)) - 1).abs().max()) > 1e-3


def test_a_box_that_binds_nowhere_changes_nothing():
    from wsmooth_ext.attacks import local_cost, projected_sinkhorn

    x, candidate = _projection_case()
    mass = x.sum(dim=(1, 2, 3), keepdim=True)
    cost = local_cost(5, 1.0, dtype=torch.float64)
    free = projected_sinkhorn(x / mass, candidate / mass, 0.3, 1000.0, cost, max_iter=300)
    boxed = projected_sinkhorn(x / mass, candidate / mass, 0.3, 1000.0, cost, max_iter=300, upper=1e6)
    torch.testing.assert_close(boxed, free, rtol=0, atol=0)
    with pytest.raises(ValueError, match="upper must be >= X"):
        projected_sinkhorn(x / mass, candidate / mass, 0.3, 1000.0, cost, upper=0.5 * x / mass)


def test_sinkhorn_attack_examples_keep_their_mass_by_default(tmp_path, trained_checkpoint):
    runs = {}
    for projection in ("box", "clamp"):
        out = tmp_path / f"{projection}.tsv"
        assert main(["attack", trained_checkpoint, "--dataset", "digits", "--max-images", "12", "--eps", "0.3",
                     "--max-iter", "10", "--out", str(out), "--no-progress", "--projection", projection]) == 0
        runs[projection] = read_log(out)[1]
        assert {r["projection"] for r in runs[projection]} == {projection}
    attacked = [i for i, r in enumerate(runs["box"]) if r["iterations"] != 0]
    assert attacked
    assert max(abs(runs["box"][i]["mass_change"]) for i in attacked) <= 2e-4  # the projection's tolerance
    assert max(abs(runs["clamp"][i]["mass_change"]) for i in attacked) > 2e-4
