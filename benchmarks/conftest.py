"""Shared pieces of the benchmark suites: devices, synchronization, and the ratio table printed at the end.

Every benchmark is paired with the reference measured in the same run; the summary prints
reference_time / our_time for each pair (and achieved write bandwidth where it is meaningful).
"""

import os

import pytest

from bench_common import FLOPS, RESULTS, peak_bandwidth
from wsmooth_ext.infra.allocator import retain_freed_memory

# as the wsmooth command does (WSMOOTH_MALLOC=system measures with the system's malloc policy instead)
ALLOCATOR = retain_freed_memory()


@pytest.fixture
def record(benchmark):
    """record(case, impl, fn, bytes_written=0): benchmark fn and remember its mean for the ratio table."""

    def run(case: str, impl: str, fn, bytes_written: int = 0):
        benchmark.group = case
        benchmark.name = f"{case}[{impl}]"
        benchmark.pedantic(fn, rounds=benchmark_rounds(case), iterations=1, warmup_rounds=1)
        RESULTS[(case, impl)] = {"mean": benchmark.stats.stats.mean, "median": benchmark.stats.stats.median,
                                 "bytes": bytes_written}

    return run


def benchmark_rounds(case: str) -> int:
    if os.environ.get("WSMOOTH_BENCH_ROUNDS"):  # fewer rounds for the slow CPU cases on a busy machine
        return int(os.environ["WSMOOTH_BENCH_ROUNDS"])
    return 10 if "cuda" in case else 5


def pytest_terminal_summary(terminalreporter):
    cases = sorted({case for case, _ in RESULTS})
    if not cases:
        return
    tr = terminalreporter
    peak, peak_source = (peak_bandwidth() if any("cuda" in case for case in cases) else (None, ""))
    tr.section("wsmooth_ext: ours vs reference (same run)")
    tr.write_line(f"allocator: {ALLOCATOR}")
    tr.write_line(f"{'case':58s} {'reference ms':>13s} {'ours ms':>9s} {'speed-up':>9s} {'ours GB/s':>10s} "
                  f"{'% of peak':>9s}")
    for case in cases:
        ref = RESULTS.get((case, "reference"))
        for impl in sorted(i for c, i in RESULTS if c == case and i != "reference"):
            ours = RESULTS[(case, impl)]
            label = case if impl == "ours" else f"{case} [{impl}]"
            gbps = ours["bytes"] / ours["median"] / 1e9 if ours["bytes"] else float("nan")
            # achieved write bandwidth as a share of the GPU's peak DRAM bandwidth (GPU cases only)
            share = f"{100 * gbps * 1e9 / peak:8.1f}%" if peak and "cuda" in case and ours["bytes"] else f"{'-':>9s}"
            if ref:
                tr.write_line(f"{label:58s} {ref['median'] * 1e3:13.2f} {ours['median'] * 1e3:9.2f} "
                              f"{ref['median'] / ours['median']:8.1f}x {gbps:10.1f} {share}")
            else:
                tr.write_line(f"{label:58s} {'-':>13s} {ours['median'] * 1e3:9.2f} {'-':>9s} {gbps:10.1f} {share}")
    for case in cases:
        if case in FLOPS:
            tr.write_line(f"{case}: achieved GFLOP/s of the base classifier (forward FLOPs / median time): " + ", ".join(
                f"{impl} {FLOPS[case] / RESULTS[(case, impl)]['median'] / 1e9:.1f}"
                for impl in sorted(i for c, i in RESULTS if c == case)))
    if peak_source:
        peak_text = f"{peak / 1e9:.0f} GB/s" if peak else "not known"
        tr.write_line(f"GPU peak DRAM bandwidth: {peak_text} ({peak_source}). GB/s counts the output written "
                      "once; reads of x are negligible beside it.")
