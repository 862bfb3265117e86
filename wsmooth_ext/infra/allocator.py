"""Keep freed memory in the process, so that CPU forward passes stop paying page faults.

PyTorch's CPU allocator takes every tensor from the C library's ``malloc`` and frees it at once. glibc serves
blocks above its mmap threshold (which adapts, up to 32 MiB) with fresh pages from the kernel and unmaps them on
``free``, and it trims the free top of its heap; every 4 KiB of such a block is then a page fault on first touch,
in every forward pass. A model whose activations for one chunk of noisy images exceed that size pays them all
the time: on the 2-core VM of ``benchmarks/RESULTS.md`` (a fault costs ~3.6 µs there) ``cifar_small`` at the CPU's
automatic batch of 1,000 images ran at 2.0 ms per image with 326 faults per image, and at 1.05 ms with freed
memory kept (one thread); ``wong_mnist`` at 5,000 images per chunk ran 3x slower than at 1,000.

:func:`retain_freed_memory` tells glibc to serve every block from its heap and never give freed memory back
(``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 2 GiB), the effect PyTorch's CPU tuning guide gets by preloading
jemalloc or tcmalloc. The cost: the process keeps its peak heap for its whole life. The ``wsmooth`` command
calls it at start (its processes run one workload to the end); a library never changes its host's allocator
on import, so Python users call it themselves if they want it. ``WSMOOTH_MALLOC=system`` leaves malloc alone.
Results never depend on it: only where memory comes from changes.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV = "WSMOOTH_MALLOC"
CHOICES = ("retain", "system")
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: the largest free heap top that is kept

_state = {"applied": None}


def glibc_version() -> str | None:
    """The running C library's glibc version ("2.36"), or None where the C library is not glibc."""
    if platform.system() != "Linux":
        return None
    try:
        version = ctypes.CDLL(None).gnu_get_libc_version
    except (OSError, AttributeError):  # musl and other C libraries have no gnu_get_libc_version
        return None
    version.restype = ctypes.c_char_p
    return version().decode()


def retain_freed_memory() -> str:
    """Make glibc keep freed memory for reuse in this process (see the module); one line saying what was done.

    Idempotent. Raises ValueError naming ``WSMOOTH_MALLOC`` if it holds anything but "retain" or "system".
    """
    choice = os.environ.get(ENV, "retain").strip().lower() or "retain"
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)}, got {os.environ[ENV]!r}")
    if _state["applied"] is not None:
        return _state["applied"]
    if choice == "system":
        return f"malloc left as the system set it ({ENV}=system)"
    version = glibc_version()
    if version is None:
        return f"malloc left as the system set it (not glibc: {platform.system()})"
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        return f"malloc left as the system set it (glibc {version} refused mallopt)"
    _state["applied"] = (f"glibc {version} malloc keeps freed memory for reuse (M_MMAP_MAX 0, M_TRIM_THRESHOLD "
                         f"{TRIM_THRESHOLD_BYTES}; {ENV}=system to leave it alone)")
    return _state["applied"]


def retaining() -> bool:
    """Whether :func:`retain_freed_memory` took effect in this process (its worker processes then call it too)."""
    return _state["applied"] is not None


def allocator_state() -> str:
    """What :func:`retain_freed_memory` did in this process, for reports (``wsmooth bench``, benchmarks)."""
    return _state["applied"] or "system malloc (retain_freed_memory not applied in this process)"
