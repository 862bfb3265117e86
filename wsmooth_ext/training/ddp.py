"""Data-parallel plumbing of the training loop: joining the group, the DDP wrapper, sums over ranks, and
agreement (every rank learns whether a step failed anywhere, instead of waiting forever)."""

from __future__ import annotations

import torch
from torch import nn

from ..infra.distributed import DistContext, init_process_group


def join_group(ctx: DistContext, device: torch.device) -> None:
    init_process_group(ctx, device)  # no-op if the caller has joined already
    group_rank, group_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if (group_rank, group_size) != (ctx.rank, ctx.world_size):
        raise ValueError(f"dist_ctx says rank {ctx.rank} of {ctx.world_size}, the process group rank "
                         f"{group_rank} of {group_size}")


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index if device.index is not None
                                                          else torch.cuda.current_device()])
    return DistributedDataParallel(model)


def _collective_device(device: torch.device) -> torch.device:
    # NCCL reduces CUDA tensors only, gloo CPU tensors
    return device if device.type == "cuda" else torch.device("cpu")


def sum_over_ranks(device: torch.device, *values: float) -> list[float]:
    """The sums over all ranks of ``values`` (float64: exact for counts, and the loss is only reported)."""
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device(device))
    torch.distributed.all_reduce(t)
    out = t.tolist()
    return [int(v) if isinstance(x, int) else v for v, x in zip(out, values)]


def agree(ctx: DistContext, device: torch.device, error: Exception | None, value: int, mismatch: str) -> None:
    """Every rank reports whether its step succeeded and its ``value``; all raise if any failed or the values
    differ (a rank's own error is raised as is, the others say a peer failed)."""
    t = torch.tensor([0 if error else 1, value, -value], dtype=torch.int64, device=_collective_device(device))
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    ok, low, high = int(t[0]), int(t[1]), -int(t[2])
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError("another process failed (its error is in its output); stopping")
    if low != high:
        raise RuntimeError(f"{mismatch}: from {low} to {high}")


def on_every_rank(ctx: DistContext, device: torch.device, step, value_of, mismatch: str, *, main_only=False):
    """Run ``step()`` (on rank 0 alone with ``main_only``), then :func:`agree` on its success and on
    ``value_of(result)``; returns the result. Without a group it is just ``step()``."""
    if not ctx.enabled:
        return step()
    error, result = None, None
    try:
        if ctx.is_main or not main_only:
            result = step()
    except Exception as exc:  # noqa: BLE001 - re-raised by agree once the peers know
        error = exc
    agree(ctx, device, error, value_of(result), mismatch)
    return result
