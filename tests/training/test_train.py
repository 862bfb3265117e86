"""Training: fresh per-example noise (checked draw by draw against the public noise ops), the paper's
optimizer defaults, learning on real digits, and resume == uninterrupted run."""

import inspect

import pytest
import torch

import wsmooth_ext
from wsmooth_ext.inputs.checkpoint import load_checkpoint, load_training_state
from wsmooth_ext.inputs.data import DATASETS, load_dataset
from wsmooth_ext.training.keywords import derive_seed, evaluate, train

from conftest import wong_digits_model as _model

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"), pytest.mark.usefixtures("one_thread")]




def _record_inputs(model):
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone())
                                    if module.training else None)
    return seen


@pytest.mark.parametrize("noise", ["flow-laplace", "flow-uniform", "pixel-laplace"])
def test_every_example_gets_its_own_fresh_draw(digits, noise):
    (x, _), _ = digits
    n, sigma, seed = 8, 0.05, 11
    images = x[:1].repeat(n, 1, 1, 1)  # eight identical images: a shared draw would show as equal rows
    labels = torch.zeros(n, dtype=torch.long)
    model = _model()
    seen = _record_inputs(model)
    train(model, images, labels, noise=noise, sigma=sigma, epochs=2, batch_size=4, seed=seed, progress=False,
          log=lambda line: None)
    assert len(seen) == 4  # 2 epochs x 2 batches
    op = wsmooth_ext.pixel_noise if noise == "pixel-laplace" else wsmooth_ext.flow_noise
    kind = "uniform" if noise == "flow-uniform" else "laplace"
    noise_seed = derive_seed(seed, 1)
    for epoch in range(2):
        batch = torch.cat(seen[2 * epoch: 2 * epoch + 2])
        # the draw the documented stream assigns to dataset index i in this epoch (sample index = epoch)
        expected = torch.cat([op(images[i:i + 1], 1, sigma, noise=kind, seed=noise_seed, sample_offset=epoch,
                                 keys=torch.tensor([i])) for i in range(n)])
        matched = []
        for row in batch:
            hits = [i for i in range(n) if torch.allclose(row, expected[i], rtol=0, atol=1e-6)]
            assert len(hits) == 1
            matched.append(hits[0])
        assert sorted(matched) == list(range(n))  # each example once per epoch, each with its own draw
    assert len({tuple(r.flatten().tolist()) for r in torch.cat(seen)}) == 2 * n  # all 16 draws distinct


def test_noise_none_trains_on_clean_images(digits):
    (x, y), _ = digits
    model = _model()
    seen = _record_inputs(model)
    train(model, x[:6], y[:6], noise="none", sigma=0.0, epochs=1, batch_size=6, seed=0, progress=False,
          log=lambda line: None)
    assert sorted(r.sum().item() for r in seen[0]) == pytest.approx(sorted(r.sum().item() for r in x[:6]))


def test_paper_optimizer_defaults(tmp_path, digits):
    params = inspect.signature(train).parameters
    assert (params["lr"].default, params["momentum"].default, params["weight_decay"].default,
            params["batch_size"].default, params["optimizer"].default) == (0.001, 0.9, 5e-4, 128, "sgd")
    (x, y), _ = digits
    path = tmp_path / "m.pt"
    train(_model(), x[:64], y[:64], noise="flow-laplace", sigma=0.01, epochs=1, seed=0, progress=False,
          checkpoint_path=path, metadata={"dataset": "digits"}, log=lambda line: None)
    _, meta, state = load_training_state(path)
    group = state["optimizer"]["param_groups"][0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.001, 0.9, 5e-4)
    assert meta["noise"] == "flow-laplace" and meta["sigma"] == 0.01 and meta["dataset"] == "digits"
    assert meta["train_args"]["batch_size"] == 128 and state["epoch"] == 1


