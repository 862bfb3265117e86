"""Checkpoints: a documented, weights-only format with metadata, plus the reference code's two formats.

Our format (``format_version`` 1) is a ``torch.save`` of a dict made only of tensors and plain Python values,
so ``torch.load(weights_only=True)`` reads it without running any pickled code::

    {"format": "wsmooth_ext.checkpoint",
     "format_version": 1,
     "metadata": {"arch", "dataset", "num_classes", "input_shape" [C, H, W],
                  "noise" ("none" | a family of wsmooth_ext.core.noises | None = unknown),
                  "sigma" (float, mass-normalized units, or None), "normalization": {"mean": [...], "std": [...]},
                  "train_args": {...}, "version" (wsmooth_ext.__version__), "format_version": 1, ...},
     "state_dict": model.state_dict(),
     "training_state": {"epoch", "optimizer", "history"}   # only while/after `train` writes it; for --resume
    }

Reference formats, read as ``wong_mnist`` (they hold Wong et al.'s MNIST CNN, an ``nn.Sequential`` Conv, ReLU,
Conv, ReLU, Flatten, Linear, ReLU, Linear, so its parameters sit at indices 0, 2, 5 and 7):

* Levine & Feizi's smoothed models: ``{"net": DataParallel state dict ("module.0.weight", ...), "acc", ...}``;
* Wong et al.'s models: ``{"state_dict": [state dict, ...], ...}`` (the first item is the classifier).

Those models had no input normalization (mean 0, std 1) and carry no noise/σ (metadata None: give σ yourself).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import ARCHS, Ensemble, build_model
from ..infra.files import write_atomic
from ..core.noises import TRAINING_NOISES as NOISES

__all__ = ["FORMAT", "FORMAT_VERSION", "NOISES", "save_checkpoint", "load_checkpoint", "load_ensemble",
           "read_checkpoint", "load_training_state", "trained_epochs", "checkpoint_sha256", "checkpoints_sha256"]

FORMAT = "wsmooth_ext.checkpoint"
FORMAT_VERSION = 1
_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> Any:
    """Return ``value`` with tuples as lists, refusing anything weights-only loading could not read back."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [_check_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"metadata keys must be strings, got {k!r} in {where}")
            out[k] = _check_plain(v, f"{where}.{k}")
        return out
    raise ValueError(f"metadata value {where} must be a str/int/float/bool/None/list/dict, "
                     f"got {type(value).__name__}")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, metadata: dict,
                    training_state: dict | None = None) -> None:
    """Write ``model`` and its metadata to ``path`` atomically (a crash never leaves a half-written file).

    ``arch``, ``num_classes``, ``input_shape`` and ``normalization`` default to the model's own attributes
    (models from :func:`build_model` have them); ``version`` and ``format_version`` are filled in. Required
    in ``metadata`` or on the model: ``arch``. ``noise`` must be one of ``NOISES`` or None.
    ``training_state`` (optimizer state, epoch, history) is what ``train(..., resume=True)`` continues from.
    """
    from .. import __version__

    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    meta = dict(metadata)
    for key in ("arch", "num_classes", "input_shape"):
        if meta.get(key) is None and hasattr(model, key):
            meta[key] = getattr(model, key)
    if meta.get("arch") not in ARCHS:
        raise ValueError(f"metadata 'arch' must be one of {sorted(ARCHS)}, got {meta.get('arch')!r}")
    norm = getattr(model, "normalize", None)
    if "normalization" not in meta and norm is not None:
        meta["normalization"] = {"mean": norm.mean.tolist(), "std": norm.std.tolist()}
    meta.setdefault("dataset", None)
    meta.setdefault("noise", None)
    meta.setdefault("sigma", None)
    meta.setdefault("train_args", {})
    if meta["noise"] is not None and meta["noise"] not in NOISES:
        raise ValueError(f"metadata 'noise' must be one of {list(NOISES)} or None, got {meta['noise']!r}")
    if meta["sigma"] is not None and not (isinstance(meta["sigma"], (int, float)) and math.isfinite(meta["sigma"])
                                          and meta["sigma"] >= 0):
        raise ValueError(f"metadata 'sigma' must be a finite number >= 0 or None, got {meta['sigma']!r}")
    meta["version"] = __version__
    meta["format_version"] = FORMAT_VERSION
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": _check_plain(meta, "metadata"),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if training_state is not None:
        payload["training_state"] = training_state
    save_torch_file(payload, Path(path), "checkpoint")


