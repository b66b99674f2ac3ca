"""`raygpu monitor --local`: a real Prometheus for the local Ray cluster.

    raygpu monitor --local                          scrape the cluster of /tmp/ray
    raygpu monitor --local --ray-temp-dir DIR --port 9091 --scrape-interval 5
    raygpu monitor --local --print-config           the config only, started nothing

Writes the config and the alert rules (raygpu/monitoring/alerts.py) into
`--dir`, starts Prometheus on 127.0.0.1 and runs it until Ctrl-C. Prometheus
keeps its data in `--dir` between runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raygpu import options
from raygpu.monitoring import local


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local",
        action="store_true",
        required=True,
        help="the local Ray cluster (the only target for now)",
    )
    parser.add_argument(
        "--ray-temp-dir",
        default=local.DEFAULT_RAY_TEMP_DIR,
        metavar="DIR",
        help="the cluster's `ray start --temp-dir` "
        f"(default: {local.DEFAULT_RAY_TEMP_DIR})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=local.DEFAULT_PORT,
        help=f"Prometheus's port on 127.0.0.1 (default: {local.DEFAULT_PORT})",
    )
    parser.add_argument(
        "--scrape-interval",
        type=options.positive("--scrape-interval"),
        default=local.DEFAULT_SCRAPE_INTERVAL_S,
        metavar="SECONDS",
        help=f"between scrapes (default: {local.DEFAULT_SCRAPE_INTERVAL_S})",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"config and data folder (default: {local.default_dir()})",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the Prometheus config and exit",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1..65535, got {args.port}")


def run(args: argparse.Namespace) -> int:
    folder = args.dir or local.default_dir()
    config = local.write_files(folder, args.ray_temp_dir, args.scrape_interval)
    if args.print_config:
        print(config.read_text(encoding="utf-8"), end="")
        return 0
    binary = local.find_binary()
    sd_file = local.service_discovery_file(args.ray_temp_dir)
    if not sd_file.exists():
        print(
            f"raygpu monitor: {sd_file} does not exist yet (no Ray cluster with "
            "that --temp-dir?); Prometheus reads it once Ray writes it",
            file=sys.stderr,
        )
    prom = local.start(config, folder / "data", args.port, binary=binary)
    try:
        local.wait_ready(prom)
        print(f"Prometheus on {prom.url} scraping {sd_file}; Ctrl-C stops it")
        print(f"config {config}, log {prom.log}")
        prom.process.wait()
    except KeyboardInterrupt:
        print("raygpu monitor: stopping Prometheus", file=sys.stderr)
    finally:
        local.stop(prom)
    if prom.process.returncode not in (0, -2, -15):
        print(
            f"raygpu monitor: error: prometheus exited with status "
            f"{prom.process.returncode}: {prom.log_tail(1)}",
            file=sys.stderr,
        )
        return 1
    return 0
