"""Runners of ``certify`` and ``predict`` over a dataset: one row per image appended to a resumable log.

The log format and its resume rules are in :mod:`wsmooth_ext.runs.logfile`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..infra.progress import progress_bar
from ..core.smooth import Smooth, _check_int, check_vote_budget
from ..core.statistics import _check_alpha
from .logfile import (CERTIFY_COLUMNS, PREDICT_COLUMNS, append_rows, format_field, identity_settings, log_for_run,
                      parse_field)


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
             resume, progress, identity) -> list[dict]:
    labels, indices = _check_inputs(images, labels, indices, smooth.num_classes)
    settings = {**settings, **identity_settings(identity)}
    all_labels = labels.tolist()
    label_of = {i: int(all_labels[i]) for i in indices}
    with log_for_run(Path(out_path), columns, settings, label_of, resume) as (handle, existing), \
            progress_bar(total=len(indices), desc=kind, enabled=progress, unit="img") as bar:
        done = {row["idx"] for row in existing}
        todo = [i for i in indices if i not in done]
        rows = list(existing)
        bar.update(len(indices) - len(todo))
        for start in range(0, len(todo), group):
            chunk = todo[start:start + group]
            idx = torch.tensor(chunk, dtype=torch.int64)
            began = time.perf_counter()
            results = make_rows(images[idx], labels[idx], idx)
            seconds = (time.perf_counter() - began) / len(chunk)
            lines = []
            for i, result in zip(chunk, results):
                row = {"idx": i, "label": label_of[i], **result, "time": round(seconds, 4), **settings}
                row["correct"] = int(row["predict"] == row["label"])
                lines.append("\t".join(format_field(row[c]) for c in columns) + "\n")
                rows.append({c: parse_field(format_field(row[c])) for c in columns})
            append_rows(handle, "".join(lines))
            bar.update(len(chunk))
    return rows


def certify_to_log(smooth: Smooth, images: torch.Tensor, labels, indices, out_path, *, n0: int, n: int,
                   alpha: float, batch_size: int, resume: bool = False, progress: bool = True,
                   identity: dict | None = None) -> list[dict]:
    """Certify ``images[i]`` for each i in ``indices`` (key = i) and append one row per image to ``out_path``.

    Returns every row of the log (resumed ones included) as dicts. ``identity``: what produced the run
    (``model_sha256``: :func:`~wsmooth_ext.inputs.checkpoint.checkpoints_sha256`, ``dataset``, ``split``,
    ``precision``), recorded in every row and checked on ``resume``. Format and
    resume rules: :mod:`wsmooth_ext.runs.logfile`.
    """
    settings = {"n0": n0, "n": n, "alpha": float(alpha), "certificate": smooth.certificate,
                "noise": smooth.noise, "sigma": smooth.sigma, "seed": smooth.seed}

    def make_rows(x, y, keys):
        records = smooth.certify_batch(x, n0, n, alpha, batch_size, keys=keys, labels=y)
        return [{"predict": r.prediction, "radius": r.radius, "radius_l1": r.radius_l1, "p_lower": r.p_lower,
                 "count_top": r.count_top, "count_label": r.count_label} for r in records]

    _validate_counts(n0=n0, n=n, alpha=alpha, batch_size=batch_size)  # before touching the log file
    check_vote_budget("n0 + n", n0 + n)
    group = max(1, batch_size // max(n0, n))
    return _run_log("certify", smooth, images, labels, indices, out_path, settings, CERTIFY_COLUMNS, group,
                    make_rows, resume, progress, identity)


def predict_to_log(smooth: Smooth, images: torch.Tensor, labels, indices, out_path, *, n: int, alpha: float,
                   batch_size: int, resume: bool = False, progress: bool = True,
                   identity: dict | None = None) -> list[dict]:
    """Cohen's ``predict`` for ``images[i]``, i in ``indices`` (key = i), one row per image in ``out_path``.

    ``identity`` as for :func:`certify_to_log`."""
    settings = {"n": n, "alpha": float(alpha), "noise": smooth.noise, "sigma": smooth.sigma, "seed": smooth.seed}

    def make_rows(x, y, keys):
        preds, counts, pvalues = smooth.predict_batch_details(x, n, alpha, batch_size, keys=keys)
        top2 = counts.topk(2, dim=1).values
        return [{"predict": int(preds[b]), "count_top": int(top2[b, 0]), "count_second": int(top2[b, 1]),
                 "pvalue": pvalues[b], "count_label": int(counts[b, int(y[b])])} for b in range(x.shape[0])]

    _validate_counts(n=n, alpha=alpha, batch_size=batch_size)
    check_vote_budget("n", n)
    group = max(1, batch_size // n)
    return _run_log("predict", smooth, images, labels, indices, out_path, settings, PREDICT_COLUMNS, group,
                    make_rows, resume, progress, identity)


def _validate_counts(alpha, batch_size, **counts):
    for name, value in counts.items():
        _check_int(name, value)
    _check_int("batch_size", batch_size)
    _check_alpha(alpha)
