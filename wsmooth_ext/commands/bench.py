"""`wsmooth bench`: time the fused noise op against the paper's pure-tensor procedure on this machine."""

from __future__ import annotations

import argparse
import os

HELP = "time the fused flow-noise op against the paper's pure-tensor procedure (same run, same inputs)"

EPILOG = """\
Reports the median time of wsmooth_ext.flow_noise (or pixel_noise) and of the reference procedure (repeat the
image, draw noise with torch's generator, apply the stencil with slices) for the given shape and number of
samples, their ratio, and the fused op's output write rate. Correctness is checked first (the op against the
Philox reference on a few samples). On the CPU it names the kernel path in use (avx512, avx2 or default: the
best this processor runs; ATEN_CPU_CAPABILITY=default|avx2|avx512 sets an upper bound, e.g. to compare them).
The full suites are in benchmarks/ (pytest-benchmark; bench_cpu_paths.py times every CPU path in one run).

example:  wsmooth bench --shape 1,3,32,32 --samples 10000 --device cpu
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--shape", default="1,1,28,28", help="image batch B,C,H,W (default 1,1,28,28)")
    parser.add_argument("--samples", type=int, default=10000, help="samples per image (default 10000)")
    parser.add_argument("--sigma", type=float, default=0.01, help="noise std, mass-normalized units (default 0.01)")
    from ..core.noises import NOISES

    parser.add_argument("--noise", choices=NOISES, default="flow-laplace", help="noise family (default flow-laplace)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")


def _parse_shape(text: str) -> tuple[int, int, int, int]:
    from ..cli import UserError

    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise UserError(f"--shape must be four positive integers B,C,H,W, got {text!r}")
    return shape


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils import benchmark

    from ..core import noises
    from ..cli import UserError
    from ..core.ops import has_kernel, kernel_info
    from ..infra.allocator import allocator_state
    from ._common import resolve_device

    shape = _parse_shape(args.shape)
    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    sigma = noises.check_sigma(args.sigma, "--sigma")
    max_threads = os.cpu_count() or 1
    if args.threads is not None:
        if not 1 <= args.threads <= max_threads:  # torch crashes on absurd thread counts
            raise UserError(f"--threads must be in [1, {max_threads}] (the CPUs of this machine), got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    x = torch.rand(shape, dtype=getattr(torch, args.dtype), generator=torch.Generator().manual_seed(0)).to(device)
    family = noises.get(args.noise)

    def op(x, n):
        return family.sample(x, n, sigma, seed=0, sample_offset=0, keys=None)

    check = min(args.samples, 8)
    torch.testing.assert_close(op(x, check), family.sample_reference(x, check, sigma), rtol=1e-4, atol=1e-4)

    def timed(fn):
        def call():
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return benchmark.Timer(stmt="call()", globals={"call": call}).blocked_autorange(min_run_time=1.0).median

    ours = timed(lambda: op(x, args.samples))
    base = timed(lambda: family.sample_reference(x, args.samples, sigma, rng="torch"))
    written = x.numel() * args.samples * x.element_size()
    print(f"{args.noise} {list(shape)} x {args.samples} samples, {args.dtype}, {device} "
          f"({torch.get_num_threads()} threads, compiled kernel: {has_kernel(device)}):")
    if device.type == "cpu" and has_kernel(device):
        info = kernel_info()
        note = f" ({info['cpu_path_note']})" if info["cpu_path_note"] else ""
        print(f"  CPU path   {info['cpu_path']}{note}")
        print(f"  allocator  {allocator_state()}")
    print(f"  fused op   {ours * 1e3:10.2f} ms   ({written / ours / 1e9:.1f} GB/s written)")
    print(f"  reference  {base * 1e3:10.2f} ms")
    print(f"  speed-up   {base / ours:10.1f}x")
    return 0