def test_learns_real_digits_under_flow_noise(digits):
    (x, y), (xt, yt) = digits
    model = _model()
    lines = []
    history = train(model, x, y, noise="flow-laplace", sigma=0.01, epochs=6, lr=0.003, batch_size=32, seed=0,
                    optimizer="adam", test_images=xt, test_labels=yt, progress=False, log=lines.append)
    assert [h["epoch"] for h in history] == list(range(1, 7)) and len(lines) == 6
    assert "test acc clean" in lines[-1] and "under noise" in lines[-1]
    # chance is 10%; a few seconds of training reach far above it, clean and under noise
    assert history[-1]["test_clean_acc"] > 0.8 and history[-1]["test_noisy_acc"] > 0.6
    assert history[-1]["test_clean_acc"] == evaluate(model, xt, yt)
    assert not model.training


def test_resume_equals_uninterrupted_run(tmp_path, digits):
    (x, y), (xt, yt) = digits
    x, y = x[:300], y[:300]
    kwargs = dict(noise="flow-laplace", sigma=0.02, lr=0.05, batch_size=64, seed=3, test_images=xt[:50],
                  test_labels=yt[:50], progress=False, log=lambda line: None)
    full_model = _model(seed=0)
    full = train(full_model, x, y, epochs=3, checkpoint_path=tmp_path / "full.pt", **kwargs)

    part_path = tmp_path / "part.pt"
    train(_model(seed=0), x, y, epochs=1, checkpoint_path=part_path, **kwargs)  # "interrupted" after epoch 1
    resumed_model = _model(seed=123)  # different initial weights: everything must come from the checkpoint
    resumed = train(resumed_model, x, y, epochs=3, checkpoint_path=part_path, resume=True, **kwargs)

    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in full]
    final, meta = load_checkpoint(part_path)
    assert meta["train_args"]["epochs"] == 3
    # resuming a finished run does nothing; changing a fixed setting is refused
    again = train(_model(seed=5), x, y, epochs=3, checkpoint_path=part_path, resume=True, **kwargs)
    assert len(again) == 3
    with pytest.raises(ValueError, match="lr was 0.05 there, now 0.1"):
        train(_model(), x, y, epochs=4, checkpoint_path=part_path, resume=True, **{**kwargs, "lr": 0.1})


def test_bad_arguments(digits):
    (x, y), _ = digits
    model = _model()
    common = dict(epochs=1, progress=False)
    with pytest.raises(ValueError, match="noise must be one of"):
        train(model, x, y, noise="gaussian", sigma=0.1, **common)
    with pytest.raises(ValueError, match=r"sigma must be a number in \(0, "):
        train(model, x, y, noise="flow-laplace", sigma=0.0, **common)
    with pytest.raises(ValueError, match="batch_size"):
        train(model, x, y, noise="none", sigma=0, batch_size=0, **common)
    with pytest.raises(ValueError, match="optimizer"):
        train(model, x, y, noise="none", sigma=0, optimizer="lbfgs", **common)
    with pytest.raises(ValueError, match="one label per image"):
        train(model, x, y[:-1], noise="none", sigma=0, **common)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_path"):
        train(model, x, y, noise="none", sigma=0, resume=True, **common)


def test_derive_seed_streams_are_distinct_and_stable():
    seeds = {derive_seed(0, s, e) for s in (1, 2, 3) for e in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2 ** 63 for s in seeds)
    assert derive_seed(7, 1) == derive_seed(7, 1) != derive_seed(8, 1)


