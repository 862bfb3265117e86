"""Running a row-per-image job sharded across the processes of a torchrun job, then merging the part logs.

Each process takes the images ``indices[rank::world_size]`` and logs them to its own part log
(``OUT.part-RANK-of-WORLD.tsv``, resumable like any log); rank 0 merges the parts into OUT in single-process
order, so the merged log equals a single-process run row for row (up to the ``time`` column): every image's
noise is keyed by its dataset index, not by the process that computed it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from ..infra.distributed import (DistContext, PeerFailedError, all_part_paths, barrier, context_from_env,
                           init_process_group, part_path, shard, shutdown)
from .logfile import merge_part_logs


def run_sharded(run_shard: Callable[[list[int], Path, DistContext], None], indices: list[int],
                out_path: str | os.PathLike, device: torch.device,
                merge_extra: Callable[[DistContext], None] | None = None) -> bool:
    """Run ``run_shard(indices, log_path, ctx)`` on this process's images; True where OUT is complete.

    A single process runs all of ``indices`` into OUT. Under torchrun each rank runs its shard into its own
    part log, the ranks agree that every shard succeeded (so none waits forever on a failed one), and rank 0
    merges the parts into OUT in single-process order, then calls ``merge_extra`` (e.g. for saved tensors).
    An error on any rank is raised on that rank; the others raise PeerFailedError.
    """
    ctx = context_from_env()
    if not ctx.enabled:
        run_shard(list(indices), Path(out_path), ctx)
        return True
    init_process_group(ctx, device)
    error: Exception | None = None
    try:
        run_shard(shard(indices, ctx), part_path(out_path, ctx), ctx)
    except Exception as exc:  # noqa: BLE001 - re-raised below, after the peers have been told
        error = exc
    ok = torch.tensor([0 if error else 1], dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    try:
        if error is not None:
            raise error
        if not ok.item():
            raise PeerFailedError("another process failed; the part logs are kept, rerun with --resume to continue")
        if ctx.is_main:
            merge_part_logs(out_path, all_part_paths(out_path, ctx.world_size), list(indices))
            if merge_extra is not None:
                merge_extra(ctx)
        barrier(ctx)
    finally:
        shutdown(ctx)
    return ctx.is_main
