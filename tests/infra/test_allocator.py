"""infra/allocator.py: with freed memory retained, a large tensor allocated again reuses freed pages.

Each case runs in its own interpreter, because the setting is process-wide and would leak into every later test.
The measure is the process's minor page faults (getrusage) while a 64 MiB tensor (16,384 pages) is allocated and
filled, after twelve such fills. With glibc's defaults the block is above the largest mmap threshold (32 MiB), so
it comes from fresh pages each time and faults on every page; retained, it reuses freed pages. The first fills
can take new pages even when memory is retained (the aligned request is a little larger than the block just
freed, until freed neighbours coalesce); the heap settled within seven blocks in 30 runs here.
"""

import os
import subprocess
import sys

import pytest

from wsmooth_ext.infra import allocator

PAGES = 64 * 2**20 // 4096

PROBE = """
import resource, sys, torch
from wsmooth_ext.infra.allocator import retain_freed_memory, allocator_state
print(retain_freed_memory())
def faults_of_one_fill():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20, dtype=torch.float32)   # 64 MiB
    t.fill_(1.0)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(12):  # glibc's heap settles: posix_memalign's padded request fits once freed blocks coalesce
    faults_of_one_fill()
print(min(faults_of_one_fill() for _ in range(3)))
print(allocator_state())
"""


def probe(env_value):
    env = dict(os.environ)
    env.pop(allocator.ENV, None)
    if env_value is not None:
        env[allocator.ENV] = env_value
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "LD_PRELOAD"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    said, faults, state = done.stdout.strip().splitlines()
    return said, int(faults), state


needs_glibc = pytest.mark.skipif(allocator.glibc_version() is None, reason="mallopt is glibc's (Linux)")


@needs_glibc
def test_retained_memory_is_reused_without_page_faults():
    said, faults, state = probe(None)
    assert "keeps freed memory" in said and state == said
    assert faults < PAGES // 16, f"{faults} page faults refilling a retained 64 MiB block"


@needs_glibc
def test_system_malloc_faults_on_every_page_of_a_large_block():
    """The control: without the setting the same probe faults on (nearly) every page, so the test above can fail."""
    said, faults, state = probe("system")
    assert "WSMOOTH_MALLOC=system" in said and "not applied" in state
    assert faults > PAGES // 2, f"only {faults} page faults: glibc served the block from retained memory"


def test_bad_setting_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(ValueError, match="WSMOOTH_MALLOC must be one of retain, system, got 'jemalloc'"):
        allocator.retain_freed_memory()


def test_cli_reports_a_bad_setting_on_one_line():
    env = dict(os.environ, WSMOOTH_MALLOC="bogus")
    done = subprocess.run([sys.executable, "-m", "wsmooth_ext.cli", "bench", "--samples", "1"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "wsmooth bench: error: WSMOOTH_MALLOC must be one of retain, system, got 'bogus'"
