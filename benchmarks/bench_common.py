"""Helpers shared by the benchmark suites."""

import torch

RESULTS: dict[tuple[str, str], dict] = {}  # (case, impl) -> {"mean": s, "median": s, "bytes": n}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def sync(device: str) -> None:
    """Wait for queued GPU work so that timings cover it."""
    if device == "cuda":
        torch.cuda.synchronize()
