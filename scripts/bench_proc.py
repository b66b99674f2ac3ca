"""CPU accounting for the benchmark: who used how much CPU during a window.

Reads /proc only (Linux). A `CpuSampler` polls every process's user+system time
while a measurement runs and, at the end, sums the CPU seconds each group of
processes used in the window: Ray's own daemons, Ray Train's controller, the
training workers, the load generator, and everything else on the machine (other
users of a shared machine show up there).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")

# (group, substrings of the command line); the first match wins.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wrk", ("wrk ",)),
    ("train_controller", ("ray::TrainController", "ray::_StateActor")),
    (
        "ray_workers",
        ("ray::RayTrainWorker", "ray::ServeReplica", "ray::ModelServer"),
    ),
    ("serve_system", ("ray::ServeController", "ray::ProxyActor")),
    ("ray_job_supervisor", ("ray::JobSupervisor",)),
    ("ray_idle_workers", ("ray::IDLE", "default_worker.py")),
    ("ray_gcs", ("gcs_server",)),
    ("ray_raylet", ("raylet",)),
    ("ray_dashboard", ("dashboard.py", "dashboard/agent.py", "/dashboard/")),
    (
        "ray_other_daemons",
        ("log_monitor.py", "monitor.py", "runtime_env/agent", "ray/_private/"),
    ),
    ("torchrun_workers", ("bench_torchrun.py",)),
    ("torchrun_agent", ("torchrun",)),
    ("fastapi_server", ("bench_fastapi.py",)),
)
RAY_DAEMONS = (
    "ray_gcs",
    "ray_raylet",
    "ray_dashboard",
    "ray_other_daemons",
    "ray_idle_workers",
)


def classify(cmdline: str) -> str:
    for group, needles in GROUPS:
        if any(n in cmdline for n in needles):
            return group
    return "other"


def _snapshot() -> dict[int, tuple[float, str, int]]:
    """pid -> (CPU seconds so far, command line, parent pid) for every process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if not cmd:  # kernel threads
            continue
        out[int(entry.name)] = (cpu, cmd, int(fields[1]))
    return out


def _ours(snap: dict[int, tuple[float, str, int]], root: int, markers) -> set[int]:
    """`root`, processes naming one of `markers` (Ray temp dirs), descendants."""
    found = {root} | {
        pid for pid, (_, cmd, _) in snap.items() if any(m in cmd for m in markers)
    }
    grew = True
    while grew:
        kids = {pid for pid, (_, _, ppid) in snap.items() if ppid in found}
        grew = not kids <= found
        found |= kids
    return found


class CpuSampler:
    """Per-group CPU seconds over a window.

    Processes that are neither descendants of this one nor part of a Ray cluster
    whose temp dir is in `markers` count as "foreign" (other users' work).
    """

    def __init__(self, markers: list[str] | None = None, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.markers = list(markers or [])
        self.root = os.getpid()
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[float, str]] = {}
        self._ours: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = self.t1 = 0.0

    def _poll(self) -> None:
        snap = _snapshot()
        self._ours |= _ours(snap, self.root, self.markers)
        for pid, (cpu, cmd, _) in snap.items():
            if pid not in self._first:
                # A process born inside the window started from 0 CPU seconds.
                self._first[pid] = 0.0
            self._last[pid] = (cpu, cmd)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def __enter__(self) -> CpuSampler:
        self.t0 = time.monotonic()
        for pid, (cpu, _, _) in _snapshot().items():
            self._first[pid] = cpu
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._poll()
        self.t1 = time.monotonic()

    def groups(self) -> dict[str, float]:
        """CPU seconds per group in the window (the bench's own process apart)."""
        out: dict[str, float] = {}
        for pid, (cpu, cmd) in self._last.items():
            used = max(0.0, cpu - self._first.get(pid, 0.0))
            if pid == self.root:
                group = "bench"
            elif pid in self._ours:
                group = classify(cmd)
            else:
                group = "foreign"
            out[group] = out.get(group, 0.0) + used
        return {k: round(v, 3) for k, v in sorted(out.items()) if v > 0}

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    def cores(self) -> dict[str, float]:
        """Average cores used per group over the window."""
        span = max(self.seconds, 1e-9)
        return {k: round(v / span, 3) for k, v in self.groups().items()}


def ray_daemon_cores(cores: dict[str, float]) -> float:
    return round(sum(cores.get(g, 0.0) for g in RAY_DAEMONS), 3)