def test_cli_train_and_resume(tmp_path, capsys):
    from wsmooth_ext.cli import main
    out = tmp_path / "digits.pt"
    args = ["train", "--dataset", "digits", "--optimizer", "adam", "--lr", "0.01", "--batch", "64",
            "--train-size", "300", "--out", str(out), "--no-progress"]
    assert main(args + ["--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "epoch   2/2" in text and "test acc clean" in text and "under noise" in text
    model, meta = load_checkpoint(out)
    assert meta["dataset"] == "digits" and meta["arch"] == "wong_mnist" and meta["input_shape"] == [1, 8, 8]
    assert meta["noise"] == "flow-laplace" and meta["sigma"] == 0.01
    assert meta["normalization"]["mean"] == pytest.approx(list(DATASETS["digits"].mean))
    assert meta["train_args"]["train_size"] == 300 and meta["train_args"]["optimizer"] == "adam"
    assert main(args + ["--epochs", "3", "--resume"]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "epoch   3/3" in text and "epoch   1/3" not in text
    assert load_training_state(out)[2]["epoch"] == 3
    assert main(args + ["--epochs", "0"]) == 2
    assert "--epochs must be an integer >= 1, got 0" in capsys.readouterr().err


def test_cli_train_help_states_units_and_defaults(capsys):
    from wsmooth_ext.cli import main
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "mass-normalized" in text and "SGD, lr 0.001, momentum 0.9, weight decay 5e-4, batch 128" in text


def test_lazy_top_level_exports():
    from wsmooth_ext.inputs.models import build_model as build
    assert wsmooth_ext.load_dataset is load_dataset and wsmooth_ext.build_model is build


def test_augmentation_is_a_padded_crop_and_flip(digits):
    from wsmooth_ext.training.keywords import augment_batch
    (x, _), _ = digits
    batch = x[:16]
    out = augment_batch(batch, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == batch.shape
    flips = 0
    for original, augmented in zip(batch, out):
        # brute force over every shift in [-2, 2]^2 and both orientations
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        candidates = [(flip, dy, dx) for flip in (False, True) for dy in range(5) for dx in range(5)
                      if torch.equal(augmented, (lambda c: c.flip(-1) if flip else c)(padded[:, dy:dy + 8, dx:dx + 8]))]
        assert candidates
        flips += all(c[0] for c in candidates)
    assert 0 < flips < 16  # P(all 16 flips equal) = 2 * 2**-16
    again = augment_batch(batch, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)


def test_resume_equals_uninterrupted_run_with_augmentation(tmp_path, digits):
    (x, y), _ = digits
    kwargs = dict(noise="pixel-laplace", sigma=0.02, lr=0.05, batch_size=50, seed=1, augment=True, progress=False,
                  log=lambda line: None)
    full_model = _model()
    train(full_model, x[:100], y[:100], epochs=2, **kwargs)
    path = tmp_path / "aug.pt"
    train(_model(), x[:100], y[:100], epochs=1, checkpoint_path=path, **kwargs)
    resumed = _model(seed=9)
    train(resumed, x[:100], y[:100], epochs=2, checkpoint_path=path, resume=True, **kwargs)
    for a, b in zip(full_model.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="augment was True there"):
        train(_model(), x[:100], y[:100], epochs=3, checkpoint_path=path, resume=True, **{**kwargs, "augment": False})


def test_cli_train_on_cifar10_files_with_augmentation(tmp_path, capsys):
    import pickle

    import numpy as np
    from wsmooth_ext.cli import main
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(1, 256, size=(4, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, size=4).tolist()}, fh, protocol=2)
    out = tmp_path / "cifar.pt"
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--arch", "cifar_small",
                 "--sigma", "0.0002", "--epochs", "1", "--batch", "8", "--out", str(out), "--no-progress"]) == 0
    assert "augmented" in capsys.readouterr().out
    model, meta = load_checkpoint(out)
    assert meta["arch"] == "cifar_small" and meta["input_shape"] == [3, 32, 32] and meta["train_args"]["augment"]
    assert meta["normalization"]["std"] == pytest.approx(list(DATASETS["cifar10"].std))
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("seed", [2 ** 64, 2 ** 63, -1])
def test_train_refuses_a_seed_outside_the_one_seed_rule(seed):
    # seeds are masked to 64 bits when streams are derived: 2**64 would train the very weights of seed 0
    from wsmooth_ext.training import train
    from wsmooth_ext.inputs.models import build_model

    images, labels = torch.rand(8, 1, 8, 8), torch.arange(8) % 2
    model = build_model("wong_mnist", num_classes=2, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\), got"):
        train(model, images, labels, noise="flow-laplace", sigma=0.01, epochs=1, seed=seed, progress=False)
