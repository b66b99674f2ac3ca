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
from scripts.bench.monitoring_report import monitoring_markdown
from scripts.bench.proc import snapshot

PROM = mon.TARGET_CONDITION
CONDS = list(mon.CONDITIONS)


def windows(phase: str, figures: list[tuple[float, float]]) -> list[dict]:
    """Pairs of windows in the schedule's order; figures are (none, prom) per pair."""
    key = "samples_per_s" if phase == "train" else "rps"
    out = []
    for pair, cond in mon.schedule(CONDS, len(figures)):
        value = figures[pair][0 if cond == mon.BASELINE else 1]
        w = {"pair": pair, "condition": cond, key: value, "scrapes": 0}
        if cond == PROM:
            w |= {"scrapes": 3, "scrape_s": 0.09, "prometheus_cores": 0.002}
        if phase == "serve":
            w["p99_ms"] = 100.0
        else:
            w["epochs"] = 10
            w["cores"] = {"ray_workers": 1.5 if cond == PROM else 1.51}
            w["machine_cores"] = {"busy": 1.8, "idle": 0.1, "steal": 0.1}
        out.append(w)
    return out


def section() -> dict:
    """Three pairs; Prometheus costs training 1 %, 2 %, 5 %."""
    train = windows("train", [(400.0, 396.0), (401.0, 392.98), (402.0, 381.9)])
    serve = windows("serve", [(200.0, 200.0), (200.0, 192.0), (200.0, 204.0)])
    return {
        "work": {
            "train": {**mon.TRAIN_WORK, "epochs": 60},
            "serve": "cnn app, c=32",
            "warmup": "a 3-epoch run",
        },
        "windows": {"pairs": 3, "train_window_s": 25, "serve_s": 15, "settle_s": 2},
        "conditions": mon.CONDITIONS,
        "head_cpus": mon.HEAD_CPUS,
        "loadavg": {"start": [1.0, 1.0, 1.0], "end": [2.0, 1.5, 1.0]},
        "train_foreign_cores": 0.25,
        "train": train,
        "serve": serve,
        **mon.summarise(train, serve),
    }


def test_the_windows_go_in_pairs_whose_order_alternates():
    assert mon.schedule(CONDS, 3) == [
        (0, CONDS[0]),
        (0, CONDS[1]),
        (1, CONDS[1]),
        (1, CONDS[0]),
        (2, CONDS[0]),
        (2, CONDS[1]),
    ]


def test_a_window_counts_the_epochs_wholly_inside_it_after_epoch_0():
    def end(epoch, rank, t, seconds=2.0, samples=100):
        return {"event": "epoch_end", "epoch": epoch, "rank": rank, "t": t,
                "seconds": seconds, "samples": samples}  # fmt: skip

    marks = [
        {
            "event": "epoch_end",
            "epoch": 5,
            "rank": 0,
            "t": 1.0,
            "seconds": 1,
            "samples": 1,
        },  # fmt: skip
        end(0, 0, 12.0),
        end(0, 1, 12.1),  # fmt: skip
        end(1, 0, 14.5),
        end(1, 1, 15.0),  # fmt: skip
        end(2, 0, 17.0),
        end(2, 1, 17.4),  # fmt: skip
        end(3, 0, 20.0),  # the other rank never ended it
    ]
    epochs = mon.epochs_between(marks, 5.0, 30.0)
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert epochs[1] == {"epoch": 1, "start": 12.5, "end": 15.0, "samples": 200}
    # Epoch 0 is start-up; epoch 2 starts at 15.0, so only [12, 16] takes epoch 1.
    got = mon.window_throughput(epochs, 10.0, 16.0)
    assert got == {"samples_per_s": 200 / 2.5, "epochs": 1}
    assert mon.window_throughput(epochs, 13.0, 30.0)["epochs"] == 1  # epoch 2
    assert mon.window_throughput(epochs, 16.0, 17.0) == {
        "samples_per_s": None,
        "epochs": 0,
    }
    assert mon.epoch_wall_s(marks, 5.0, 30.0) == pytest.approx((17.4 - 12.1) / 2)


