"""CPU accounting for the benchmark: who used how much CPU during a window.

Reads /proc only (Linux). A `CpuSampler` polls every process's user+system time
while a measurement runs and, at the end, sums the CPU seconds each group of
processes used in the window: Ray's own daemons, Ray Train's controller, the
training workers, the load generator, and everything else on the machine (other
users of a shared machine show up there).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from scripts.bench.proc import snapshot, tree
from scripts.bench.settings import FASTAPI_SERVER, RAYTRAIN_DRIVER, TORCHRUN_WORKER

# (group, substrings of the command line); the first match wins.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wrk", ("wrk ",)),
    ("train_controller", ("ray::TrainController", "ray::_StateActor")),
    (
        "train_helpers",
        (
            "ray::PlacementGroupCleaner",
            "ray::SynchronizationActor",
            "ray::DatasetManager",
            "ray::PreemptionWatcher",
            "ray::_AutoscalingCoordinatorActor",
        ),
    ),
    (
        "ray_workers",
        ("ray::RayTrainWorker", "ray::ServeReplica", "ray::ModelServer"),
    ),
    ("serve_system", ("ray::ServeController", "ray::ProxyActor")),
    ("ray_job_supervisor", ("ray::JobSupervisor",)),
    # Before the idle workers: the raylet's command line names default_worker.py
    # (--python_worker_command).
    ("ray_gcs", ("/gcs/gcs_server ",)),
    ("ray_raylet", ("/raylet/raylet ",)),
    ("ray_idle_workers", ("ray::IDLE", "default_worker.py")),
    ("ray_dashboard", ("dashboard.py", "dashboard/agent.py", "/dashboard/")),
    (
        "ray_other_daemons",
        ("log_monitor.py", "monitor.py", "runtime_env/agent", "ray/_private/"),
    ),
    ("ray_driver", (RAYTRAIN_DRIVER, "train.py")),
    # The agent's command line names the workers' module too.
    ("torchrun_agent", ("bin/torchrun ",)),
    ("torchrun_workers", (TORCHRUN_WORKER,)),
    ("fastapi_server", (FASTAPI_SERVER,)),
)
RAY_DAEMONS = (
    "ray_gcs",
    "ray_raylet",
    "ray_dashboard",
    "ray_other_daemons",
    "ray_idle_workers",
)
# Everything a Ray Train run adds besides its training workers.
RAY_OVERHEAD = (
    *RAY_DAEMONS,
    "train_controller",
    "train_helpers",
    "ray_driver",
    "ray_job_supervisor",
)
# What IdlePriority moves to SCHED_IDLE: Ray's processes that neither train nor
# start the training workers. A forked child keeps SCHED_IDLE (even with
# SCHED_RESET_ON_FORK), so the raylet, which forks every worker, the driver,
# which may start the cluster, and the job supervisor, which starts a submitted
# job's driver, stay; so do IDLE workers, which may become training workers.
KEPT = ("ray_raylet", "ray_driver", "ray_job_supervisor", "ray_idle_workers")
DEPRIORITIZED = tuple(g for g in RAY_OVERHEAD if g not in KEPT)


def classify(cmdline: str) -> str:
    for group, needles in GROUPS:
        if any(n in cmdline for n in needles):
            return group
    return "other"


TRAINING_GROUPS = ("ray_workers", "torchrun_workers")


def thread_stats(pid: int) -> dict[int, tuple[float, float, int]]:
    """tid -> (seconds run, seconds waited on a run queue, involuntary context
    switches) for each thread of `pid` so far (/proc/PID/task/TID/schedstat and
    status); {} when the process is gone."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            run_ns, wait_ns, _ = Path(f"{base}/schedstat").read_text().split()
            status = Path(f"{base}/status").read_text()
        except (OSError, ValueError):
            continue
        nvcs = 0
        for line in status.splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                nvcs = int(line.split()[1])
        out[int(tid)] = (int(run_ns) / 1e9, int(wait_ns) / 1e9, nvcs)
    return out


