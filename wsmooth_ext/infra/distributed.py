"""Scale-out with torchrun: a process's place in the job, its device, the process group, and its shard.

Under ``torchrun --nproc-per-node K -m wsmooth_ext.cli certify ...`` (or across nodes) each process takes the
images ``indices[rank::world_size]`` and writes its own part log ``OUT.part-RANK-of-WORLD.tsv``; the runner
that merges them is :func:`wsmooth_ext.runs.sharded.run_sharded`.

Without torchrun's environment (``WORLD_SIZE`` unset or 1) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
