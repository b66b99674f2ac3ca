"""5. allocator: what the allocator settings change on this machine.

The page faults a step of a training loop in a second thread and a batch of a
Serve replica's handler thread, with glibc's defaults and with
mlcore.allocator.keep_freed_memory (allocator_probe.py, a fresh process each).
How many faults the defaults cost depends on the machine (its kernel, glibc,
transparent huge pages, what else ran): a measurement, not a property of the
code, which tests/ray_jobs/test_allocator.py checks instead.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from scripts.bench.allocator_probe import SIZES
from scripts.bench.proc import Bench, child_env
from scripts.bench.settings import ALLOCATOR_PROBE, PY, REPO, BenchError, log
from scripts.bench.stats import fmt, paired_ratios, stats

WORKLOADS = ("loop", "replica")
SETTINGS = ("default", "tuned")
# Variables that would change the allocator under the probe.
MALLOC_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
)
FAULTING = 256  # a step or batch "faults" above this many pages


def huge_pages() -> str | None:
    """The transparent-huge-pages mode (always, madvise, never), None off Linux."""
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    try:
        text = path.read_text()
    except OSError:
        return None
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else None


def probe(workload: str, setting: str) -> list[int]:
    env = child_env()
    for name in MALLOC_VARIABLES:
        env.pop(name, None)
    out = subprocess.run(
        [PY, "-m", ALLOCATOR_PROBE, workload, setting],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RGJSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(
            f"allocator probe {workload} {setting} failed ({out.returncode}):\n"
            f"{out.stderr[-2000:]}"
        )
    return json.loads(line[len("RGJSON ") :])["faults"]


def bench_allocator(bench: Bench) -> dict[str, Any]:
    runs: dict[str, dict[str, list[list[int]]]] = {
        w: {s: [] for s in SETTINGS} for w in WORKLOADS
    }
    for r in range(bench.cfg["allocator_rounds"]):
        order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
        for workload in WORKLOADS:
            for setting in order:
                runs[workload][setting].append(probe(workload, setting))
            log(
                f"allocator round {r + 1} {workload}: "
                + ", ".join(
                    f"{s} {fmt(mean(runs[workload][s][-1]))} faults a step or batch"
                    for s in SETTINGS
                )
            )
    summary = {
        w: {
            s: {
                "faults_per_step": stats([mean(x) for x in runs[w][s]]),
                "steps_faulting": stats([faulting(x) for x in runs[w][s]]),
                "steps": len(runs[w][s][0]) if runs[w][s] else 0,
            }
            for s in SETTINGS
        }
        for w in WORKLOADS
    }
    ratios = {
        f"{w} default/tuned": paired_ratios(
            [mean(x) for x in runs[w]["default"]], [mean(x) for x in runs[w]["tuned"]]
        )
        for w in WORKLOADS
    }
    return {
        "workloads": {
            "loop": "CNN training loop (batch 32, 3x32x32) in a second thread, "
            "faults a step",
            "replica": "serve_app.ModelServer in a second thread, mixed batches of "
            f"{', '.join(map(str, SIZES))} rows, faults a batch",
        },
        "transparent_huge_pages": huge_pages(),
        "faulting_above": FAULTING,
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
    }


def mean(faults: list[int]) -> float:
    return sum(faults) / len(faults) if faults else float("nan")


def faulting(faults: list[int]) -> int:
    return sum(1 for n in faults if n > FAULTING)
