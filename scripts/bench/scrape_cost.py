"""What one Prometheus scrape of a local Ray head costs, target by target.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.scrape_cost [--scrapes 3]

Starts the monitoring section's head (metrics on) with its CNN app deployed and
idle, then fetches every target in Ray's service-discovery file as Prometheus
would, printing per scrape the seconds, bytes and series it returned and the CPU
seconds every process on the machine spent meanwhile (the largest first, read
from /proc before and after): the cost a 15-s scrape interval puts on the work.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

from raygpu.names import LOOPBACK


def spent(before: dict, after: dict, top: int = 3) -> tuple[float, list]:
    """CPU seconds all processes spent between two proc.snapshot()s, and the
    top users."""
    used = [
        (round(cpu - before.get(pid, (0.0,))[0], 3), cmd[:60])
        for pid, (cpu, cmd, _) in after.items()
    ]
    used = [u for u in used if u[0] > 0]
    return round(sum(u[0] for u in used), 3), sorted(used, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    from raygpu.localray import free_port
    from raygpu.monitoring.local import service_discovery_file
    from scripts.bench.monitoring import APP, MODEL, start_monitored_head
    from scripts.bench.proc import Bench, snapshot
    from scripts.bench.serving import deploy_model, serve_models

    p = argparse.ArgumentParser(prog="scrape_cost", description=__doc__.split("\n")[0])
    p.add_argument("--scrapes", type=int, default=3, help="scrapes per target (3)")
    args = p.parse_args(argv)
    bench = Bench(Path(tempfile.mkdtemp(prefix="rg-scrape-")), "quick")
    try:
        ckpts, _ = serve_models(bench)
        head = start_monitored_head(bench)
        deploy_model(bench, head, free_port(), {APP: (ckpts[MODEL], True)})
        groups = json.loads(service_discovery_file(head.temp_dir).read_text())
        targets = [t for g in groups for t in g["targets"]]
        if not all(t.startswith(f"{LOOPBACK}:") for t in targets):
            print(f"error: a target is not on loopback: {targets}")
            return 1
        time.sleep(5)  # the deploy's own work settles
        before = snapshot()
        time.sleep(5)
        idle, _ = spent(before, snapshot())
        print(f"idle: {idle:.3f} CPU-s in 5 s (the baseline)")
        idle_rate = idle / 5
        for target in targets:
            for _ in range(args.scrapes):
                before, t0 = snapshot(), time.monotonic()
                url = f"http://{target}/metrics"
                with urllib.request.urlopen(url, timeout=30) as resp:
                    body = resp.read()
                took = time.monotonic() - t0
                time.sleep(0.5)  # the answer's tail (the agent's bookkeeping)
                total, top = spent(before, snapshot())
                lines = body.decode(errors="replace").splitlines()
                series = sum(1 for x in lines if x and not x.startswith("#"))
                print(
                    f"{target}: {took:.3f} s, {len(body)} bytes, {series} series; "
                    f"{total:.3f} CPU-s in all "
                    f"({idle_rate * (took + 0.5):.3f} of them the idle rate's); "
                    f"top {top}"
                )
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
