"""Models: shapes, parameter counts against closed forms, and normalization against a manual computation."""

import pytest
import torch
from torch import nn

from wsmooth_ext.inputs.models import ARCHS, build_model


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_wong_mnist_shapes_and_parameter_count(shape):
    c, h, w = shape
    model = build_model("wong_mnist", num_classes=7, input_shape=shape)
    assert model(torch.rand(2, *shape)).shape == (2, 7)
    flat = 32 * (h // 4) * (w // 4)
    expected = (c * 16 * 16 + 16) + (16 * 32 * 16 + 32) + (flat * 100 + 100) + (100 * 7 + 7)
    assert _n_params(model) == expected
    if shape == (1, 28, 28):
        assert flat == 1568  # docs/architecture.md §3: FC(1568 -> 100)


def test_wong_mnist_matches_the_reference_sequential():
    # The reference code's net; our model.net must take its state dict key for key (indices 0, 2, 5, 7).
    ref = nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    model = build_model("wong_mnist")
    model.net.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_resnet18_is_the_cifar_resnet18():
    model = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32))
    # 11,173,962: the parameter count of the CIFAR ResNet-18 (kuangliu/pytorch-cifar) used by the paper
    assert _n_params(model) == 11_173_962
    model.eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_small_runs_and_is_small():
    model = build_model("cifar_small", num_classes=10, input_shape=(3, 32, 32))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert _n_params(model) < 1_500_000


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_normalization_inside_the_model(arch):
    shape = (3, 16, 16)
    mean, std = [0.2, 0.4, 0.6], [0.5, 0.25, 2.0]
    normalized = build_model(arch, input_shape=shape, mean=mean, std=std, seed=0).eval()
    plain = build_model(arch, input_shape=shape).eval()
    plain.load_state_dict({k: v for k, v in normalized.state_dict().items() if not k.startswith("normalize.")},
                          strict=False)
    x = torch.rand(2, *shape)
    manual = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(normalized(x), plain(manual))
    # mean/std are buffers: they travel in the state dict
    assert normalized.state_dict()["normalize.std"].tolist() == pytest.approx(std)
    assert normalized.arch == arch and normalized.input_shape == shape and normalized.num_classes == 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch must be one of"):
        build_model("vgg")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("wong_mnist", num_classes=1)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("wong_mnist", input_shape=(28, 28))
    with pytest.raises(ValueError, match="one per input channel"):
        build_model("wong_mnist", mean=[0.1, 0.2])
    with pytest.raises(ValueError, match="std must be > 0"):
        build_model("wong_mnist", std=[0.0])
    with pytest.raises(ValueError, match="at least 4x4"):
        build_model("wong_mnist", input_shape=(1, 3, 3))


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 5, 7)])
def test_mnist_cnn4_shapes_and_parameter_count(shape):
    c, h, w = shape
    model = build_model("mnist_cnn4", num_classes=7, input_shape=shape)
    assert model(torch.rand(2, *shape)).shape == (2, 7)
    # two stride-2 convolutions (k3, p1) take n pixels to ceil(ceil(n/2)/2): counted by hand, not by the formula
    side = {28: 7, 8: 2, 5: 2, 7: 2}
    flat = 64 * side[h] * side[w]
    expected = ((c * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64)
                + (flat * 256 + 256) + (256 * 7 + 7))
    assert _n_params(model) == expected
    if shape == (1, 28, 28):
        assert flat == 3136
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())  # DDP equality


def test_mnist_cnn4_learns_digits_under_flow_noise(digits, one_thread):
    from wsmooth_ext.inputs.data import DATASETS
    from wsmooth_ext.training.keywords import evaluate, train

    (x, y), (xt, yt) = digits
    info = DATASETS["digits"]
    model = build_model("mnist_cnn4", input_shape=(1, 8, 8), mean=info.mean, std=info.std, seed=0)
    before = evaluate(model, xt, yt)
    history = train(model, x[:400], y[:400], noise="flow-laplace", sigma=0.01, epochs=3, lr=0.003, batch_size=32,
                    seed=0, optimizer="adam", progress=False, log=lambda line: None)
    after = evaluate(model, xt, yt)
    assert history[-1]["loss"] < history[0]["loss"]
    assert before < 0.3 and after > 0.8  # chance is 10%


