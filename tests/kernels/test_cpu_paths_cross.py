"""The portable CPU path on another architecture: built for AArch64 (NEON) with a cross compiler, run under
qemu, its output must equal this machine's op bit for bit. Skips unless `aarch64-linux-gnu-g++` and
`qemu-aarch64` are installed (Debian: apt-get install g++-aarch64-linux-gnu qemu-user)."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import wsmooth_ext
from wsmooth_ext.core import distributions, ops

ROOT = Path(__file__).resolve().parents[2]
CXX, QEMU = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
SYSROOT = Path("/usr/aarch64-linux-gnu")

pytestmark = [
    pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built"),
    pytest.mark.skipif(CXX is None or QEMU is None, reason="needs aarch64-linux-gnu-g++ and qemu-aarch64"),
]


def _expected(kind: str, pixel: bool, dtype: torch.dtype) -> torch.Tensor:
    """What tests/cross/portable_path_main.cpp computes, through the op on this machine."""
    x = (torch.arange(3 * 7 * 9) % 17).to(dtype).div(16).view(1, 3, 7, 9).repeat(2, 1, 1, 1)
    op = wsmooth_ext.pixel_noise if pixel else wsmooth_ext.flow_noise
    return op(x, 4, 0.05, noise=kind, seed=2 ** 40 + 7, sample_offset=9, keys=torch.tensor([5, 2 ** 34 + 1]),
              normalize=False)


def test_portable_path_on_aarch64_equals_this_machine(tmp_path, monkeypatch):
    binary = tmp_path / "portable_path"
    subprocess.run([CXX, "-O3", "-std=c++17", "-ffp-contract=off", "-static", f"-I{ROOT / 'csrc' / 'cpu'}",
                    str(ROOT / "tests" / "cross" / "portable_path_main.cpp"), str(ROOT / "csrc" / "cpu" / "path_default.cpp"),
                    "-o", str(binary)], check=True, timeout=600)
    raw = subprocess.run([QEMU, "-L", str(SYSROOT), str(binary)], check=True, capture_output=True, timeout=600).stdout
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", wsmooth_ext.kernel_info()["cpu_path"])  # the best path here
    offset = 0
    for kind in distributions.DISTRIBUTIONS:  # code order, as the C++ main loops over its table
        for pixel in (False, True):
            for dtype in (torch.float32, torch.float64):
                expected = _expected(kind, pixel, dtype)
                size = expected.numel() * expected.element_size()
                got = np.frombuffer(raw[offset:offset + size], dtype=np.float32 if dtype == torch.float32 else np.float64)
                offset += size
                assert torch.equal(torch.from_numpy(got.copy()).view_as(expected), expected), (kind, pixel, dtype)
    assert offset == len(raw)
