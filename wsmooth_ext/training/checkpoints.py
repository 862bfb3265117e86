"""Per-epoch checkpoints of a training run and resuming from them: a run continues only with the settings it
was started with (``train_args``), so a resumed run equals an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..inputs.checkpoint import load_training_state, save_checkpoint


def resume(model: nn.Module, opt, path, train_args: dict, fixed: tuple, device: torch.device,
           metadata: dict | None = None) -> tuple[int, list[dict]]:
    """Load model and optimizer state from ``path``; (epochs done, history). ValueError naming the first of
    ``fixed`` that the checkpoint's ``train_args`` lack or record with a value other than ``train_args``'s, the
    first entry of ``metadata`` (e.g. the dataset) the checkpoint records otherwise, more epochs done than
    ``train_args["epochs"]``, or when the architecture or the weights do not fit."""
    state, meta, training_state = load_training_state(path)
    if training_state is None:
        raise ValueError(f"cannot resume from {path}: it holds no training state (not written by train)")
    old = meta.get("train_args") or {}
    for key in fixed:
        if key not in old:
            raise ValueError(f"cannot resume from {path}: its train_args lack {key!r}, a setting a resumed run "
                             "must keep")
        was = old[key]
        if was != train_args[key]:
            raise ValueError(f"cannot resume from {path}: {key} was {was!r} there, now "
                             f"{train_args[key]!r} (only epochs may change)")
    for key, value in (metadata or {}).items():
        if key in meta and meta[key] != value:
            raise ValueError(f"cannot resume from {path}: {key} was {meta[key]!r} there, now {value!r}")
    if int(training_state["epoch"]) > train_args["epochs"]:
        raise ValueError(f"cannot resume from {path}: it has done {training_state['epoch']} epochs, more than the "
                         f"{train_args['epochs']} asked for (epochs may only grow)")
    if meta.get("arch") != getattr(model, "arch", None):
        raise ValueError(f"cannot resume from {path}: it holds arch {meta.get('arch')!r}, the model is "
                         f"{getattr(model, 'arch', type(model).__name__)!r}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"cannot resume from {path}: the model does not fit it ({str(exc).splitlines()[0]})") from None
    opt.load_state_dict(training_state["optimizer"])
    for group_state in opt.state.values():  # optimizer tensors must follow the model's device
        for k, v in group_state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                group_state[k] = v.to(device)
    return int(training_state["epoch"]), list(training_state["history"])


def resume_if_present(model, opt, path, train_args, fixed, device, metadata=None):
    """:func:`resume` if ``path`` exists, else None (a fresh start)."""
    if not Path(path).exists():
        return None
    return resume(model, opt, path, train_args, fixed, device, metadata)


def save_epoch(path, model: nn.Module, opt, metadata: dict | None, noise: str, sigma: float, train_args: dict,
               epoch: int, history: list[dict]) -> None:
    """The checkpoint after ``epoch`` epochs: weights, metadata (with ``train_args``), optimizer and history."""
    meta = dict(metadata or {})
    meta.update(noise=noise, sigma=sigma, train_args=train_args)
    state = {"epoch": epoch, "optimizer": opt.state_dict(), "history": history}
    save_checkpoint(path, model, meta, training_state=state)