def test_ensemble_is_the_log_of_the_mean_softmax():
    from wsmooth_ext.inputs.models import Ensemble

    members = [build_model(arch, num_classes=5, input_shape=(1, 8, 8), seed=1 + i).eval()
               for i, arch in enumerate(("wong_mnist", "mnist_cnn4", "wong_mnist"))]
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    ensemble = Ensemble(members).double()
    out = ensemble(x)
    # by hand: exp of each member's logits, normalized per row, averaged over members, then log
    probs = []
    for m in members:
        z = m(x)
        e = torch.exp(z - z.max(dim=1, keepdim=True).values)
        probs.append(e / e.sum(dim=1, keepdim=True))
    expected = torch.log(sum(probs) / len(probs))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert ensemble.num_classes == 5 and ensemble.input_shape == (1, 8, 8)
    # one member: the ensemble is that model's log-softmax (same argmax, same softmax)
    single = Ensemble([members[0]]).double()
    torch.testing.assert_close(single(x), torch.log_softmax(members[0](x), dim=1), rtol=1e-12, atol=1e-12)


def test_ensemble_refusals():
    from wsmooth_ext.inputs.models import Ensemble

    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])
    with pytest.raises(ValueError, match="members must be a list of models, got one WongMNIST"):
        Ensemble(build_model("wong_mnist"))
    assert len(Ensemble(torch.nn.ModuleList([build_model("wong_mnist")])).members) == 1
    with pytest.raises(ValueError, match=r"members\[1\] must be an nn.Module"):
        Ensemble([build_model("wong_mnist"), "model.pt"])
    with pytest.raises(ValueError, match=r"agree on num_classes: members\[0\] has 10, members\[1\] has 3"):
        Ensemble([build_model("wong_mnist"), build_model("wong_mnist", num_classes=3)])
    with pytest.raises(ValueError, match="agree on input_shape"):
        Ensemble([build_model("wong_mnist"), build_model("wong_mnist", input_shape=(1, 8, 8))])


def test_mnist_cnn4_through_the_commands(tmp_path, capsys, one_thread):
    """wsmooth train --arch mnist_cnn4 writes a checkpoint that loads as the same function, and certify, predict
    and attack take it (the architecture comes from the checkpoint's metadata)."""
    from wsmooth_ext.cli import main
    from wsmooth_ext.core.smooth import Smooth
    from wsmooth_ext.inputs.checkpoint import load_checkpoint, load_training_state, save_checkpoint
    from wsmooth_ext.inputs.data import load_dataset
    from wsmooth_ext.runs.logfile import read_log

    ckpt = tmp_path / "cnn4.pt"
    assert main(["train", "--dataset", "digits", "--arch", "mnist_cnn4", "--optimizer", "adam", "--lr", "0.003",
                 "--epochs", "1", "--train-size", "200", "--out", str(ckpt), "--no-progress"]) == 0
    model, meta = load_checkpoint(ckpt)
    assert meta["arch"] == "mnist_cnn4" and model.arch == "mnist_cnn4" and meta["input_shape"] == [1, 8, 8]
    state = load_training_state(ckpt)[0]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    again = tmp_path / "again.pt"  # round trip through save_checkpoint: the same function of the image
    save_checkpoint(again, model, {"dataset": "digits", "noise": "flow-laplace", "sigma": 0.01})
    x = load_dataset("digits", "test")[0][:5]
    torch.testing.assert_close(load_checkpoint(again)[0](x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="holds arch 'mnist_cnn4', not the requested 'wong_mnist'"):
        load_checkpoint(ckpt, arch="wong_mnist")

    out = tmp_path / "certify.tsv"
    assert main(["certify", str(ckpt), "--arch", "mnist_cnn4", "--dataset", "digits", "--max", "3", "--n0", "16",
                 "--n", "64", "--out", str(out), "--no-progress"]) == 0
    rows = read_log(out)[1]
    images, labels = load_dataset("digits", "test")
    records = Smooth(model, 10, 0.01).certify_batch(images[:3], 16, 64, 0.05, 1000, keys=[0, 1, 2],
                                                    labels=labels[:3])
    assert [(r["predict"], r["radius"]) for r in rows] == [(p.prediction, p.radius) for p in records]
    assert main(["predict", str(ckpt), "--dataset", "digits", "--max", "3", "--n", "64",
                 "--out", str(tmp_path / "predict.tsv"), "--no-progress"]) == 0
    assert main(["attack", str(ckpt), "--dataset", "digits", "--max", "2", "--max-iter", "3", "--eps0", "0.05",
                 "--sinkhorn-iter", "20", "--out", str(tmp_path / "attack.tsv"), "--no-progress"]) == 0
    assert len(read_log(tmp_path / "attack.tsv")[1]) == 2