def save_torch_file(obj, path: Path, what: str) -> None:
    """``torch.save(obj)`` into ``path`` atomically (a temporary in the same folder, then ``os.replace``).

    The bytes are serialized in memory and written with plain file I/O, so a failed write (a full disk, a file
    size limit) is an OSError with its real reason and ``path`` ('cannot write checkpoint: No space left on
    device: PATH'), not torch's internal text; nothing but the old file is left behind.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getbuffer(), what)


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the file's SHA-256: what logs record to tell models apart on --resume."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def checkpoints_sha256(paths) -> str:
    """What a log records for the base classifier of ``paths``: one checkpoint's :func:`checkpoint_sha256`, or
    for an ensemble its members' joined with '+' in the order given (the order is part of the identity)."""
    return "+".join(checkpoint_sha256(path) for path in paths)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _corrupt(path: Path, kind: str, detail) -> str:
    # the raw detail is often opaque (a bare key such as "101" or "Unsupported operand 36"): say what it means
    return (f"corrupt or unreadable checkpoint {path}: the file is damaged or truncated, not a complete "
            f"torch.save file ({kind}: {_one_line(detail).split('. This is')[0]})")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with user-facing errors.

    Raises FileNotFoundError if missing; ValueError (one line) if corrupt, not a dict, or if it would need
    arbitrary unpickling (which can execute code) — such files are refused, never loaded.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(f"checkpoint path is a directory, not a file: {path}")
    with open(path, "rb") as handle:
        zip_start = handle.read(4) == b"PK\x03\x04"  # a torch.save file, whole or truncated
    if not zip_start and not _is_pre16_torch_file(path):
        raise ValueError(f"{path} is not a checkpoint: it is neither a torch.save file nor the reference code's "
                         "(torch's pre-1.6, non-zip torch.save) format; a plain pickle is never unpickled here, as "
                         "that can run code")
    try:
        with warnings.catch_warnings():  # torch's note on pre-1.6 files' pickle protocol is not for our users
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch wraps every failure of its restricted unpickler in the same preamble: tell a file that
        # names a non-allowlisted class (needs full unpickling, which can run code) from a damaged one.
        msg = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", msg) or re.search(r"[Uu]nsupported global:? ([\w.]+)", msg)
        if found or "allowed global" in msg:
            what = found.group(1) if found else "a Python object"
            raise ValueError(f"refusing to load {path}: it contains {what}, which only unrestricted unpickling "
                             "could build (that can run arbitrary code); only tensors and plain values are "
                             "accepted") from None
        detail = msg.split("WeightsUnpickler error:")[-1]
        detail = detail.split("Check the documentation")[0]
        raise ValueError(_corrupt(path, "damaged pickle data", detail)) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError,
            IndexError, TypeError) as exc:
        raise ValueError(_corrupt(path, type(exc).__name__, exc)) from None
    if not isinstance(obj, dict):
        raise ValueError(f"unrecognized checkpoint {path}: expected a dict, got {type(obj).__name__}")
    return obj


# torch's pre-1.6 (non-zip) format begins with this number, pickled (torch.serialization.MAGIC_NUMBER)
_PRE16_MAGIC = 0x1950a86a20f9469cfc6c


def _is_pre16_torch_file(path: Path) -> bool:
    """Whether the file starts with the pickled magic number of torch's pre-1.6 (non-zip) format; read without
    unpickling (the opcodes are only listed), so a plain pickle is recognised without running it."""
    try:
        with open(path, "rb") as handle:
            for position, (opcode, arg, _) in enumerate(pickletools.genops(handle)):
                if opcode.name.startswith(("LONG", "INT")):
                    return arg == _PRE16_MAGIC
                if position > 2 or opcode.name not in ("PROTO", "FRAME"):
                    return False
    except (ValueError, EOFError, OSError):  # not a pickle stream at all
        return False
    return False


