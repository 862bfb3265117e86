"""Scale-out with torchrun: sharding images across processes and merging their logs.

Under ``torchrun --nproc-per-node K -m wsmooth_ext.cli certify ...`` (or across nodes) each process takes the
images ``indices[rank::world_size]`` and writes its own part log ``OUT.part-RANK-of-WORLD.tsv`` (resumable
like any log). Every image's noise is keyed by its dataset index, so a row does not depend on which process
computed it; rank 0 then merges the parts into OUT in the order of a single-process run, which therefore
equals the single-process log row for row (up to the ``time`` column).

Without torchrun's environment (``WORLD_SIZE`` unset or 1) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


class PeerFailedError(RuntimeError):
    """Another process of the torchrun job failed (its own error is reported by that process)."""


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """The process's place in a torchrun job, from RANK / WORLD_SIZE / LOCAL_RANK (single process if unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def device_for(ctx: DistContext, requested: str | None) -> torch.device:
    """The device of this process: one GPU per local rank under torchrun when CUDA is there."""
    if requested is not None:
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None and ctx.enabled:
            return torch.device("cuda", ctx.local_rank)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank if ctx.enabled else torch.cuda.current_device())
    return torch.device("cpu")


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the torchrun job: NCCL between GPUs, gloo on CPUs. No-op for a single process."""
    if not ctx.enabled or torch.distributed.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled and torch.distributed.is_initialized():
        torch.distributed.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard(indices: list[int], ctx: DistContext) -> list[int]:
    """This process's share of the images: every world_size-th index, starting at its rank."""
    return list(indices[ctx.rank::ctx.world_size])


def part_path(out_path: str | os.PathLike, ctx: DistContext) -> Path:
    """Where this process logs its shard: OUT.part-RANK-of-WORLD.tsv beside OUT."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}.part-{ctx.rank}-of-{ctx.world_size}{out.suffix or '.tsv'}")


def all_part_paths(out_path: str | os.PathLike, world_size: int) -> list[Path]:
    return [part_path(out_path, DistContext(rank, world_size)) for rank in range(world_size)]


def merge_part_logs(out_path: str | os.PathLike, parts: list[Path], order: list[int]) -> int:
    """Write OUT = one header + the parts' rows in the order of ``order`` (the single-process image order).

    Every part must have the same header and together they must hold one row for each index of ``order``
    (a missing or duplicated image is an error, and OUT is then left as it was). OUT is replaced atomically.
    Returns the number of rows written.
    """
    header = None
    rows: dict[int, str] = {}
    for part in parts:
        lines = part.read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            raise ValueError(f"{part} is empty")
        if header is None:
            header = lines[0]
        elif lines[0] != header:
            raise ValueError(f"{part} has a different header from {parts[0]}")
        idx_col = header.rstrip("\n").split("\t").index("idx")
        for line in lines[1:]:
            if not line.endswith("\n"):
                continue  # a half-written last line: that image is not done
            idx = int(line.split("\t")[idx_col])
            if idx in rows:
                raise ValueError(f"image {idx} appears in more than one part log")
            rows[idx] = line
    missing = [i for i in order if i not in rows]
    if missing:
        raise ValueError(f"{len(missing)} images have no row in the part logs (first: {missing[:3]}); "
                         "rerun with --resume to finish them")
    out = Path(out_path)
    tmp = out.with_name(out.name + ".merging")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(header)
        for i in order:
            handle.write(rows[i])
    os.replace(tmp, out)
    return len(order)


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
