"""scripts/bench/monitoring.py: the paired arithmetic, the targets and the report
on synthetic rounds, and the scrape count read back from a real Prometheus
(scraping itself through a service-discovery file like the one Ray writes)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from raygpu.localray import free_port
from raygpu.monitoring import local
from raygpu.names import LOOPBACK
from scripts.bench import monitoring as mon
from scripts.bench import report

PROM = mon.TARGET_CONDITION


def run(train: float, rps: float, scrapes: tuple[int, int] | None = None) -> dict:
    out = {
        "train_samples_per_s": train,
        "serve_rps": rps,
        "serve_p99_ms": 100.0,
        "train_foreign_cores": 0.25,
    }
    out["serve_windows"] = [{"rps": rps - 1}, {"rps": rps + 1}]
    if scrapes:
        out["scrapes"] = {
            "train": scrapes[0],
            "serve": scrapes[1],
            "train_s": 0.09,
            "serve_s": 0.03,
            "targets": 3,
        }
        out["prometheus_cores"] = 0.002
    return out


def section() -> dict:
    """Three rounds, order alternating; Prometheus costs 1 %, 2 %, 5 % of training."""
    rounds = []
    for i, (t, s) in enumerate(((0.99, 1.0), (0.98, 0.96), (0.95, 1.02))):
        runs = {
            mon.BASELINE: run(400.0 + i, 200.0),
            PROM: run((400.0 + i) * t, 200 * s, (9, 3)),
        }
        rounds.append(
            {
                "order": mon.rotated(list(mon.CONDITIONS), i),
                "loadavg": [[1.0, 1.0, 1.0], [2.0, 1.5, 1.0]],
                "runs": runs,
            }
        )
    return {
        "work": {"train": {**mon.TRAIN_WORK, "epochs": 6}, "serve": "cnn app, c=32"},
        "conditions": mon.CONDITIONS,
        "head_cpus": mon.HEAD_CPUS,
        "loadavg": {"start": [1.0, 1.0, 1.0], "end": [2.0, 1.5, 1.0]},
        "rounds": rounds,
        **mon.summarise(rounds, list(mon.CONDITIONS)),
    }


def test_the_order_alternates_round_by_round():
    conds = list(mon.CONDITIONS)
    assert [mon.rotated(conds, r)[0] for r in range(4)] == [
        conds[0],
        conds[1],
        conds[0],
        conds[1],
    ]
    assert sorted(mon.rotated(conds, 1)) == sorted(conds)


def test_ratios_are_paired_within_a_round_with_their_range():
    s = section()
    train = s["ratios"][f"{PROM}/{mon.BASELINE} train"]
    serve = s["ratios"][f"{PROM}/{mon.BASELINE} serve"]
    assert train["n"] == 3
    assert train["median"] == pytest.approx(0.98)
    assert (train["min"], train["max"]) == (pytest.approx(0.95), pytest.approx(0.99))
    assert serve["median"] == pytest.approx(1.0)
    assert serve["min"] == pytest.approx(0.96)
    assert s["summary"][PROM]["scrapes_train"]["median"] == 9
    assert s["summary"][mon.BASELINE]["train_samples_per_s"]["median"] == 401.0


def test_targets_read_the_15s_ratios():
    s = section()
    got = {t["name"]: t for t in report.targets({"monitoring": s})}
    train = got["Prometheus scraping every 15 s / none: training samples/s"]
    serve = got["Prometheus scraping every 15 s / none: Serve requests/s"]
    assert (train["target"], train["met"]) == (">= 0.98", True)
    assert (serve["target"], serve["met"]) == (">= 0.97", True)
    s["ratios"][f"{PROM}/{mon.BASELINE} train"]["median"] = 0.97
    got = {t["name"]: t for t in report.targets({"monitoring": s})}
    assert (
        got["Prometheus scraping every 15 s / none: training samples/s"]["met"] is False
    )
    assert all(
        t["met"] is None for t in report.targets({}) if "Prometheus" in t["name"]
    )


def test_markdown_has_a_row_per_round_and_condition():
    md = "\n".join(mon.monitoring_markdown(section()))
    assert "## Monitoring overhead" in md
    assert md.count("| none | ") == 3
    assert md.count(f"| {PROM} | ") == 3
    assert "| 9 / 3 | 0.090 / 0.030 | 3 | 0.002 | 0.25 |" in md
    assert "| 200 (199 / 201) |" in md
    assert f"| {PROM}/none train | 0.980 (0.950-0.990) |" in md
    assert mon.monitoring_markdown({"skipped": "failed: x"})[-1] == "skipped: failed: x"


def test_serve_windows_go_abba_and_combine_into_their_condition():
    conds = list(mon.CONDITIONS)
    assert mon.serve_order(conds) == [conds[0], conds[1], conds[1], conds[0]]
    train = {
        "train_samples_per_s": 100.0,
        "train_prometheus": {
            "scrapes": {"window": 12, "seconds": {"window": 0.4}, "targets": 3},
            "prometheus_cores": 0.002,
        },
    }
    windows = [
        {
            "rps": 80.0,
            "p99_ms": 600.0,
            "requests": 1200,
            "seconds": 15.0,
            "scrapes": {"window": 3, "seconds": {"window": 0.1}, "targets": 3},
            "prometheus_cores": 0.004,
        },
        {
            "rps": 90.0,
            "p99_ms": 500.0,
            "requests": 1350,
            "seconds": 15.0,
            "scrapes": {"window": 3, "seconds": {"window": 0.2}, "targets": 3},
            "prometheus_cores": 0.003,
        },
    ]
    got = mon.combine(PROM, train, windows)
    assert got["serve_rps"] == 85.0 and got["serve_p99_ms"] == 550.0
    assert got["serve_requests"] == 2550 and "train_prometheus" not in got
    assert got["scrapes"] == {
        "train": 12,
        "serve": 6,
        "train_s": 0.4,
        "serve_s": 0.3,
        "targets": 3,
    }
    assert got["prometheus_cores"] == 0.003
    bare = mon.combine(mon.BASELINE, {"train_samples_per_s": 1.0}, windows[:1])
    assert "scrapes" not in bare and bare["serve_rps"] == 80.0


def test_scrape_query_counts_up_samples_in_the_window_ending_at_its_end():
    assert mon.scrape_query(100.0, 112.5) == (
        "sum(count_over_time(up[12500ms] @ 112.500))"
    )
    assert mon.scrape_query(100.0, 112.5, "scrape_duration_seconds", "sum") == (
        "sum(sum_over_time(scrape_duration_seconds[12500ms] @ 112.500))"
    )


def test_scrape_counts_from_a_real_prometheus(tmp_path):
    if not shutil.which(local.PROMETHEUS):
        pytest.skip(f"`prometheus` is not installed: {local.INSTALL_HINT}")
    port = free_port()
    sd = local.service_discovery_file(tmp_path)
    sd.write_text(json.dumps([{"targets": [f"{LOOPBACK}:{port}"], "labels": {}}]))
    before = time.time()
    with local.running(
        tmp_path, port, scrape_interval_s=1, folder=tmp_path / "p"
    ) as prom:
        t0 = time.time()
        deadline = t0 + 20
        counts = {"all": 0}
        while counts["all"] < 3 and time.time() < deadline:  # polls its API
            counts = mon.scrape_counts(prom.url, {"all": (t0 - 1, time.time())})
        assert counts["all"] >= 3
        assert counts["targets"] == 1
        assert 0 < counts["seconds"]["all"] < 5  # each scrape's own seconds
        assert mon.scrape_counts(prom.url, {"x": (before - 60, before - 30)})["x"] == 0
        assert mon.process_cpu_s(prom.process.pid) > 0
    assert mon.process_cpu_s(os.getpid()) > 0


def test_scrape_cost_adds_up_what_each_process_spent():
    from scripts.bench.scrape_cost import spent

    before = {1: (2.0, "agent", 0), 2: (1.0, "replica", 0)}
    after = {1: (2.08, "agent", 0), 2: (1.0, "replica", 0), 3: (0.02, "new", 1)}
    total, top = spent(before, after)
    assert total == 0.1 and top == [(0.08, "agent"), (0.02, "new")]
