"""A real Prometheus for the local Ray cluster, on 127.0.0.1.

Ray's metrics are pulled: each node's metrics agent (and the dashboard, and the
autoscaler) serves `/metrics`, and Ray lists those endpoints in a file-based
service-discovery file it rewrites while the cluster runs:
`<ray temp dir>/prom_metrics_service_discovery.json` (a link to the one in the
session folder). The config here scrapes what that file lists and loads the
alert rules of `alerts.py`; nothing in Ray pushes to Prometheus or waits for it.

Prometheus itself is Debian's `prometheus` package (2.42, with promtool);
`make test` installs it where apt-get can.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygpu import manifests
from raygpu.errors import CommandError, UsageError
from raygpu.monitoring import alerts, rulecheck
from raygpu.names import LOOPBACK

PROMETHEUS = "prometheus"
INSTALL_HINT = (
    "install Debian's `prometheus` package (`apt-get install prometheus`; "
    "`make test` does it where it can)"
)
# Ray's name for the file (ray._private.ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE;
# the operator's install has no Ray, tests check the two agree).
SERVICE_DISCOVERY_FILE = "prom_metrics_service_discovery.json"
DEFAULT_RAY_TEMP_DIR = "/tmp/ray"  # Ray's default --temp-dir
DEFAULT_PORT = 9090
DEFAULT_SCRAPE_INTERVAL_S = 15
CONFIG_FILE = "prometheus.yml"
RULES_FILE = "raygpu-alerts.rules.yml"
# Ray replaces the file in its session folder, behind the link Prometheus reads, so
# file change events never reach Prometheus: it re-reads the file on this period.
SD_REFRESH = "5s"


class PrometheusError(CommandError):
    """The local Prometheus could not start or answer."""


def find_binary(name: str = PROMETHEUS) -> str:
    found = shutil.which(name)
    if not found:
        raise UsageError(f"`{name}` is not installed: {INSTALL_HINT}")
    return found


def default_dir() -> Path:
    """Where `raygpu monitor --local` keeps its config and data between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "raygpu" / "prometheus"


def service_discovery_file(ray_temp_dir: str | Path) -> Path:
    return Path(ray_temp_dir) / SERVICE_DISCOVERY_FILE


def local_config(
    sd_file: Path, rules_files: Sequence[Path], scrape_interval_s: float
) -> dict[str, Any]:
    """Prometheus's config: every target Ray lists, the rules files loaded."""
    interval = f"{scrape_interval_s:g}s"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": f"{min(scrape_interval_s, 10):g}s",
            "evaluation_interval": interval,
        },
        "rule_files": [str(p) for p in rules_files],
        "scrape_configs": [
            {
                "job_name": "ray",
                "file_sd_configs": [
                    {"files": [str(sd_file)], "refresh_interval": SD_REFRESH}
                ],
                # A local cluster is one head node: its targets get the label a
                # stack's PodMonitor gives the head's, so the same rules apply.
                "relabel_configs": [
                    {
                        "target_label": "container",
                        "replacement": manifests.HEAD_CONTAINER,
                    }
                ],
            }
        ],
    }


def write_files(
    folder: Path,
    ray_temp_dir: str | Path,
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    thresholds: alerts.Thresholds = alerts.DEFAULTS,
) -> Path:
    """The rules file and the config in `folder`; returns the config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / RULES_FILE
    rules.write_text(alerts.rules_file(thresholds), encoding="utf-8")
    config = folder / CONFIG_FILE
    cfg = local_config(service_discovery_file(ray_temp_dir), [rules], scrape_interval_s)
    config.write_text(rulecheck.dump(cfg), encoding="utf-8")
    return config


@dataclass
class LocalPrometheus:
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def start(
    config: Path, data_dir: Path, port: int, *, binary: str | None = None
) -> LocalPrometheus:
    """Prometheus on 127.0.0.1:`port` with `config`; its log beside its data."""
    binary = binary or find_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "prometheus.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address={LOOPBACK}:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return LocalPrometheus(f"http://{LOOPBACK}:{port}", process, log)


def wait_ready(prom: LocalPrometheus, timeout_s: float = 30.0) -> None:
    """Until /-/ready answers 200; a Prometheus that exits says why (its log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prom.process.poll() is not None:
            last = prom.log_tail(1) or "no log"
            raise PrometheusError(
                f"prometheus exited with status {prom.process.returncode}: {last}"
            )
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise PrometheusError(f"prometheus at {prom.url} not ready in {timeout_s:.0f}s")


def stop(prom: LocalPrometheus, grace_s: float = 10.0) -> None:
    if prom.process.poll() is None:
        prom.process.terminate()
        try:
            prom.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            prom.process.kill()
            prom.process.wait()


@contextlib.contextmanager
def running(
    ray_temp_dir: str | Path,
    port: int,
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    folder: Path | None = None,
) -> Iterator[LocalPrometheus]:
    """A ready Prometheus scraping the cluster of `ray_temp_dir`, stopped after."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        config = write_files(folder, ray_temp_dir, scrape_interval_s)
        prom = start(config, folder / "data", port)
        stack.callback(stop, prom)
        wait_ready(prom)
        yield prom


def query(url: str, promql: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """An instant query's result (`data.result`) from Prometheus's HTTP API."""
    address = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = json.loads(err.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        raise PrometheusError(f"cannot query {url}: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"query {promql!r}: {body.get('error', body)}")
    return body["data"]["result"]
