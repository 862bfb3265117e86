"""Helpers shared by the benchmark suites."""

import torch

RESULTS: dict[tuple[str, str], dict] = {}  # (case, impl) -> {"mean": s, "median": s, "bytes": n}
FLOPS: dict[str, float] = {}  # case -> forward FLOPs of the base classifier per round (where it matters)

import os

# WSMOOTH_BENCH_DEVICES=cuda (a comma list) limits a run to some devices, e.g. to skip the CPU cases on a GPU host.
_AVAILABLE = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
_ASKED = [d for d in os.environ.get("WSMOOTH_BENCH_DEVICES", "").split(",") if d]
DEVICES = [d for d in _AVAILABLE if not _ASKED or d in _ASKED]


def sync(device: str) -> None:
    """Wait for queued GPU work so that timings cover it."""
    if device == "cuda":
        torch.cuda.synchronize()


# Peak DRAM bandwidth (bytes/s) of GPUs, from their vendors' data sheets; used when the driver does not report
# the memory clock (cudaDeviceProp.memoryClockRate is gone in CUDA 13). The longest matching name wins.
KNOWN_PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 NVL": 3.9e12,
    "H100 80GB HBM3": 3.35e12,   # SXM
    "H100 SXM": 3.35e12,
    "H100 PCIe": 2.0e12,
    "H100": 2.0e12,              # an H100 not named above: the PCIe card's figure, the lower one
    "GH200": 4.0e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100 80GB PCIe": 1.935e12,
    "A100": 1.555e12,            # 40 GB
    "L40S": 0.864e12,
    "L4": 0.3e12,
    "A10": 0.6e12,
    "T4": 0.32e12,
    "V100": 0.9e12,
    "RTX 4090": 1.008e12,
    "RTX 3090": 0.936e12,
}


def peak_bandwidth(device: int = 0) -> tuple[float | None, str]:
    """(peak DRAM bytes/s, where the figure comes from) of a CUDA device; (None, reason) if unknown."""
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0) or 0
    bus_bits = getattr(props, "memory_bus_width", 0) or 0
    if clock_khz > 0 and bus_bits > 0:
        # double data rate: two transfers per clock over bus_bits / 8 bytes
        peak = 2.0 * clock_khz * 1e3 * bus_bits / 8
        return peak, f"device properties: memory clock {clock_khz / 1e6:.3f} GHz x {bus_bits}-bit bus x 2 (DDR)"
    matches = [name for name in KNOWN_PEAK_BANDWIDTH if name.lower() in props.name.lower()]
    if matches:
        name = max(matches, key=len)
        return KNOWN_PEAK_BANDWIDTH[name], f"data-sheet table, entry '{name}' (the driver reports no memory clock)"
    return None, f"unknown: '{props.name}' reports no memory clock and is not in the table"
