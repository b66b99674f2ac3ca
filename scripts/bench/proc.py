"""Process control for the benchmark: start, wait, pause and stop process trees,
and hold everything a run must clean up (Ray heads, servers).

Every child runs in its own session, so its whole process group can be killed;
every Ray head and server the benchmark starts is stopped, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from raygpu.serve_ingress import DEFAULT_INGRESS
from scripts.bench.settings import (
    LEAN_ENV,
    MARKS_ENV,
    MODES,
    PY,
    RAY_JOBS,
    REPO,
    THREAD_ENV,
    BenchError,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def snapshot() -> dict[int, tuple[float, str, int]]:
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


def machine_cpu_s() -> dict[str, float]:
    """The whole machine's CPU seconds so far (/proc/stat): busy, idle (with
    iowait) and steal (time the hypervisor gave to other guests)."""
    f = [int(x) / CLK_TCK for x in Path("/proc/stat").read_text().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = f
    return {
        "busy": user + nice + system + irq + softirq,
        "idle": idle + iowait,
        "steal": steal,
    }


def tree(
    snap: dict[int, tuple[float, str, int]], root: int | None, markers
) -> set[int]:
    """`root` (if any), processes naming one of `markers` (Ray temp dirs), and
    their descendants."""
    found = {pid for pid, (_, cmd, _) in snap.items() if any(m in cmd for m in markers)}
    if root is not None:
        found.add(root)
    grew = True
    while grew:
        kids = {pid for pid, (_, _, ppid) in snap.items() if ppid in found}
        grew = not kids <= found
        found |= kids
    return found


def child_env(marks: Path | None = None) -> dict[str, str]:
    """The environment of a child that runs ray_jobs code or a benchmark program:
    ray_jobs/ and the repository importable, this venv first on PATH, one math
    thread, Ray's client settings; `marks` receives its timing marks."""
    from raygpu.rayclient import client_auth_env

    env = {**os.environ, **client_auth_env(), **THREAD_ENV}
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = os.pathsep.join([str(Path(PY).parent), env["PATH"]])
    paths = [str(RAY_JOBS), str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join(
        paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS"] = "0"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if marks is not None:
        env[MARKS_ENV] = str(marks)
    return env


def spawn_logged(
    argv: list[str], out: Any, env: dict[str, str], cwd: Path = REPO
) -> subprocess.Popen:
    """Start argv in its own session (so its group can be killed), output to `out`."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_logged(
    argv: list[str],
    log: Path,
    env: dict[str, str],
    timeout_s: float,
    cwd: Path = REPO,
) -> tuple[int, float, float]:
    """Run argv (own process group), output to `log`: (rc, start, end) in time.time.

    On timeout the whole group is killed and the exception passed on.
    """
    with open(log, "ab") as out:
        t0 = time.time()
        proc = spawn_logged(argv, out, env, cwd)
        try:
            rc = proc.wait(timeout=timeout_s)
        except BaseException:
            kill_group(proc)
            raise
        t1 = time.time()
    return rc, t0, t1


def kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"the server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise BenchError(f"{url} did not answer within {timeout_s:.0f}s")


class Freezer:
    """Pauses and resumes a whole process tree (SIGSTOP / SIGCONT).

    For the interleaved training measurement: two runs, each with its processes
    (a torchrun agent and its workers, or a driver with the Ray cluster it
    started), take turns on the machine in short slices, so the host's drift in
    speed falls on both alike. The tree is `root`, the processes naming one of
    `markers` (a Ray temp dir) and their descendants, read anew at each pause;
    a process started during a pause is caught by re-reading until none is new.
    """

    def __init__(self, root: int, markers: list[str] | tuple[str, ...] = ()):
        self.root = root
        self.markers = list(markers)
        self.paused: set[int] = set()

    def _tree(self) -> set[int]:
        return tree(snapshot(), self.root, self.markers) - {os.getpid()}

    @staticmethod
    def _signal(pids: set[int], sig: int) -> set[int]:
        done = set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                done.add(pid)
        return done

    def pause(self) -> None:
        for _ in range(5):
            new = self._tree() - self.paused
            if not new:
                return
            self.paused |= self._signal(new, signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(self.paused | self._tree(), signal.SIGCONT)
        self.paused = set()


class Bench:
    """Holds the work dir, the CPU-sampler markers and everything to clean up."""

    def __init__(self, work: Path, mode: str):
        self.work = work
        self.mode = mode
        self.cfg = MODES[mode]
        self.markers: list[str] = []
        self.heads: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.notes: list[str] = []
        self.counter = 0
        self.serve_lean = True

    def new_path(self, stem: str, suffix: str = "") -> Path:
        self.counter += 1
        return self.work / f"{self.counter:03d}-{stem}{suffix}"

    def new_temp_dir(self) -> str:
        """A Ray temp dir for a cluster this run starts: its processes are told
        apart by it, and it is stopped by it at the end if still running."""
        temp_dir = tempfile.mkdtemp(prefix="rg-bench-", dir="/tmp")
        self.markers.append(temp_dir)
        self.heads.append(temp_dir)
        return temp_dir

    def cleanup(self) -> None:
        from raygpu.localray import stop_head

        for proc in self.procs:
            if proc.poll() is None:
                kill_group(proc)
        for temp_dir in self.heads:
            stop_head(temp_dir)
        self.heads.clear()

    def start_head(
        self,
        lean: bool,
        env: dict[str, str] | None = None,
        serve_ingress: str = DEFAULT_INGRESS,
    ) -> Any:
        """A local Ray head (2 CPUs); the processes it starts (job drivers, Train
        workers) write their marks to work/head-marks.jsonl."""
        from raygpu.localray import start_head

        temp_dir = self.new_temp_dir()
        extra = {**THREAD_ENV, **(LEAN_ENV if lean else {}), **(env or {})}
        extra[MARKS_ENV] = str(self.work / "head-marks.jsonl")
        t0 = time.monotonic()
        head = start_head(
            num_cpus=2, temp_dir=temp_dir, extra_env=extra, serve_ingress=serve_ingress
        )
        return head, time.monotonic() - t0

    def stop_head(self, temp_dir: str) -> None:
        from raygpu.localray import stop_head

        stop_head(temp_dir)
        if temp_dir in self.heads:
            self.heads.remove(temp_dir)
