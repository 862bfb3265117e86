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
    torch.manual_seed(0)
    normalized = build_model(arch, input_shape=shape, mean=mean, std=std).eval()
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
