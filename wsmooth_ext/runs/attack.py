"""Runner of a Wasserstein attack over a dataset: one log row per image, plus (optionally) the images themselves.

Each row records the clean and adversarial predictions, the nominal radius, and the exact W1 distances of the
returned example (linear programs, :mod:`wsmooth_ext.core.wasserstein`). The optional tensor file ``save_adv``
holds ``{"clean", "adv", "idx"}`` with rows aligned to the log.

Its settings columns are those of the attack that ran and nothing else (``attacks.registry.log_settings``): the
schedule and the settings it takes, and the smoothed target's only when it attacked a smoothed classifier. A log
of the older layout, which recorded every attack's settings in every log, is refused on resume
(:func:`older_layout`) instead of being compared column by column.

Commit order keeps every state resumable: after each batch the tensor file is replaced first (atomically, so
it always holds a prefix of the attacked images), then the batch's rows are appended to the log. A kill
between the two leaves the tensor file ahead of the log; a resume drops its extra rows and redoes the batch.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from pathlib import Path

import torch

from ..inputs.checkpoint import save_torch_file
from ..infra.progress import progress_bar
from .logfile import (IDENTITY_COLUMNS, append_rows, changed_setting, format_field, identity_settings, log_for_run,
                      read_log)

ATTACK_HEADER = ("idx", "label", "predict", "radius", "w1", "success", "time")
COLUMNS_EXTRA = ("adv_predict", "w1_l1", "iterations", "mass_change", "channel_gap")


# what a caller records of a smoothed target besides its SmoothedTarget: the Smooth's noise, sigma and seed
SMOOTH_COLUMNS = ("noise", "sigma", "seed")


def older_layout(columns: list[str], rows: list[dict]) -> str | None:
    """How the log with ``columns`` and ``rows`` shows it was written by the layout before each attack log
    recorded only its attack's settings (every attack's settings in every log, the smoothed target's in plain
    logs too), in words; None where it does not."""
    from ..attacks.registry import ATTACKS, SETTINGS
    from ..attacks.target import LOGGED

    names = [s.name for s in SETTINGS if s.name in columns]
    first = rows[0] if rows else {}
    spec = ATTACKS.get(first.get("method"))
    if spec is not None:
        stray = [name for name in names if not spec.takes(name)]
        if stray:
            return f"it records {', '.join(stray)}, which {spec.name} does not take"
    elif names and not any(all(other.takes(name) for name in names) for other in ATTACKS.values()):
        return f"it records settings of several attacks ({', '.join(names)})"
    if first.get("mode") == "plain":
        stray = [c for c in SMOOTH_COLUMNS + LOGGED if c in columns]
        if stray:
            return f"it records {', '.join(stray)} of a plain attack"
    return None


def attack_columns(settings: dict) -> tuple:
    """The columns of an attack log: the header analyses look for, the per-example extras, the settings and
    the identity of the run."""
    return ATTACK_HEADER + COLUMNS_EXTRA + tuple(settings) + IDENTITY_COLUMNS


def save_adversarial(path: Path, clean: list, adv: list, idx: list) -> None:
    """Replace ``path`` atomically with the concatenated clean/adversarial images and their indices (its folder
    is created like the log's); a failed write is an OSError naming ``path`` (checkpoint.save_torch_file)."""
    save_torch_file({"clean": torch.cat(clean) if clean else torch.empty(0),
                     "adv": torch.cat(adv) if adv else torch.empty(0),
                     "idx": torch.tensor(idx, dtype=torch.int64)}, path, "--save-adv tensors")


def load_adversarial(path: Path) -> dict:
    """A ``save_adv`` file, read weights-only; ValueError (one line) if it is not one."""
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        first = " ".join(str(exc).split())[:160]
        raise ValueError(f"{path} is not a file of adversarial examples written by wsmooth attack ({first})") from None
    if (not isinstance(saved, dict) or set(saved) != {"clean", "adv", "idx"}
            or not all(isinstance(v, torch.Tensor) for v in saved.values())):
        raise ValueError(f"{path} is not a file of adversarial examples written by wsmooth attack")
    return saved


def merge_adversarial(save_adv: Path, parts: list[Path], indices: list[int]) -> None:
    """Write ``save_adv`` from the part files of a sharded run, rows in the order of ``indices``."""
    loaded = [load_adversarial(p) for p in parts]
    where = {int(i): (k, r) for k, part in enumerate(loaded) for r, i in enumerate(part["idx"].tolist())}
    clean = [loaded[where[i][0]]["clean"][where[i][1]:where[i][1] + 1] for i in indices]
    adv = [loaded[where[i][0]]["adv"][where[i][1]:where[i][1] + 1] for i in indices]
    save_adversarial(save_adv, clean, adv, list(indices))


def example_distances(clean: torch.Tensor, adv: torch.Tensor) -> tuple[float, float, float, float]:
    """(W1 with L2 ground, W1 with L1 ground, relative mass change, channel-share gap) of one example."""
    from ..core.wasserstein import wasserstein_distance

    s_clean, s_adv = float(clean.sum()), float(adv.sum())
    share_c = clean.sum(dim=(1, 2)).double() / s_clean
    share_a = adv.sum(dim=(1, 2)).double() / s_adv
    gap = float((share_c - share_a).abs().sum())
    w1 = wasserstein_distance(clean, adv, ground="l2", on_mismatch="rescale")
    w1_l1 = wasserstein_distance(clean, adv, ground="l1", on_mismatch="rescale")
    return w1, w1_l1, s_adv / s_clean - 1.0, gap


def _resumed_tensors(save_adv: Path, existing: list[dict], log: Path):
    if not save_adv.exists():
        raise ValueError(f"cannot resume --save-adv: {save_adv} is missing but {log} has rows")
    saved = load_adversarial(save_adv)
    idx_saved = saved["idx"].tolist()
    if idx_saved[:len(existing)] != [r["idx"] for r in existing]:
        raise ValueError(f"cannot resume: {save_adv} does not match the rows of {log}")
    n = len(existing)  # rows beyond the log's (a batch interrupted before its rows were logged) are redone
    return [saved["clean"][:n]], [saved["adv"][:n]], idx_saved[:n]


def attack_to_log(attack, images: torch.Tensor, labels: torch.Tensor, indices: list[int], out: Path,
                  save_adv: Path | None, settings: dict, device: torch.device, *, identity: dict | None = None,
                  resume: bool = False, attack_batch: int = 100, progress: bool = True) -> None:
    """Attack ``images[i]`` for i in ``indices`` (key = i) and append one row per image to ``out``.

    ``settings`` (and ``identity``: what produced the run, e.g. the checkpoint's hash) are recorded in every
    row and must match on ``resume``: ``mode``, for a smoothed target its ``noise``, ``sigma`` and ``seed``, and
    the attack's settings (``attacks.registry.log_settings``). The attack's own smoothed-target settings
    (``SmoothedTarget.logged``: ``n_grad``, ``n_test``, ``alpha``, ``success_test``; where ``settings`` names
    them, in their place) and whether tensors are saved (``adv_saved``) are set here, so every caller logs
    them as the attack has them. See the module docstring for ``save_adv``.
    """
    if save_adv is not None and save_adv.exists() and not resume:
        raise FileExistsError(f"{save_adv} already exists; pass --resume or remove it")
    smoothing = getattr(attack, "smoothing", None) if getattr(attack, "smoothed", False) else None
    settings = {**settings, **(smoothing.logged() if smoothing is not None else {}), "adv_saved": save_adv is not None}
    columns = attack_columns(settings)
    if resume and out.exists() and out.stat().st_size:
        found, rows = read_log(out)
        if found and found != list(columns):
            older = older_layout(found, rows)
            if older:
                raise ValueError(f"cannot resume {out}: it was written by an older layout of the attack log, which "
                                 f"recorded every attack's settings ({older}), and cannot be continued: write a "
                                 "new log")
            changed = changed_setting(out, rows[0], settings) if rows else None
            if changed:  # another method or target: the setting that differs, not the columns that follow from it
                raise ValueError(changed)
        if save_adv is None and any(row.get("adv_saved") == 1 for row in rows):  # its tensors can never be complete
            raise ValueError(f"cannot resume {out}: it was written with --save-adv, so its adversarial examples "
                             "must be saved along: pass the same --save-adv")
    settings = {**settings, **identity_settings(identity)}
    label_of = {i: int(labels[i]) for i in indices}
    companions = () if save_adv is None else (save_adv,)
    with log_for_run(out, columns, settings, label_of, resume, companions) as (handle, existing):
        _attack_rows(attack, images, labels, indices, handle, existing, out, save_adv, columns, settings, device,
                     attack_batch, progress)


def _attack_rows(attack, images, labels, indices, handle, existing, out, save_adv, columns, settings, device,
                 attack_batch, progress) -> None:
    clean_saved, adv_saved, idx_saved = [], [], []
    if save_adv is not None and existing:
        clean_saved, adv_saved, idx_saved = _resumed_tensors(save_adv, existing, out)
    done = {row["idx"] for row in existing}
    todo = [i for i in indices if i not in done]
    with progress_bar(total=len(indices), desc="attack", enabled=progress, unit="img") as bar:
        bar.update(len(indices) - len(todo))
        for start in range(0, len(todo), attack_batch):
            chunk = todo[start:start + attack_batch]
            idx = torch.tensor(chunk, dtype=torch.int64)
            x, y = images[idx].to(device), labels[idx].to(device)
            began = time.perf_counter()
            result = attack.attack(x, y, keys=idx)
            seconds = (time.perf_counter() - began) / len(chunk)
            adv = result.adversarial.cpu()
            lines = [_row_line(columns, settings, i, int(labels[i]), b, result, x[b].cpu(), adv[b], seconds)
                     for b, i in enumerate(chunk)]
            if save_adv is not None:  # tensors first: the log never holds a row the tensor file lacks
                clean_saved.append(x.cpu())
                adv_saved.append(adv)
                idx_saved += chunk
                save_adversarial(save_adv, clean_saved, adv_saved, idx_saved)
            append_rows(handle, "".join(lines))
            bar.update(len(chunk))
    if save_adv is not None and not todo and not existing:
        save_adversarial(save_adv, [], [], [])


def _row_line(columns, settings, i, label, b, result, clean, adv, seconds) -> str:
    success = bool(result.success[b])
    if success and int(result.iterations[b]) > 0:
        w1, w1_l1, mass_change, gap = example_distances(clean, adv)
    else:  # wrong from the start: distance 0; never fooled: no adversarial example
        w1 = w1_l1 = 0.0 if success else math.inf
        mass_change, gap = float(adv.sum() / clean.sum()) - 1.0, 0.0
    row = {"idx": i, "label": label, "predict": int(result.clean_prediction[b]), "radius": float(result.radius[b]),
           "w1": w1, "success": int(success), "time": round(seconds, 4),
           "adv_predict": int(result.adversarial_prediction[b]), "w1_l1": w1_l1,
           "iterations": int(result.iterations[b]), "mass_change": mass_change, "channel_gap": gap,
           **settings}
    return "\t".join(format_field(row[c]) for c in columns) + "\n"