def busiest_thread_waits(
    a: dict[int, tuple[float, float, int]],
    b: dict[int, tuple[float, float, int]],
    span_s: float,
) -> dict[str, float] | None:
    """Between two `thread_stats` readings of one process, span_s apart: the
    share of wall time its busiest thread (a worker's training thread) ran and
    waited on a run queue (runnable, but another task had the core), and its
    involuntary context switches per second. None when no thread ran."""
    deltas = [
        (b[tid][0] - a[tid][0], b[tid][1] - a[tid][1], b[tid][2] - a[tid][2])
        for tid in b
        if tid in a
    ]
    if not deltas or span_s <= 0:
        return None
    run, wait, nvcs = max(deltas)
    if run <= 0:
        return None
    return {
        "run": round(run / span_s, 3),
        "runqueue_wait": round(wait / span_s, 3),
        "preemptions_per_s": round(nvcs / span_s, 1),
    }


def _ends_inside(history: list[tuple[float, Any]], t_a: float, t_b: float):
    """The first and last (time, reading) of `history` inside [t_a, t_b]; None
    when fewer than two readings, at distinct times, fall there."""
    inside = [(t, r) for t, r in history if t_a <= t <= t_b]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return inside[0], inside[-1]


class _Poller:
    """Calls `poll()` every `interval_s` from a daemon thread while started."""

    interval_s: float

    def poll(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def _halt(self) -> None:
        self._stop.set()
        self._thread.join()


class CpuSampler(_Poller):
    """Per-group CPU seconds over a window.

    Processes that are neither descendants of this one nor part of a Ray cluster
    whose temp dir is in `markers` count as "foreign" (other users' work).
    """

    def __init__(
        self,
        markers: list[str] | None = None,
        interval_s: float = 0.5,
        thread_s: float = 1.0,
    ):
        self.interval_s = interval_s
        self.thread_s = thread_s
        self.markers = list(markers or [])
        self.root = os.getpid()
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[float, str]] = {}
        self._ours: set[int] = set()
        self.t0 = self.t1 = 0.0
        # (wall-clock time, CPU seconds per process so far) at every poll, to
        # read a sub-window (e.g. the steady-state epochs) out of the run
        # afterwards, grouped by each process's last name (an IDLE worker that
        # became an actor counts in its final group throughout).
        self.history: list[tuple[float, dict[int, float]]] = []
        # The training workers' threads at every poll: (time, {pid: thread_stats}).
        self.thread_history: list[tuple[float, dict[int, dict]]] = []

    def poll(self, threads: bool = False) -> None:
        """Read every process; the training workers' threads too when `threads`
        or `thread_s` has passed since their last reading."""
        snap = snapshot()
        self._ours |= tree(snap, self.root, self.markers)
        for pid, (cpu, cmd, _) in snap.items():
            if pid not in self._first:
                # A process born inside the window started from 0 CPU seconds.
                self._first[pid] = 0.0
            self._last[pid] = (cpu, cmd)
        now = time.time()
        self.history.append((now, {pid: self._used(pid) for pid in self._last}))
        # Threads are read less often than processes (a Ray worker has 30; this
        # process's reading competes with what it measures).
        last = self.thread_history[-1][0] if self.thread_history else None
        if not threads and last is not None and now - last < self.thread_s:
            return
        workers = [
            pid
            for pid in self._ours
            if pid in snap and classify(snap[pid][1]) in TRAINING_GROUPS
        ]
        self.thread_history.append((now, {pid: thread_stats(pid) for pid in workers}))

    def __enter__(self) -> CpuSampler:
        self.t0 = time.monotonic()
        for pid, (cpu, _, _) in snapshot().items():
            self._first[pid] = cpu
        self.history.append((time.time(), {}))  # nothing used yet
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt()
        self.poll(threads=True)
        self.t1 = time.monotonic()

    def _used(self, pid: int) -> float:
        return max(0.0, self._last[pid][0] - self._first.get(pid, 0.0))

    def _group(self, pid: int) -> str:
        if pid == self.root:
            return "bench"
        if pid in self._ours:
            return classify(self._last[pid][1])
        return "foreign"

    def _by_group(self, used: dict[int, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, seconds in used.items():
            group = self._group(pid)
            out[group] = out.get(group, 0.0) + seconds
        return out

    def groups(self) -> dict[str, float]:
        """CPU seconds per group in the window (the bench's own process apart)."""
        out = self._by_group({pid: self._used(pid) for pid in self._last})
        return {k: round(v, 3) for k, v in sorted(out.items()) if v > 0}

    def cores_between(self, t_a: float, t_b: float) -> dict[str, float] | None:
        """Average cores per group between two wall-clock times inside the window.

        Uses the polls nearest inside [t_a, t_b]; None when fewer than two polls
        fall there (a span shorter than the poll interval).
        """
        ends = _ends_inside(self.history, t_a, t_b)
        if ends is None:
            return None
        (ta, ua), (tb, ub) = ends
        used = {pid: v - ua.get(pid, 0.0) for pid, v in ub.items()}
        out = self._by_group(used)
        return {k: round(v / (tb - ta), 3) for k, v in sorted(out.items()) if v > 0}

    def worker_waits_between(self, t_a: float, t_b: float) -> list[dict] | None:
        """Per training worker alive throughout [t_a, t_b] (polls nearest inside):
        its training thread's run and run-queue-wait shares and preemptions per
        second (`busiest_thread_waits`). None when fewer than two polls fall
        there."""
        ends = _ends_inside(self.thread_history, t_a, t_b)
        if ends is None:
            return None
        (ta, wa), (tb, wb) = ends
        out = []
        for pid in sorted(set(wa) & set(wb)):
            waits = busiest_thread_waits(wa[pid], wb[pid], tb - ta)
            if waits is not None:
                out.append({"pid": pid, "span_s": round(tb - ta, 2), **waits})
        return out

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    def cores(self) -> dict[str, float]:
        """Average cores used per group over the window."""
        span = max(self.seconds, 1e-9)
        return {k: round(v / span, 3) for k, v in self.groups().items()}


def ray_daemon_cores(cores: dict[str, float]) -> float:
    return round(sum(cores.get(g, 0.0) for g in RAY_DAEMONS), 3)


def overhead_cores(cores: dict[str, float]) -> float:
    """Cores of everything but the training workers: Ray's processes, or torchrun's
    agent."""
    groups = (*RAY_OVERHEAD, "torchrun_agent")
    return round(sum(cores.get(g, 0.0) for g in groups), 3)


class IdlePriority(_Poller):
    """Moves a Ray cluster's non-training processes to SCHED_IDLE while it runs.

    A diagnosis for the benchmark, not a setting raygpu ships: with Ray's
    daemons (the raylet apart) and Train's controller and helper actors at idle
    priority, they run only on a core the training workers leave free, so what
    they otherwise cost the workers shows up as the throughput difference. Every
    thread is moved (Linux scheduling policy is per thread), newly started ones
    on the next poll (1 s: scanning /proc costs CPU too). Moving one's own
    processes to SCHED_IDLE needs no privilege; they cannot be moved back, so
    use it on a cluster that ends with the measurement.
    """

    def __init__(self, markers: list[str], interval_s: float = 1.0):
        self.markers = list(markers)
        self.interval_s = interval_s
        self.moved: dict[int, str] = {}  # thread id -> the process's group
        # Training-worker threads found at SCHED_IDLE: must stay 0, or the
        # diagnosis slowed the workers themselves.
        self.idle_worker_threads: set[int] = set()

    def poll(self) -> None:
        snap = snapshot()
        # No root process: only the cluster's processes and their descendants.
        for pid in tree(snap, None, self.markers):
            group = classify(snap[pid][1])
            if group not in DEPRIORITIZED and group != "ray_workers":
                continue
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            if group == "ray_workers":
                for tid in tids:
                    with contextlib.suppress(OSError):
                        if os.sched_getscheduler(tid) == os.SCHED_IDLE:
                            self.idle_worker_threads.add(tid)
                continue
            for tid in tids:
                if tid in self.moved:
                    continue
                try:
                    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                except OSError:  # exited meanwhile
                    continue
                self.moved[tid] = group

    def __enter__(self) -> IdlePriority:
        self.poll()
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt()