def test_ratios_are_paired_within_a_pair_with_their_range():
    s = section()
    train = s["ratios"][f"{PROM}/{mon.BASELINE} train"]
    serve = s["ratios"][f"{PROM}/{mon.BASELINE} serve"]
    assert train["n"] == 3
    assert train["median"] == pytest.approx(0.98)
    assert (train["min"], train["max"]) == (pytest.approx(0.95), pytest.approx(0.99))
    assert serve["median"] == pytest.approx(1.0)
    assert serve["min"] == pytest.approx(0.96)
    summary = s["summary"]
    assert summary[PROM]["train_scrapes"]["median"] == 3
    assert summary[mon.BASELINE]["train_scrapes"]["max"] == 0
    assert summary[mon.BASELINE]["train_samples_per_s"]["median"] == 401.0
    # A pair missing a window drops out of the ratios, not the other pairs.
    s["train"] = [w for w in s["train"] if (w["pair"], w["condition"]) != (2, PROM)]
    again = mon.summarise(s["train"], s["serve"])["ratios"]
    assert again[f"{PROM}/{mon.BASELINE} train"]["n"] == 2


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


def test_markdown_has_a_row_per_pair():
    md = "\n".join(monitoring_markdown(section()))
    assert "## Monitoring overhead" in md
    assert "| 1 | none prometheus_15s | 400 / 396 (10 / 10) | 0.990 |" in md
    assert "| 2 | prometheus_15s none | 401 / 393 (10 / 10) | 0.980 |" in md
    assert "| 200 / 192 | 0.960 | 100 / 100 | 0 / 3 / 0 / 3 |" in md
    assert "| 1.51 / 1.50 | 0.10 / 0.10 | 0.10 / 0.10 |" in md
    assert f"| {PROM}/none train | 0.980 (0.950-0.990) |" in md
    assert monitoring_markdown({"skipped": "failed: x"})[-1] == "skipped: failed: x"


def test_scrape_query_counts_up_samples_in_the_window_ending_at_its_end():
    # [100.000, 112.499]: a sample stamped at the window's end is the next's.
    assert mon.scrape_query(100.0, 112.5) == (
        "sum(count_over_time(up[12499ms] @ 112.499))"
    )
    assert mon.scrape_query(99.9994, 112.5003, "scrape_duration_seconds", "sum") == (
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
        assert snapshot()[prom.process.pid][0] > 0
    assert snapshot()[os.getpid()][0] > 0


def test_scrape_cost_adds_up_what_each_process_spent():
    from scripts.bench.scrape_cost import spent

    before = {1: (2.0, "agent", 0), 2: (1.0, "replica", 0)}
    after = {1: (2.08, "agent", 0), 2: (1.0, "replica", 0), 3: (0.02, "new", 1)}
    total, top = spent(before, after)
    assert total == 0.1 and top == [(0.08, "agent"), (0.02, "new")]


def test_a_stopped_prometheus_scrapes_nothing_in_its_window(tmp_path):
    """The switch on a real Prometheus scraping itself every second: no scrape
    and no CPU while stopped; scraping again once resumed."""
    if not shutil.which(local.PROMETHEUS):
        pytest.skip(f"`prometheus` is not installed: {local.INSTALL_HINT}")
    port = free_port()
    sd = local.service_discovery_file(tmp_path)
    sd.write_text(json.dumps([{"targets": [f"{LOOPBACK}:{port}"], "labels": {}}]))
    with local.running(
        tmp_path, port, scrape_interval_s=1, folder=tmp_path / "p"
    ) as prom:
        switch = mon.Switch(prom.process.pid)
        time.sleep(1.5)
        got = []
        try:
            for cond in (mon.BASELINE, PROM):
                w = mon.open_window(0, cond, switch, settle_s=0.5)
                time.sleep(3.5)
                got.append(mon.close_window(w, switch.pid))
        finally:
            switch.resume()
        mon.add_scrapes(prom.url, got)
    none, scraping = got
    assert none["scrapes"] == 0 and none["prometheus_cores"] == 0
    assert "prometheus" not in none["cores"]
    for w in got:  # the machine's CPU over the window adds up to its cores
        m = w["machine_cores"]
        assert set(m) == {"busy", "idle", "steal"} and min(m.values()) >= 0
        assert sum(m.values()) == pytest.approx(os.cpu_count(), rel=0.2)
    assert 2 <= scraping["scrapes"] <= 4 and scraping["scrape_s"] > 0
    assert none["targets"] == 1 and none["end"] <= scraping["switched"]
