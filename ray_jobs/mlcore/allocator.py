"""The C allocator's settings for a training or serving process.

Every training step allocates and frees the same activation and gradient
buffers, several MiB each. glibc's malloc serves blocks over its mmap threshold
with fresh mappings and hands freed memory back to the kernel once enough of it
sits at the top of a heap, so a step can fault its buffers' pages back in. Ray
Train runs `train_func` in a thread of the worker actor, not its main thread,
and such a thread gets a secondary malloc arena made of 64 MiB heaps, which
glibc unmaps as soon as one is empty; a worker stalled by those faults holds the
other ranks up in DDP's all-reduce. Ray Serve runs a replica's handlers in a
thread of their own too, and `serve_app.ModelServer` makes the same call when it
starts. `make bench` measures the faults with and without the settings
(section "allocator"; docs/performance.md).

`keep_freed_memory()` fixes the thresholds and the top pad: blocks up to 32 MiB
come from the heap, up to 256 MiB of freed memory stays mapped in each arena,
and a heap grows and shrinks 64 MiB at a time, so an emptied heap is kept
rather than unmapped. These are process-wide mallopt(3) settings;
MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ set the same
before a process starts. With another allocator preloaded (jemalloc or tcmalloc
through LD_PRELOAD, which keep freed memory their own way) the call reaches that
allocator's mallopt, which may accept it and do nothing.
"""

from __future__ import annotations

import ctypes
import resource
import sys

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above half its heap size: 32 MiB on 64-bit.
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 256 << 20
TOP_PAD_BYTES = 64 << 20
SETTINGS = (
    (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
    (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
    (M_TOP_PAD, TOP_PAD_BYTES),
)


def _libc():
    """The C library already loaded into this process (dlopen(NULL))."""
    return ctypes.CDLL(None)


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds and top pad for this process (see
    the module docstring). True when all three took effect; False where the C
    library is not glibc (macOS, musl), which is left as it is."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
    except OSError:  # pragma: no cover - dlopen(NULL) does not fail on Linux
        return False
    # Only glibc has gnu_get_libc_version; musl's mallopt accepts and ignores.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    applied = [libc.mallopt(param, value) == 1 for param, value in SETTINGS]
    return all(applied)  # each one tried, even after a refusal


def thread_page_faults() -> int | None:
    """Minor page faults of the calling thread so far (getrusage RUSAGE_THREAD),
    None where there is no per-thread count (off Linux)."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    return None if who is None else resource.getrusage(who).ru_minflt
