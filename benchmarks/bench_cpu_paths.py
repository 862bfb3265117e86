"""The fused op on every CPU path this processor runs, against the paper's procedure, in one run.

Run: python benchmarks/bench_cpu_paths.py [--rounds 5] [--busy] [--shapes mnist,cifar] [--threads 1,2] [--timer cpu]

For each shape (1x1x28x28 and 1x3x32x32, 10^4 samples, flow-laplace sigma=0.01, float32) and thread count, every
round times the reference (wsmooth_ext.core.reference, rng="torch": repeat, torch's Laplace sampler, four slice
updates) and then the op with each runnable path forced in turn (ATEN_CPU_CAPABILITY, read at every call), so
ratios compare timings taken seconds apart under the same load. Correctness first: every path's output must
equal the default path's bit for bit, and the Philox reference's to rounding.

The floor: the path's generator alone (Philox4x32-10 + conversion with the log, into an L1-resident buffer, one
thread; _C.time_cpu_generator, which counts the thread's CPU time, so other jobs on the machine barely move it),
in draws per CPU-second. "achieved" is the op's draws per second per thread; its share of
the floor says what the stencil, the output write (31 MB for MNIST), page faults and threading cost.

--timer cpu times with the process's CPU time instead of the wall clock: with --threads 1 that is what each side
costs however busy the machine is (with more threads it adds up all threads, spinning ones included).
--busy starts one competing busy process (a Python spin loop) for the whole run, as another user's job would.
Every table line carries the 1-minute load average (os.getloadavg) read just after it was measured.
Like the wsmooth command, the run keeps freed memory for reuse (wsmooth_ext/infra/allocator.py), so neither side
pays page faults for its fresh output on every call; WSMOOTH_MALLOC=system measures with glibc's own policy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import wsmooth_ext
from wsmooth_ext.core import ops, reference
from wsmooth_ext.infra.allocator import retain_freed_memory

SHAPES = {"mnist": (1, 1, 28, 28), "cifar": (1, 3, 32, 32)}
SAMPLES = 10_000
SIGMA = 0.01
PATHS = ["avx512", "avx2", "default"]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl") if f in flags]
    return f"{name} ({', '.join(simd) or 'no AVX2'}), {os.cpu_count()} CPUs"


def force(path: str) -> None:
    os.environ["ATEN_CPU_CAPABILITY"] = path
    chosen = wsmooth_ext.kernel_info()["cpu_path"]
    assert chosen == path, f"asked for {path}, got {chosen}"


def check(paths: list[str], x: torch.Tensor) -> None:
    outs = {}
    for path in paths:
        force(path)
        outs[path] = wsmooth_ext.flow_noise(x, 64, SIGMA, seed=3)
    for path in paths:
        assert torch.equal(outs[path], outs["default"]), f"path {path} differs from default"
    ref = reference.flow_noise_reference(x.double(), 64, SIGMA, seed=3).float()
    torch.testing.assert_close(outs["default"], ref, rtol=1e-4, atol=1e-4)


def floor_draws_per_s(path: str, draws: int, noise: int) -> float:
    """Best of three single-thread runs of the generator alone over 2,000 streams."""
    streams = 2000
    return max(streams * draws / ops._C.time_cpu_generator(path, False, noise, draws, streams) for _ in range(3))


TIMERS = {"wall": time.perf_counter, "cpu": time.process_time}


def measure(shape, threads: int, paths: list[str], rounds: int, clock=time.perf_counter) -> dict:
    torch.set_num_threads(threads)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    times = {name: [] for name in ["reference", *paths]}
    for round_ in range(rounds + 1):  # round 0 warms up and is dropped
        start = clock()
        reference.flow_noise_reference(x, SAMPLES, SIGMA, rng="torch")
        if round_:
            times["reference"].append(clock() - start)
        for path in paths:
            force(path)
            start = clock()
            wsmooth_ext.flow_noise(x, SAMPLES, SIGMA, seed=round_)
            if round_:
                times[path].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case (median reported; default 5)")
    parser.add_argument("--busy", action="store_true", help="run one competing busy process during the run")
    parser.add_argument("--shapes", default="mnist,cifar", help="comma list of: " + ", ".join(SHAPES))
    parser.add_argument("--timer", choices=sorted(TIMERS), default="wall",
                        help="wall clock (default) or the process's CPU time (see above)")
    parser.add_argument("--threads", default="1,2", help="comma list of intra-op thread counts (default 1,2)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    shapes = [s for s in args.shapes.split(",") if s]
    if not shapes or any(s not in SHAPES for s in shapes):
        parser.error(f"--shapes must be a comma list of {', '.join(SHAPES)}, got {args.shapes!r}")
    try:
        thread_counts = [int(t) for t in args.threads.split(",") if t]
    except ValueError:
        thread_counts = []
    if not thread_counts or any(not 1 <= t <= (os.cpu_count() or 1) for t in thread_counts):
        parser.error(f"--threads must list counts in [1, {os.cpu_count()}], got {args.threads!r}")
    if not ops.has_kernel("cpu"):
        sys.exit("the compiled CPU kernel is not built")
    status = wsmooth_ext.kernel_info()["cpu_paths"]
    paths = [p for p in PATHS if status.get(p) == "runnable"]
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; paths: "
          + ", ".join(f"{p} {status.get(p, 'not compiled')}" for p in PATHS))
    print(f"allocator: {retain_freed_memory()}")  # as the wsmooth command does; WSMOOTH_MALLOC=system: glibc's own
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        print(f"competing busy process: {'yes (pid %d)' % busy.pid if busy else 'no'}; timer: {args.timer}; "
              f"load average at start {os.getloadavg()[0]:.2f}")
        for name in shapes:
            x = torch.rand(SHAPES[name], generator=torch.Generator().manual_seed(0))
            check(paths, x)
            c, h, w = SHAPES[name][1:]
            draws = c * ((h - 1) * w + h * (w - 1))
            floors = {p: floor_draws_per_s(p, draws, 0) for p in paths}
            philox = {p: floor_draws_per_s(p, draws, 1) for p in paths}
            print(f"\n{name} {list(SHAPES[name])} x {SAMPLES} samples ({draws * SAMPLES / 1e6:.1f} M draws), floor "
                  "per thread (generator alone, laplace / uniform i.e. Philox + convert): "
                  + "; ".join(f"{p} {floors[p] / 1e9:.2f} / {philox[p] / 1e9:.2f} G draws/s" for p in paths))
            print("| threads | path | reference ms | op ms | speed-up | achieved G draws/s per thread | % of floor "
                  "| load (1 min) |")
            print("|---|---|---|---|---|---|---|---|")
            for threads in thread_counts:
                medians = measure(SHAPES[name], threads, paths, args.rounds, TIMERS[args.timer])
                load = os.getloadavg()[0]
                for p in paths:
                    rate = draws * SAMPLES / medians[p] / threads
                    print(f"| {threads} | {p} | {medians['reference'] * 1e3:.1f} | {medians[p] * 1e3:.2f} | "
                          f"{medians['reference'] / medians[p]:.1f}x | {rate / 1e9:.2f} | "
                          f"{100 * rate / floors[p]:.0f}% | {load:.2f} |", flush=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
