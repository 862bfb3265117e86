"""Checkpoints: our format round-trips, the reference code's two formats load onto wong_mnist, and unsafe,
missing or corrupt files fail with one-line errors (never by running pickled code)."""

import os

import pytest
import torch
from torch import nn

import wsmooth_ext
from wsmooth_ext.inputs.checkpoint import FORMAT_VERSION, load_checkpoint, read_checkpoint, save_checkpoint
from wsmooth_ext.inputs.models import build_model


class _Flatten(nn.Module):  # as in the reference code (it predates nn.Flatten)
    def forward(self, x):
        return x.view(x.size(0), -1)


def _reference_net():
    # Conv, ReLU, Conv, ReLU, Flatten, Linear, ReLU, Linear: parameters at indices 0, 2, 5, 7
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), _Flatten(),
                             nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def test_round_trip_with_metadata(tmp_path):
    model = build_model("cifar_small", num_classes=5, input_shape=(3, 16, 16), mean=[0.1, 0.2, 0.3],
                        std=[0.4, 0.5, 0.6], seed=0)
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, model, {"dataset": "cifar10", "noise": "flow-uniform", "sigma": 0.002,
                                  "train_args": {"lr": 0.01, "epochs": 3}})
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta["arch"] == "cifar_small" and meta["num_classes"] == 5 and meta["input_shape"] == [3, 16, 16]
    assert meta["noise"] == "flow-uniform" and meta["sigma"] == 0.002 and meta["dataset"] == "cifar10"
    assert meta["normalization"]["std"] == pytest.approx([0.4, 0.5, 0.6])
    assert meta["train_args"] == {"lr": 0.01, "epochs": 3}
    assert meta["version"] == wsmooth_ext.__version__ and meta["format_version"] == FORMAT_VERSION
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    # the file is plain weights: a weights-only torch.load reads it
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "wsmooth_ext.checkpoint" and "normalize.mean" in raw["state_dict"]
    # via the lazy top-level exports too
    assert wsmooth_ext.load_checkpoint is load_checkpoint and wsmooth_ext.save_checkpoint is save_checkpoint


def test_levine_feizi_dataparallel_format(tmp_path):
    net = _reference_net()
    state = nn.DataParallel(net).state_dict()
    assert all(k.startswith("module.") for k in state)
    path = tmp_path / "mnist_smooth_base_lr_0.001_stddev_0.01_epoch_199.pth"
    torch.save({"net": state, "acc": 0.0, "eps": 0.0, "epoch": 199}, path)
    model, meta = load_checkpoint(path, arch="wong_mnist")
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
    assert meta["arch"] == "wong_mnist" and meta["noise"] is None and meta["sigma"] is None
    assert meta["normalization"] == {"mean": [0.0], "std": [1.0]} and meta["input_shape"] == [1, 28, 28]
    model2, _ = load_checkpoint(path)  # the arch is also recognized without being named
    torch.testing.assert_close(model2(x), net(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="wong_mnist, not 'resnet18'"):
        load_checkpoint(path, arch="resnet18")


def test_wong_state_dict_list_format(tmp_path):
    net = _reference_net()
    path = tmp_path / "mnist_adv.pth"
    torch.save({"state_dict": [net.state_dict()], "err": 0.02, "epoch": 99}, path)
    model, meta = load_checkpoint(path, arch="wong_mnist")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
    assert meta["source"] == "state_dict" and meta["num_classes"] == 10


def test_reference_format_with_wrong_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"net": {"module.fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ValueError, match="not Wong et al.'s MNIST CNN"):
        load_checkpoint(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_refuses_arbitrary_unpickling(tmp_path):
    marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"net": _Evil(marker)}, path)
    with pytest.raises(ValueError, match="refusing to load") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert not os.path.exists(marker)  # nothing ran
    whole = tmp_path / "whole_module.pt"
    torch.save(_reference_net(), whole)  # a pickled nn.Module (the common unsafe habit)
    with pytest.raises(ValueError, match="refusing to load .*Sequential"):
        load_checkpoint(whole)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint" * 5)
    with pytest.raises(ValueError, match="corrupt.pt is not a checkpoint") as info:  # not a torch file at all
        load_checkpoint(corrupt)
    assert "\n" not in str(info.value)
    # a truncated real checkpoint
    good = tmp_path / "good.pt"
    save_checkpoint(good, build_model("wong_mnist", input_shape=(1, 8, 8)), {"dataset": "digits"})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="corrupt or unreadable"):
        read_checkpoint(truncated)
    with pytest.raises(ValueError, match="directory"):
        load_checkpoint(tmp_path)
    not_dict = tmp_path / "list.pt"
    torch.save([1, 2], not_dict)
    with pytest.raises(ValueError, match="expected a dict"):
        load_checkpoint(not_dict)
    unknown = tmp_path / "unknown.pt"
    torch.save({"weights": torch.zeros(1)}, unknown)
    with pytest.raises(ValueError, match="unrecognized checkpoint"):
        load_checkpoint(unknown)


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    from wsmooth_ext.cli import main
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage" * 20)
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(corrupt), "--resume",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "is not a checkpoint" in err and "Traceback" not in err


def test_save_validates_metadata(tmp_path):
    model = build_model("wong_mnist", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="noise"):
        save_checkpoint(tmp_path / "a.pt", model, {"noise": "gaussian"})
    with pytest.raises(ValueError, match="metadata value metadata.train_args.x"):
        save_checkpoint(tmp_path / "a.pt", model, {"train_args": {"x": object()}})
    with pytest.raises(ValueError, match="arch"):
        save_checkpoint(tmp_path / "a.pt", nn.Linear(2, 2), {})
    assert not (tmp_path / "a.pt").exists()
    newer = tmp_path / "newer.pt"
    save_checkpoint(newer, model, {})
    payload = torch.load(newer, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, newer)
    with pytest.raises(ValueError, match="format_version"):
        load_checkpoint(newer)
