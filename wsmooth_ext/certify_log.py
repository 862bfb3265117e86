"""Cohen-format, resumable TSV logs of ``certify`` and ``predict`` runs.

Certify logs have the header of Cohen et al.'s ``certify.py`` first — ``idx label predict radius correct
time`` — so existing analysis scripts read them, then extra columns (``CERTIFY_COLUMNS``). Predict logs
follow Cohen's ``predict.py`` — ``idx label predict correct time`` — then extras (``PREDICT_COLUMNS``).
``radius`` is the certified W1 radius with the L2 ground metric (mass-normalized units), ``radius_l1`` the
same with the L1 ground metric; ``predict`` is -1 (ABSTAIN) when abstaining; ``time`` is the wall-clock
seconds spent on the image; floats are written with ``repr`` (exact, never rounded up).

Rows are appended one per image and flushed at once. Files are never truncated or overwritten:

* the log must not exist (or be empty) unless ``resume=True``;
* with ``resume=True`` the header and every existing row's settings (n0, n, alpha, certificate, noise,
  sigma, seed) must equal this run's, the labels must agree, and images whose ``idx`` is already logged
  are skipped. A half-written last line (an interruption mid-write) is removed and its image redone;
  per-image RNG keys (the dataset index) make the redone row equal to what the interrupted run would have
  written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .progress import progress_bar
from .smooth import Smooth, _check_int
from .statistics import _check_alpha

COHEN_CERTIFY_HEADER = ("idx", "label", "predict", "radius", "correct", "time")
COHEN_PREDICT_HEADER = ("idx", "label", "predict", "correct", "time")
CERTIFY_SETTINGS = ("n0", "n", "alpha", "certificate", "noise", "sigma", "seed")
PREDICT_SETTINGS = ("n", "alpha", "noise", "sigma", "seed")
CERTIFY_COLUMNS = COHEN_CERTIFY_HEADER + ("radius_l1", "p_lower", "count_top", "count_label") + CERTIFY_SETTINGS
PREDICT_COLUMNS = COHEN_PREDICT_HEADER + ("count_top", "count_second", "pvalue", "count_label") + PREDICT_SETTINGS


def format_field(value) -> str:
    """A value as a log field: '' for None, 0/1 for booleans, exact repr for floats."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse(text: str):
    """A log field back to int, float or str (empty → None)."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_log(path: str | os.PathLike) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a TSV log; a half-written last line is ignored. Values parsed to int/float/str."""
    columns, rows, _ = _read(Path(path))
    return columns, rows


def _read(path: Path) -> tuple[list[str], list[dict], int]:
    """Columns, complete rows, and the byte length of the complete part of the file."""
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]  # drop a half-written last line
    lines = complete.decode("utf-8").splitlines()
    if not lines:
        return [], [], len(complete)
    columns = lines[0].split("\t")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise ValueError(f"{path}: line {number} has {len(fields)} fields, the header has {len(columns)}; "
                             "the log is corrupt")
        rows.append({c: _parse(f) for c, f in zip(columns, fields)})
    return columns, rows, len(complete)


def open_log(path: Path, columns: tuple, settings: dict, labels: dict, resume: bool):
    """Validate an existing log, then open it for appending. Returns (file, existing rows).

    Shared by every row-per-image log (certify, predict, attack): the rules of the module docstring.
    """
    header = "\t".join(columns) + "\n"
    if path.is_dir():
        raise ValueError(f"out path {path} is a directory")
    exists = path.exists() and path.stat().st_size > 0
    if exists and not resume:
        raise FileExistsError(f"{path} already exists; pass resume=True (--resume) to continue it, or remove it "
                              "to start over")
    existing: list[dict] = []
    keep_bytes = 0
    if exists:
        data = path.read_bytes()
        if b"\n" not in data and header.encode().startswith(data):
            keep_bytes = 0  # only a half-written header: start the file again
        else:
            found, existing, keep_bytes = _read(path)
            if found != list(columns):
                raise ValueError(f"cannot resume {path}: its header {found} differs from this run's {list(columns)}")
            for row in existing:
                for key, value in settings.items():
                    if row[key] != _parse(format_field(value)):
                        raise ValueError(f"cannot resume {path}: it was written with {key}={row[key]!r}, this run "
                                         f"has {key}={value!r}")
                if row["idx"] in labels and row["label"] != labels[row["idx"]]:
                    raise ValueError(f"cannot resume {path}: image {row['idx']} is logged with label "
                                     f"{row['label']} but the dataset has label {labels[row['idx']]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "r+b" if exists else "wb")
    handle.seek(keep_bytes)
    handle.truncate()  # removes only a half-written last line (or header)
    if keep_bytes == 0:
        handle.write(header.encode())
        handle.flush()
    return handle, existing


def _check_inputs(images, labels, indices, num_classes):
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a 4-D tensor [N, C, H, W], got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.numel() != images.shape[0]:
        raise ValueError(f"labels must have one entry per image ({images.shape[0]}), got {labels.numel()}")
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < images.shape[0]]
    if bad:
        raise ValueError(f"indices must lie in [0, {images.shape[0]}), got {bad[:3]}")
    if len(set(indices)) != len(indices):
        raise ValueError("indices must not repeat")
    return labels, indices


