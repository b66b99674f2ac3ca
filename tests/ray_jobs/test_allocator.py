"""mlcore.allocator: what `keep_freed_memory` does, checked deterministically.

It asks glibc for three mallopt settings, and glibc then keeps freed blocks
mapped: a block between glibc's default mmap threshold (128 KiB) and the new one
(32 MiB), written, freed and allocated again, comes back from memory that is
still mapped, so writing it again faults no pages; without the settings every
such block is a fresh mapping that faults each of its pages in again. How many
faults a real training step or Serve batch saves depends on the machine, so
that comparison is a benchmark (`make bench`, section "allocator"), not a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlcore import allocator

RAY_JOBS = Path(__file__).resolve().parents[2] / "ray_jobs"
MiB = 1 << 20

# malloc.h's parameter numbers, written out so a wrong constant fails here.
EXPECTED_CALLS = [(-3, 32 * MiB), (-1, 256 * MiB), (-2, 64 * MiB)]


class FakeLibc:
    """The C library as keep_freed_memory sees it: records mallopt calls."""

    def __init__(self, refuse: tuple[int, ...] = (), glibc: bool = True):
        self.calls: list[tuple[int, int]] = []
        self.refuse = refuse
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.36"

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 0 if param in self.refuse else 1


@pytest.fixture
def fake_libc(monkeypatch):
    def install(**kwargs) -> FakeLibc:
        libc = FakeLibc(**kwargs)
        monkeypatch.setattr(allocator.sys, "platform", "linux")
        monkeypatch.setattr(allocator, "_libc", lambda: libc)
        return libc

    return install


def test_it_asks_for_the_three_settings(fake_libc):
    libc = fake_libc()
    assert allocator.keep_freed_memory() is True
    assert libc.calls == EXPECTED_CALLS


def test_a_refused_setting_is_reported_and_the_others_still_tried(fake_libc):
    libc = fake_libc(refuse=(-1,))
    assert allocator.keep_freed_memory() is False
    assert libc.calls == EXPECTED_CALLS


def test_a_c_library_that_is_not_glibc_is_left_alone(fake_libc):
    libc = fake_libc(glibc=False)  # musl's mallopt accepts and ignores
    assert allocator.keep_freed_memory() is False
    assert libc.calls == []


def test_the_settings_are_refused_quietly_off_linux(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False


# A fresh process per check (the settings are process-wide), with transparent
# huge pages off for itself (prctl PR_SET_THP_DISABLE), so a fault is one 4 KiB
# page whatever the system's setting. reuse_faults(n, size): n blocks written,
# freed and allocated and written again; the calling thread's minor page faults
# during the second allocation and write, and the pages written.
PROBE = """
import ctypes, json, sys, threading
from mlcore import allocator
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
assert libc.prctl(41, 1, 0, 0, 0) == 0, "PR_SET_THP_DISABLE"
MiB = 1 << 20

def write_blocks(n, size):
    blocks = [libc.malloc(size) for _ in range(n)]
    for b in blocks:
        ctypes.memset(b, 1, size)
    return blocks

def reuse_faults(n, size):
    for b in write_blocks(1, 64):  # ctypes' first calls allocate: done before
        libc.free(b)
    allocator.thread_page_faults()
    for b in reversed(write_blocks(n, size)):
        libc.free(b)
    before = allocator.thread_page_faults()
    again = write_blocks(n, size)
    faults = allocator.thread_page_faults() - before
    for b in again:
        libc.free(b)
    return {"faults": faults, "pages": n * size // 4096}
"""

# The main thread, 3 blocks of 30 MiB: served from the heap (mmap threshold), and
# 90 MiB freed at its top stays mapped (trim threshold). A second thread, as Ray
# Train's and Serve's, has its own arena of 64 MiB heaps: of 3 blocks of 24 MiB
# the last opens a new heap, which stays mapped once emptied (top pad).
SETTINGS_KEEP_FREED_BLOCKS = (
    PROBE
    + """
out = {"applied": allocator.keep_freed_memory(), "main": reuse_faults(3, 30 * MiB)}
def second():
    out["thread"] = reuse_faults(3, 24 * MiB)
t = threading.Thread(target=second)
t.start()
t.join()
print(json.dumps(out))
"""
)

# serve_app.ModelServer built in a second thread, as Serve 2.60 builds a replica
# and runs its handlers: it makes the call, and that thread keeps freed blocks.
REPLICA = (
    PROBE
    + """
import tempfile
from mlcore.checkpointing import save
from mlcore.models import ModelSpec, build_model
calls = []
real = allocator.keep_freed_memory
def recorded():
    calls.append(real())
    return calls[-1]
allocator.keep_freed_memory = recorded
import serve_app
out = {}
def replica_thread(folder):
    server = serve_app.ModelServer.func_or_class({"checkpoint": folder})
    out["calls"] = list(calls)
    import numpy as np
    server.forward(np.zeros((4, 3 * 32 * 32), dtype=np.float32))
    out["thread"] = reuse_faults(3, 24 * MiB)
with tempfile.TemporaryDirectory() as folder:
    spec = ModelSpec("cnn", (3, 32, 32), 10)
    save(folder, build_model(spec), None, 0, spec, {})
    t = threading.Thread(target=replica_thread, args=(folder,))
    t.start()
    t.join()
print(json.dumps(out))
"""
)

MALLOC_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
)


def run_child(code: str) -> dict:
    """Run `code` in a fresh Python with ray_jobs importable and no malloc
    variables, and read its last JSON line."""
    env = {**os.environ, "PYTHONPATH": str(RAY_JOBS), "OMP_NUM_THREADS": "1"}
    for name in MALLOC_VARIABLES:
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def is_glibc() -> bool:
    import platform

    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def few(probe: dict) -> bool:
    """Next to no faults: under 1% of the pages written (without the settings,
    every page of at least one block faults again)."""
    return probe["faults"] < probe["pages"] // 100


@pytest.mark.skipif(not is_glibc(), reason="the settings are glibc's")
def test_with_the_settings_freed_blocks_stay_mapped():
    out = run_child(SETTINGS_KEEP_FREED_BLOCKS)
    assert out["applied"] is True  # glibc accepted all three
    assert few(out["main"]), out
    assert few(out["thread"]), out


@pytest.mark.slow
@pytest.mark.skipif(not is_glibc(), reason="the settings are glibc's")
def test_a_serve_replica_makes_the_call_in_its_thread():
    out = run_child(REPLICA)
    assert out["calls"] == [True]
    assert few(out["thread"]), out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread count")
def test_thread_page_faults_counts_the_calling_threads_faults():
    import mmap

    before = allocator.thread_page_faults()
    m = mmap.mmap(-1, 4 << 20)  # fresh pages: 1,024 faults when written
    m.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB pages even with THP on
    for i in range(0, 4 << 20, 4096):
        m[i] = 1
    m.close()
    assert allocator.thread_page_faults() - before >= 1000
