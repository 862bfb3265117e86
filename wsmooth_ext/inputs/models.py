"""Base classifiers. Every model takes images in [0, 1] pixel space and normalizes them itself.

Keeping the per-channel normalization inside the model (a :class:`Normalize` layer whose mean/std are
buffers, so they travel with the state dict) lets the smoothing noise be added in pixel space, where the
certificate is stated, and a checkpoint is usable without knowing how its data were preprocessed.

Architectures (``ARCHS``):

* ``wong_mnist`` — Wong et al.'s MNIST CNN used by the paper: Conv(C→16, 4, s2, p1)–ReLU–Conv(16→32, 4, s2,
  p1)–ReLU–Flatten–FC(32·⌊H/4⌋·⌊W/4⌋→100)–ReLU–FC(100→classes). Its layers live in ``self.net``, an
  ``nn.Sequential`` with the reference code's indices (0, 2, 5, 7), so the paper's checkpoints map on by name.
* ``resnet18`` — the CIFAR-style ResNet-18 of the paper (3×3 stem, no max-pool, BasicBlocks [2, 2, 2, 2]).
* ``cifar_small`` — a 4-conv CNN (≈0.6 M parameters) that trains in minutes on a CPU.
* ``mnist_cnn4`` — a wider MNIST network than ``wong_mnist``: four 3×3 convolutions
  of 32, 32, 64 and 64 channels (padding 1; the second and fourth with stride 2, so an H×W image becomes
  ⌈⌈H/2⌉/2⌉×⌈⌈W/2⌉/2⌉: 7×7 on MNIST, 2×2 on 8×8 ``digits``), each followed by ReLU, then FC(64·7·7 = 3,136 → 256)–
  ReLU–FC(256→classes). 0.87 M parameters on MNIST (wong_mnist: 0.17 M) and about 13× wong_mnist's
  multiply-adds per image (8.3 M against 0.6 M), so each smoothing vote costs more. No BatchNorm, so data-parallel
  training equals a single process (up to summation order) and eval and train mode compute the same function.

Any of these (or any ``nn.Module`` mapping [B, C, H, W] images in [0, 1] to logits) can be combined into an
:class:`Ensemble`: one fixed classifier whose output is the log of the mean of its members' softmax (Horváth et
al. 2022 average the members' softmax). The smoothed classifier's votes are that output's argmax, and its
certificates hold as for any single base classifier, because the ensemble is one fixed function of the image.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCHS", "Normalize", "WongMNIST", "ResNet18", "CifarSmall", "MnistCNN4", "Ensemble", "build_model"]


class Normalize(nn.Module):
    """(x − mean[c]) / std[c] per channel; mean and std are buffers saved with the model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean and std must have one value per channel, got {len(mean_t)} and {len(std_t)}")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be > 0 for every channel, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


class _Base(nn.Module):
    """Common attributes: ``arch``, ``num_classes``, ``input_shape`` (C, H, W) and ``normalize``."""

    arch = ""
    min_size = 1  # smallest image height/width the architecture accepts

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], mean, std):
        super().__init__()
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        channels, h, w = input_shape
        if h < self.min_size or w < self.min_size:
            raise ValueError(f"{self.arch} needs images of at least {self.min_size}x{self.min_size} pixels, got "
                             f"input_shape {input_shape}")
        mean = [0.0] * channels if mean is None else list(mean)
        std = [1.0] * channels if std is None else list(std)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values (one per input channel), got {len(mean)}/{len(std)}")
        self.normalize = Normalize(mean, std)