def _wong_from_state(state: dict, path: Path, source: str) -> tuple[nn.Module, dict]:
    """Map a Sequential state dict (indices 0, 2, 5, 7) onto a ``wong_mnist`` model without normalization."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"unrecognized checkpoint {path}: its {source} entry is not a state dict")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    needed = [f"{i}.{p}" for i in (0, 2, 5, 7) for p in ("weight", "bias")]
    missing = [k for k in needed if k not in state]
    if missing or len(state) != len(needed):
        raise ValueError(f"checkpoint {path} is not Wong et al.'s MNIST CNN (arch wong_mnist): keys "
                         f"{sorted(state)[:8]} do not match {needed}")
    in_ch = state["0.weight"].shape[1]
    flat = state["5.weight"].shape[1]
    side = int(round(math.sqrt(flat / 32))) * 4  # flat = 32 * (H/4) * (W/4); reference images are square
    input_shape = (int(in_ch), side, side)
    num_classes = int(state["7.weight"].shape[0])
    model = build_model("wong_mnist", num_classes=num_classes, input_shape=input_shape)
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path} does not fit wong_mnist: {_one_line(exc)}") from None
    meta = {"arch": "wong_mnist", "dataset": None, "num_classes": num_classes, "input_shape": list(input_shape),
            "noise": None, "sigma": None, "normalization": {"mean": [0.0] * in_ch, "std": [1.0] * in_ch},
            "train_args": {}, "version": None, "format_version": None, "source": source}
    return model, meta


def load_checkpoint(path: str | os.PathLike, arch: str | None = None,
                    map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Load a model in eval mode and its metadata from any supported format (see module docstring).

    ``arch``, when given, must match the checkpoint (the reference formats are ``wong_mnist`` only).
    """
    if arch is not None and arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    path = Path(path)
    obj = read_checkpoint(path, map_location)
    if obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"checkpoint {path} has format_version {version!r}; this wsmooth_ext reads "
                             f"versions up to {FORMAT_VERSION} (upgrade the package)")
        meta = dict(obj.get("metadata") or {})
        if arch is not None and meta.get("arch") != arch:
            raise ValueError(f"checkpoint {path} holds arch {meta.get('arch')!r}, not the requested {arch!r}")
        if meta.get("arch") not in ARCHS:
            raise ValueError(f"checkpoint {path} names an unknown arch {meta.get('arch')!r}")
        norm = meta.get("normalization") or {}
        try:
            model = build_model(meta["arch"], num_classes=int(meta["num_classes"]),
                                input_shape=tuple(meta["input_shape"]), mean=norm.get("mean"), std=norm.get("std"))
            model.load_state_dict(obj["state_dict"], strict=True)
        except (KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"checkpoint {path} is inconsistent: {_one_line(exc)}") from None
    elif "net" in obj or "state_dict" in obj:
        if arch not in (None, "wong_mnist"):
            raise ValueError(f"checkpoint {path} is in the reference code's format, which holds arch "
                             f"wong_mnist, not {arch!r}")
        if "net" in obj:
            model, meta = _wong_from_state(obj["net"], path, "net")
        else:
            states = obj["state_dict"]
            if not isinstance(states, (list, tuple)) or not states:
                states = [states]  # a plain state dict under "state_dict" is read the same way
            model, meta = _wong_from_state(states[0], path, "state_dict")
    else:
        raise ValueError(f"unrecognized checkpoint {path}: keys {sorted(map(str, obj))[:6]} are none of "
                         f"'format' (wsmooth_ext), 'net' (Levine & Feizi), 'state_dict' (Wong et al.)")
    _check_finite(model, path)
    model.eval()
    return model, meta


def load_ensemble(paths, arch: str | None = None, map_location: Any = "cpu") -> tuple[Ensemble, list[dict]]:
    """One base classifier over the models of ``paths`` (a list of checkpoints in any format
    :func:`load_checkpoint` reads): an :class:`~wsmooth_ext.inputs.models.Ensemble` (log of the mean of the
    members' softmax) in eval mode, and each checkpoint's metadata in the order given.

    The members must agree on ``num_classes`` and ``input_shape`` (ValueError naming the checkpoint that
    differs); ``arch``, when given, must match every checkpoint. Noise and σ are the caller's business: each
    member's are in its metadata.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths must name at least one checkpoint, got none")
    seen = {}
    for path in paths:
        key = os.path.realpath(path)
        if key in seen:
            also = "" if str(seen[key]) == str(path) else f" (also as {seen[key]})"
            raise ValueError(f"checkpoint {path} is given twice{also}: each member of an ensemble counts once")
        seen[key] = path
    models, metas = [], []
    for path in paths:
        model, meta = load_checkpoint(path, arch=arch, map_location=map_location)
        for key in ("num_classes", "input_shape"):
            if metas and meta.get(key) != metas[0].get(key):
                raise ValueError(f"checkpoint {path} has {key} {meta.get(key)}, checkpoint {paths[0]} has "
                                 f"{metas[0].get(key)}: the members of an ensemble must agree")
        models.append(model)
        metas.append(meta)
    return Ensemble(models).eval(), metas


def _check_finite(model: nn.Module, path: Path) -> None:
    """A model with NaN or infinite weights answers nothing meaningful (a diverged training run): refuse it."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"checkpoint {path} holds non-finite weights ({bad} NaN or infinite values in {name}), "
                             "e.g. from a diverged training run; refusing to use it")


def load_training_state(path: str | os.PathLike) -> tuple[dict, dict, dict | None]:
    """``(state_dict, metadata, training_state or None)`` of one of our checkpoints, for resuming training."""
    path = Path(path)
    obj = read_checkpoint(path)
    if obj.get("format") != FORMAT:
        raise ValueError(f"cannot resume from {path}: not a wsmooth_ext checkpoint")
    return obj["state_dict"], dict(obj.get("metadata") or {}), obj.get("training_state")


def trained_epochs(path: str | os.PathLike) -> int:
    """The number of epochs a training checkpoint has finished: 0 where there is no file yet; ValueError for a
    file that holds no training state (a checkpoint not written by training, which cannot be continued)."""
    path = Path(path)
    if not path.exists():
        return 0
    state = load_training_state(path)[2]
    if state is None:
        raise ValueError(f"{path} holds no training state: it was not written by training, so it cannot be "
                         "continued")
    return int(state["epoch"])