def _run_log(kind, smooth: Smooth, images, labels, indices, out_path, settings, columns, group, make_rows,
             resume, progress) -> list[dict]:
    labels, indices = _check_inputs(images, labels, indices, smooth.num_classes)
    all_labels = labels.tolist()
    label_of = {i: int(all_labels[i]) for i in indices}
    handle, existing = open_log(Path(out_path), columns, settings, label_of, resume)
    done = {row["idx"] for row in existing}
    todo = [i for i in indices if i not in done]
    rows = list(existing)
    with handle, progress_bar(total=len(indices), desc=kind, enabled=progress, unit="img") as bar:
        bar.update(len(indices) - len(todo))
        for start in range(0, len(todo), group):
            chunk = todo[start:start + group]
            idx = torch.tensor(chunk, dtype=torch.int64)
            began = time.perf_counter()
            results = make_rows(images[idx], labels[idx], idx)
            seconds = (time.perf_counter() - began) / len(chunk)
            for i, result in zip(chunk, results):
                row = {"idx": i, "label": label_of[i], **result, "time": round(seconds, 4), **settings}
                row["correct"] = int(row["predict"] == row["label"])
                handle.write(("\t".join(format_field(row[c]) for c in columns) + "\n").encode())
                handle.flush()
                rows.append({c: _parse(format_field(row[c])) for c in columns})
            bar.update(len(chunk))
    return rows


def certify_to_log(smooth: Smooth, images: torch.Tensor, labels, indices, out_path, *, n0: int, n: int,
                   alpha: float, batch_size: int, resume: bool = False, progress: bool = True) -> list[dict]:
    """Certify ``images[i]`` for each i in ``indices`` (key = i) and append one row per image to ``out_path``.

    Returns every row of the log (resumed ones included) as dicts. See the module docstring for the format
    and the resume rules.
    """
    settings = {"n0": n0, "n": n, "alpha": float(alpha), "certificate": smooth.certificate,
                "noise": smooth.noise, "sigma": smooth.sigma, "seed": smooth.seed}

    def make_rows(x, y, keys):
        records = smooth.certify_batch(x, n0, n, alpha, batch_size, keys=keys, labels=y)
        return [{"predict": r.prediction, "radius": r.radius, "radius_l1": r.radius_l1, "p_lower": r.p_lower,
                 "count_top": r.count_top, "count_label": r.count_label} for r in records]

    _validate_counts(n0=n0, n=n, alpha=alpha, batch_size=batch_size)  # before touching the log file
    group = max(1, batch_size // max(n0, n))
    return _run_log("certify", smooth, images, labels, indices, out_path, settings, CERTIFY_COLUMNS, group,
                    make_rows, resume, progress)


def predict_to_log(smooth: Smooth, images: torch.Tensor, labels, indices, out_path, *, n: int, alpha: float,
                   batch_size: int, resume: bool = False, progress: bool = True) -> list[dict]:
    """Cohen's ``predict`` for ``images[i]``, i in ``indices`` (key = i), one row per image in ``out_path``."""
    settings = {"n": n, "alpha": float(alpha), "noise": smooth.noise, "sigma": smooth.sigma, "seed": smooth.seed}

    def make_rows(x, y, keys):
        preds, counts, pvalues = smooth.predict_batch_details(x, n, alpha, batch_size, keys=keys)
        top2 = counts.topk(2, dim=1).values
        return [{"predict": int(preds[b]), "count_top": int(top2[b, 0]), "count_second": int(top2[b, 1]),
                 "pvalue": pvalues[b], "count_label": int(counts[b, int(y[b])])} for b in range(x.shape[0])]

    _validate_counts(n=n, alpha=alpha, batch_size=batch_size)
    group = max(1, batch_size // n)
    return _run_log("predict", smooth, images, labels, indices, out_path, settings, PREDICT_COLUMNS, group,
                    make_rows, resume, progress)


def _validate_counts(alpha, batch_size, **counts):
    for name, value in counts.items():
        _check_int(name, value)
    _check_int("batch_size", batch_size)
    _check_alpha(alpha)