class WongMNIST(_Base):
    arch = "wong_mnist"
    min_size = 4

    def __init__(self, num_classes=10, input_shape=(1, 28, 28), mean=None, std=None):
        super().__init__(num_classes, input_shape, mean, std)
        c, h, w = input_shape
        # Conv(k=4, s=2, p=1) maps n -> floor(n/2); two of them -> floor(floor(n/2)/2).
        flat = 32 * (h // 2 // 2) * (w // 2 // 2)
        self.net = nn.Sequential(
            nn.Conv2d(c, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(flat, 100), nn.ReLU(),
            nn.Linear(100, num_classes),
        )

    def forward(self, x):
        return self.net(self.normalize(x))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(_Base):
    arch = "resnet18"

    def __init__(self, num_classes=10, input_shape=(3, 32, 32), mean=None, std=None):
        super().__init__(num_classes, input_shape, mean, std)
        self.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # Adaptive pooling equals the original 4x4 average pool on 32x32 inputs and accepts other sizes.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class CifarSmall(_Base):
    arch = "cifar_small"
    min_size = 4

    def __init__(self, num_classes=10, input_shape=(3, 32, 32), mean=None, std=None):
        super().__init__(num_classes, input_shape, mean, std)
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 256), nn.ReLU(),
                                        nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))


def _halved(n: int) -> int:
    """The output size of Conv(k=3, stride 2, padding 1) on n pixels: ⌈n/2⌉."""
    return (n + 1) // 2


class MnistCNN4(_Base):
    arch = "mnist_cnn4"

    def __init__(self, num_classes=10, input_shape=(1, 28, 28), mean=None, std=None):
        super().__init__(num_classes, input_shape, mean, std)
        c, h, w = input_shape
        flat = 64 * _halved(_halved(h)) * _halved(_halved(w))
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))


ARCHS: dict[str, type[_Base]] = {cls.arch: cls for cls in (WongMNIST, ResNet18, CifarSmall, MnistCNN4)}


class Ensemble(nn.Module):
    """One base classifier made of k models: its output is log((1/k) Σ_j softmax(f_j(x))), the log of the mean
    of the members' softmax (Horváth et al. 2022 average softmax), computed stably as
    logsumexp_j(log_softmax(f_j(x))) − log k.

    Its argmax is the class of the largest mean probability, and ``softmax`` of its output is that mean, so
    votes (argmax) and soft votes (softmax: attacks, training) both see the averaged classifier. It is one fixed
    function of the image, so a smoothed classifier built on it is certified exactly like one built on a single
    model. Members must agree on ``num_classes`` and ``input_shape`` where they record them (models from
    :func:`build_model` do); the ensemble carries both.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if isinstance(members, nn.Module) and not isinstance(members, nn.ModuleList):
            raise ValueError(f"members must be a list of models, got one {type(members).__name__}: wrap it in a list")
        members = list(members)
        if not members:
            raise ValueError("members must hold at least one model, got none")
        for j, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise ValueError(f"members[{j}] must be an nn.Module, got {type(member).__name__}")
        for name in ("num_classes", "input_shape"):
            values = [getattr(m, name, None) for m in members]
            known = [(j, v) for j, v in enumerate(values) if v is not None]
            if any(v != known[0][1] for _, v in known):
                j, v = next((j, v) for j, v in known if v != known[0][1])
                raise ValueError(f"members must agree on {name}: members[{known[0][0]}] has {known[0][1]}, "
                                 f"members[{j}] has {v}")
            setattr(self, name, known[0][1] if known else None)
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([F.log_softmax(member(x), dim=1) for member in self.members])  # [k, B, classes]
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def build_model(arch: str, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                seed: int | None = None) -> nn.Module:
    """A freshly initialized model.

    Args:
        arch: one of ``ARCHS`` ("wong_mnist", "resnet18", "cifar_small", "mnist_cnn4").
        num_classes: number of output logits (>= 2).
        input_shape: (C, H, W) of the [0, 1] images the model takes.
        mean, std: per-channel normalization applied inside the model (default 0 and 1: none).
        seed: the initial weights are those torch draws after ``torch.manual_seed(seed)`` — drawn in a fork of
            the global RNG, which is left as it was; None: drawn from (and advancing) the global RNG.
    """
    if seed is not None:
        from ..infra.options import SEED

        SEED.check(seed, "seed")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(arch, num_classes, input_shape, mean, std)
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
    return ARCHS[arch](num_classes=num_classes, input_shape=shape, mean=mean, std=std)
