"""The benchmark's pure parts: statistics, timing marks, tables, result schema.

No timing is asserted here: the numbers come from `make bench`.
"""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

from scripts.bench import (
    cli,
    commands,
    cpu,
    load,
    marks,
    proc,
    report,
    settings,
    startup,
    stats,
)


def test_stats_median_range_and_nan():
    s = stats.stats([3.0, 1.0, 2.0, float("nan"), None])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert stats.stats([1.0, 2.0, 3.0, 4.0])["median"] == 2.5
    empty = stats.stats([])
    assert empty["median"] is None and empty["n"] == 0


def test_paired_ratios_are_taken_within_a_round():
    r = stats.paired_ratios([90.0, 100.0, 50.0], [100.0, 100.0, 100.0])
    assert r["values"] == [0.9, 1.0, 0.5]
    assert r["median"] == 0.9 and r["min"] == 0.5 and r["max"] == 1.0
    # A missing figure drops that round, not the whole ratio.
    assert stats.paired_ratios([None, 2.0], [1.0, 1.0])["values"] == [2.0]


def test_fmt_stats():
    assert stats.fmt_stats(stats.stats([1.0, 2.0, 3.0])) == "2.0 (1.0-3.0)"
    assert stats.fmt_stats(stats.stats([150.0])) == "150"
    assert stats.fmt_stats(None) == "-"
    assert stats.fmt_stats(stats.stats([])) == "-"


def _marks(t0: float) -> list[dict]:
    out = [
        {"event": "driver_start", "t": t0 + 2, "pid": 1},
        {"event": "worker_start", "t": t0 + 5, "pid": 2},
        {"event": "worker_start", "t": t0 + 6, "pid": 3},
        {"event": "worker_ready", "t": t0 + 7, "pid": 2, "rank": 0},
        {"event": "worker_ready", "t": t0 + 8, "pid": 3, "rank": 1},
        {"event": "first_step", "t": t0 + 9, "pid": 2, "rank": 0},
    ]
    for epoch, end in ((0, 20), (1, 30), (2, 40)):
        for rank, secs in ((0, 8.0), (1, 9.0)):
            out.append(
                {
                    "event": "epoch_end",
                    "t": t0 + end + rank * 0.1,
                    "pid": 2 + rank,
                    "rank": rank,
                    "epoch": epoch,
                    "samples": 100,
                    "seconds": secs,
                    "batches": 4,
                    "page_faults": 40 * epoch + rank,
                }
            )
    return out


def test_steady_throughput_skips_the_first_epoch():
    tp = marks.steady_throughput(_marks(0.0))
    assert tp["epochs"] == 2
    # epochs 1 and 2: (40 + 41 + 80 + 81) faults over 4 x 4 steps
    assert tp["faults_per_step"] == pytest.approx(242 / 16)
    # 2 epochs x 2 ranks x 100 samples over 2 x the slowest rank's 9 s.
    assert tp["loop"] == pytest.approx(400 / 18)
    # The same samples over epoch end 0 -> epoch end 2 (latest rank): 20 s.
    assert tp["wall"] == pytest.approx(400 / 20)
    assert marks.steady_throughput([])["loop"] is None


def test_phases_follow_the_milestones():
    p = marks.phases(_marks(100.0), 100.0, 150.0)
    assert p["launch->driver_start"] == 2.0
    assert p["driver_start->worker_start"] == 3.0
    assert p["worker_start->worker_ready"] == 3.0  # the slower rank
    assert p["worker_ready->first_step"] == 1.0
    assert p["last_epoch_end->exit"] == pytest.approx(9.9)
    assert sorted(p, key=marks.phase_order) == list(p)


def test_read_marks_ignores_torn_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"event": "a", "t": 1.0}) + "\n{not json\n")
    assert marks.read_marks(path) == [{"event": "a", "t": 1.0}]
    assert marks.read_marks(tmp_path / "missing") == []


def _results() -> dict:
    s = stats.stats([100.0, 90.0, 110.0])
    r = stats.stats([0.9, 0.95, 1.0])
    return {
        "schema": settings.SCHEMA,
        "date": "2025-01-01 00:00:00 +0000",
        "mode": "quick",
        "command": "python -m scripts.bench --quick",
        "wall_s": 100.0,
        "machine": {"cpus": 2, "loadavg_start": [1, 1, 1], "loadavg_end": [1, 1, 1]},
        "versions": {"ray": "2.60.0"},
        "notes": ["shared machine"],
        "train": {
            "work": settings.TRAIN_WORK,
            "summary": {
                "torchrun": {
                    "loop_samples_per_s": s,
                    "wall_samples_per_s": s,
                    "ray_daemon_cores": stats.stats([0.0]),
                    "foreign_cores": stats.stats([0.5]),
                    "train_thread_run": stats.stats([0.93, 0.91]),
                    "train_thread_runqueue_wait": stats.stats([0.012, 0.0125]),
                    "train_thread_preemptions_per_s": stats.stats([102.0, 104.0]),
                    "loop_faults_per_step": stats.stats([2.0, 6.0]),
                }
            },
            "ratios": {"ray_lean/torchrun": r},
            "interleaved": {
                "work": settings.INTERLEAVED_WORK,
                "slice_s": 2.0,
                "rounds": [
                    {
                        "first_turn": "ray_lean",
                        "slices": 40,
                        "ray_lean": {
                            "samples_per_s": 380.0,
                            "epochs": 7,
                            "faults_per_step": 3.0,
                        },
                        "torchrun": {"samples_per_s": 400.0, "epochs": 8},
                    }
                ],
                "summary": {
                    "ray_lean": stats.stats([380.0]),
                    "torchrun": stats.stats([400.0]),
                },
                "ratio": stats.stats([0.95]),
            },
        },
        "startup": {"skipped": "failed: no head"},
        "plan": {"summary": {"dev": stats.stats([3.0])}},
    }


def test_targets_and_markdown():
    res = _results()
    res["targets"] = report.targets(res)
    names = {t["name"]: t for t in res["targets"]}
    ray = names["Ray Train (lean) / torchrun throughput, runs in turn"]
    assert ray["median"] == 0.95 and ray["met"] is True
    il = names["Ray Train (lean) / torchrun throughput, interleaved slices"]
    assert il["median"] == 0.95 and il["met"] is True
    for ingress in ("HAProxy ingress", "Ray proxy ingress"):
        assert names[f"Serve batched ({ingress}) p99 ms, MLP c=8"]["met"] is None
    md = report.render_markdown(res)
    assert "| torchrun | 100 (90.0-110) |" in md
    assert "| 0.92 (0.91-0.93) | 0.012 (0.012-0.013) | 103 (102-104) | 4 (2-6) |" in md
    assert "| ray_lean/torchrun | 0.95 (0.90-1.00) |" in md
    assert "| 1 | ray_lean | 380 (7) | 400 (8) | 0.950 | 3 / - |" in md
    assert "SCHED_IDLE while it runs" not in md  # no idle-priority variant ran
    assert "skipped: failed: no head" in md
    assert "note: shared machine" in md
    assert "| dev | 3.0 |" in md
    assert report.check_schema(res) == []


@pytest.mark.parametrize("interleaved", [None, {"skipped": "failed: no warm-up"}])
def test_targets_without_interleaved_rounds_are_not_measured(interleaved):
    res = _results()
    res["train"]["interleaved"] = interleaved
    names = {t["name"]: t for t in report.targets(res)}
    il = names["Ray Train (lean) / torchrun throughput, interleaved slices"]
    assert il["median"] is None and il["met"] is None
    md = report.render_markdown({**res, "targets": []})
    assert "### Interleaved runs" not in md
    assert ("Interleaved runs: skipped: failed: no warm-up" in md) == bool(interleaved)
    assert "| ray_lean/torchrun | 0.95 (0.90-1.00) |" in md  # runs in turn kept


def test_overlap_seconds_counts_only_resumed_time():
    slices = [(10.0, 12.0), (14.0, 16.0), (18.0, 20.0)]
    assert marks.overlap_seconds(11.0, 19.0, slices) == 1.0 + 2.0 + 1.0
    assert marks.overlap_seconds(12.0, 14.0, slices) == 0.0
    assert marks.overlap_seconds(0.0, 100.0, []) == 0.0


def test_active_throughput_skips_warmup_unfinished_and_late_epochs():
    slices = [(0.0, 2.0), (4.0, 6.0), (8.0, 10.0), (12.0, 14.0)]

    def end(epoch, rank, t, seconds, samples=100):
        return {
            "event": "epoch_end",
            "epoch": epoch,
            "rank": rank,
            "t": t,
            "seconds": seconds,
            "samples": samples,
            "batches": 10,
            "page_faults": 1000 * epoch + rank,
        }

    ends = [
        end(0, 0, 1.0, 1.0),  # warm-up: skipped
        end(0, 1, 1.0, 1.0),
        # epoch 1 ran 1.5-5.5 wall, of which 0.5 + 1.5 s resumed; rank 1 slower
        end(1, 0, 5.0, 3.5),
        end(1, 1, 5.5, 4.0),
        end(2, 0, 9.0, 3.0),  # 6.0-9.0: 1 s resumed
        end(2, 1, 9.0, 3.0),
        end(3, 0, 13.0, 3.0),  # only rank 0 ended: incomplete
        {"event": "reported", "epoch": 1, "rank": 0, "t": 5.6},
    ]
    got = marks.active_throughput(ends, slices, until=20.0)
    assert got["epochs"] == 2
    assert got["active_s"] == 3.0
    assert got["samples_per_s"] == 400 / 3.0
    # the counted epochs 1 and 2 only: (1000 + 1001 + 2000 + 2001) over 40 steps
    assert got["faults_per_step"] == 6002 / 40
    # epochs ending after the other run finished (alone on the machine) drop out
    late = marks.active_throughput(ends, slices, until=6.0)
    assert late["epochs"] == 1 and late["samples_per_s"] == 200 / 2.0
    assert late["faults_per_step"] == 2001 / 20
    # marks without counts (off Linux): no figure
    bare = [{k: v for k, v in m.items() if k != "page_faults"} for m in ends]
    assert marks.active_throughput(bare, slices, until=20.0)["faults_per_step"] is None
    assert marks.active_throughput([], slices, until=20.0)["samples_per_s"] is None


def test_warmed_up_needs_every_rank(tmp_path):
    marks_file = tmp_path / "m.jsonl"
    lines = [{"event": "epoch_end", "epoch": 0, "rank": 0, "t": 1.0}]
    marks_file.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert not marks.warmed_up(marks_file, 2)
    lines.append({"event": "epoch_end", "epoch": 0, "rank": 1, "t": 1.2})
    marks_file.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert marks.warmed_up(marks_file, 2)


def test_check_schema_finds_problems():
    res = _results()
    res["targets"] = [{"name": "x"}]
    del res["versions"]
    res["machine"]["cpus"] = "two"
    problems = report.check_schema(res)
    assert "missing key 'versions'" in problems
    assert "machine.cpus must be an integer" in problems
    assert any("wrong keys" in p for p in problems)


def test_parse_args_rejects_unknown_sections(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--only", "train,gpu"])
    assert "unknown section" in capsys.readouterr().err
    assert cli.parse_args(["--quick", "--only", "plan"]).sections == ["plan"]


def test_percentile_nearest_rank():
    vals = sorted(float(v) for v in range(1, 101))
    assert stats.percentile(vals, 50) == 50.0
    assert stats.percentile(vals, 99) == 99.0
    assert math.isnan(stats.percentile([], 50))


def test_wrk_script_carries_the_exact_body():
    body = bytes(range(256))
    script = load.wrk_script(body, "application/octet-stream", 10)
    literal = script.split('wrk.body = "')[1].split('"\n')[0]
    decoded = bytes(int(literal[i + 1 : i + 4]) for i in range(0, len(literal), 4))
    assert decoded == body
    assert "count >= limit" in script and "local limit = 10" in script


def test_classify_processes():
    ray = "/v/lib/python3.11/site-packages/ray"
    gcs = (
        f"{ray}/core/src/ray/gcs/gcs_server --log_dir=/tmp/rg/logs --gcs_server_port=0"
    )
    assert cpu.classify(gcs) == "ray_gcs"
    # The raylet names the workers' command (default_worker.py) on its own.
    raylet = (
        f"{ray}/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/rg/sockets/raylet"
        f" --python_worker_command=/v/bin/python {ray}/_private/workers/"
        "default_worker.py --node-ip-address=127.0.0.1"
    )
    assert cpu.classify(raylet) == "ray_raylet"
    idle = f"/v/bin/python {ray}/_private/workers/default_worker.py --raylet-name=x"
    assert cpu.classify(idle) == "ray_idle_workers"
    # torchrun's agent names the workers' module; the workers do not name torchrun.
    worker = settings.TORCHRUN_WORKER
    agent = f"/v/bin/python /v/bin/torchrun --nproc_per_node 2 -m {worker}"
    assert cpu.classify(agent) == "torchrun_agent"
    rank = f"/v/bin/python -u -m {worker} --model cnn"
    assert cpu.classify(rank) == "torchrun_workers"
    assert cpu.classify("ray::RayTrainWorker.run") == "ray_workers"
    assert cpu.classify("ray::TrainController.run") == "train_controller"
    assert cpu.classify(f"python -m {worker}") == "torchrun_workers"
    assert cpu.classify("ray::PlacementGroupCleaner") == "train_helpers"
    driver = f"python -m {settings.RAYTRAIN_DRIVER} --"
    assert cpu.classify(driver) == "ray_driver"
    server = f"python -m {settings.FASTAPI_SERVER} --port 1"
    assert cpu.classify(server) == "fastapi_server"
    assert cpu.classify("vim") == "other"
    cores = {"ray_gcs": 0.1, "ray_raylet": 0.2, "ray_workers": 1.5}
    assert cpu.ray_daemon_cores(cores) == pytest.approx(0.3)
    cores |= {"train_helpers": 0.05, "ray_idle_workers": 0.01, "other": 1.0}
    assert cpu.overhead_cores(cores) == pytest.approx(0.36)
    assert cpu.overhead_cores({"torchrun_agent": 0.02}) == 0.02


def test_cpu_sampler_counts_this_process():
    import time

    with cpu.CpuSampler(interval_s=0.05) as s:
        start = time.process_time()
        while time.process_time() - start < 0.3:  # 0.3 s of CPU, however slow
            pass
    assert s.groups().get("bench", 0) >= 0.25
    assert all(v >= 0 for v in s.cores().values())
    tb = s.history[-1][0]
    assert s.cores_between(tb + 1, tb + 2) is None


def test_cpu_sampler_reads_sub_windows():
    """A child busy, then idle: each sub-window shows only its own use."""
    import subprocess
    import sys
    import time

    code = (
        "import time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.6: pass\n"
        "print('done', flush=True)\ntime.sleep(30)\n"
    )
    with cpu.CpuSampler(interval_s=0.1) as s:
        t_start = time.time()
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"done\n"
            t_mid = time.time()
            time.sleep(0.8)
            t_end = time.time()
        finally:
            child.kill()
            child.wait()
    busy = s.cores_between(t_start, t_mid).get("other", 0.0)
    idle = s.cores_between(t_mid, t_end).get("other", 0.0)
    # The child burned 0.6 s of CPU before `done`: check CPU seconds (cores times
    # the span between the polls used), which do not shrink when other processes
    # share the cores, as its share of a core does.
    (ta, _), (tb, _) = cpu._ends_inside(s.history, t_start, t_mid)
    assert busy * (tb - ta) > 0.3
    assert idle < 0.1


def test_worker_waits_show_two_busy_workers_sharing_one_core():
    """Two training-worker processes (by command line) pinned to one core: each
    one's busiest thread waits on the run queue about half the time. Real
    processes, real /proc."""
    import subprocess
    import sys
    import time

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    if not any(run > 0 for run, _, _ in cpu.thread_stats(os.getpid()).values()):
        pytest.skip("this kernel reports no per-thread schedstat")
    cpus = sorted(os.sched_getaffinity(0))
    spin = "import time\nwhile True: pass\n"

    def worker(core):  # named like torchrun's workers so the sampler tracks it
        argv = [sys.executable, "-c", spin, settings.TORCHRUN_WORKER]
        p = subprocess.Popen(argv)
        os.sched_setaffinity(p.pid, {core})
        return p

    shared = [worker(cpus[0]), worker(cpus[0])]
    try:
        with cpu.CpuSampler(interval_s=0.2, thread_s=0.2) as s:
            time.sleep(0.5)
            t_a = time.time()
            time.sleep(2.5)
            t_b = time.time()
            time.sleep(0.3)
    finally:
        for p in shared:
            p.kill()
            p.wait()
    waits = {w["pid"]: w for w in s.worker_waits_between(t_a, t_b)}
    assert set(waits) == {p.pid for p in shared}
    for w in waits.values():
        assert 1.5 <= w["span_s"] <= 2.6  # the reads nearest inside the window
        assert w["run"] < 0.75  # shares the core with the other
        assert w["runqueue_wait"] > 0.25
        # shares of the same span; a poll delayed at one end skews it a little
        assert w["run"] + w["runqueue_wait"] <= 1.1
        assert w["preemptions_per_s"] > 1
    assert s.worker_waits_between(t_b + 10, t_b + 20) is None


def test_busiest_thread_waits_picks_the_training_thread():
    a = {1: (10.0, 1.0, 100), 2: (0.5, 0.1, 5), 3: (0.0, 0.0, 0)}
    b = {1: (19.0, 1.5, 600), 2: (0.6, 0.2, 7), 4: (9.0, 0.0, 0)}  # 4 is new
    w = cpu.busiest_thread_waits(a, b, 10.0)
    assert w == {"run": 0.9, "runqueue_wait": 0.05, "preemptions_per_s": 50.0}
    assert cpu.busiest_thread_waits(a, a, 10.0) is None  # nothing ran
    assert cpu.busiest_thread_waits(a, b, 0.0) is None
    assert cpu.thread_stats(os.getpid())  # this process's own threads
    assert cpu.thread_stats(2**22 + 12345) == {}  # no such process


def test_steady_window_spans_the_measured_epochs():
    ends = [
        {"event": "epoch_end", "epoch": 0, "t": 10.0},
        {"event": "epoch_end", "epoch": 0, "t": 10.5},
        {"event": "epoch_end", "epoch": 1, "t": 20.0},
        {"event": "epoch_end", "epoch": 2, "t": 30.0},
        {"event": "epoch_end", "epoch": 2, "t": 30.2},
    ]
    assert marks.steady_window(ends) == (10.5, 30.2)
    assert marks.steady_window(ends[:2]) is None


def test_idle_priority_moves_only_the_clusters_overhead(tmp_path):
    """Real processes: Ray-like helpers of the marked cluster go to SCHED_IDLE
    (every thread); a training worker and other clusters' processes stay."""
    import subprocess
    import sys
    import time

    marker = str(tmp_path / "rg-cluster")
    code = (
        "import threading, time; threading.Thread(target=time.sleep, args=(60,))"
        ".start(); time.sleep(60)"
    )

    def spawn(*words):
        return subprocess.Popen([sys.executable, "-c", code, *words])

    helper = spawn("ray::PlacementGroupCleaner", marker)
    worker = spawn("ray::RayTrainWorker", marker)
    raylet = spawn("raylet", marker)  # forks the workers: must keep its priority
    stranger = spawn("ray::PlacementGroupCleaner", str(tmp_path / "other"))
    procs = [helper, worker, raylet, stranger]
    try:
        deadline = time.monotonic() + 20
        while any(len(os.listdir(f"/proc/{p.pid}/task")) < 2 for p in procs):
            assert time.monotonic() < deadline, "children did not start their thread"
            time.sleep(0.05)
        with cpu.IdlePriority([marker]) as idle:
            pass

        def policies(p):
            tids = [int(t) for t in os.listdir(f"/proc/{p.pid}/task")]
            return {os.sched_getscheduler(t) for t in tids}

        assert policies(helper) == {os.SCHED_IDLE}
        assert policies(worker) == {os.SCHED_OTHER}
        assert policies(raylet) == {os.SCHED_OTHER}
        assert policies(stranger) == {os.SCHED_OTHER}
        assert set(idle.moved.values()) == {"train_helpers"}
        assert len(idle.moved) == 2
        assert not idle.idle_worker_threads
        # A training worker found at SCHED_IDLE is reported.
        tid = int(os.listdir(f"/proc/{worker.pid}/task")[0])
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        idle.poll()
        assert idle.idle_worker_threads == {tid}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_train_process_timeline_reads_rays_worker_logs(tmp_path):
    import datetime

    logs = tmp_path / "session_latest" / "logs"
    logs.mkdir(parents=True)

    def worker(wid, job, pid, out, stamp):
        (logs / f"worker-{wid}-{job}-{pid}.out").write_text(out)
        (logs / f"python-core-worker-{wid}_{pid}.log").write_text(
            f"[2026-11-29 {stamp} I {pid} {pid}] core_worker_process.cc:1: up\n"
        )

    worker(
        "aa",
        "01000000",
        11,
        ":job_id:01000000 :actor_name:TrainController\n",
        "02:06:51,960",
    )
    worker(
        "bb",
        "01000000",
        12,
        ":job_id:01000000 :actor_name:RayTrainWorker\nhi",
        "02:06:59,000",
    )
    worker(
        "cc",
        "01000000",
        13,
        ":job_id:01000000 :actor_name:RayTrainWorker\n",
        "02:06:59,500",
    )
    worker("dd", "ffffffff", 14, "", "02:06:49,000")  # a prestarted idle worker
    worker("ee", "01000000", 15, ":actor_name:Old\n", "01:00:00,000")  # another run
    (logs / "worker-broken.out").write_text(":actor_name:X")

    def ts(hms):
        return datetime.datetime.strptime(
            f"2026-11-29 {hms}", "%Y-%m-%d %H:%M:%S.%f"
        ).timestamp()

    starts = startup.ray_process_starts(str(tmp_path))
    assert [(p["actor"], p["pid"]) for p in starts] == [
        ("Old", 15),
        (None, 14),
        ("TrainController", 11),
        ("RayTrainWorker", 12),
        ("RayTrainWorker", 13),
    ]
    run = {
        "t_launch": ts("02:06:45.0"),
        "t_fit_start": ts("02:06:50.5"),
        "t_exit": ts("02:07:30.0"),
    }
    assert startup.train_process_timeline(str(tmp_path), run) == {
        "TrainController": pytest.approx(1.46),
        "RayTrainWorker": pytest.approx(9.0),
    }
    no_fit = {**run, "t_fit_start": None}
    assert startup.train_process_timeline(str(tmp_path), no_fit) == {}


def test_freezer_pauses_and_resumes_a_whole_process_tree(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    counter = tmp_path / "count"
    # The child replaces the file whole (write a temporary, then rename), so a
    # read never sees it truncated and half written.
    child = (
        "import os, time, pathlib\n"
        f"p = pathlib.Path({str(counter)!r}); t = p.with_suffix('.tmp'); n = 0\n"
        "while True:\n"
        "    n += 1; t.write_text(str(n)); os.replace(t, p); time.sleep(0.01)\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
            "time.sleep(120)\n",
        ],
        start_new_session=True,
    )

    def count() -> int:
        try:
            return int(counter.read_text())
        except (OSError, ValueError):
            return -1

    def wait_for(predicate, what, seconds: float = 30) -> None:
        """`what` (a callable) says, at the deadline, what was seen."""
        deadline = time.monotonic() + seconds
        while not predicate():
            assert time.monotonic() < deadline, what()
            time.sleep(0.05)

    def states() -> set[str]:
        out = set()
        for pid in freezer._tree():
            with open(f"/proc/{pid}/stat") as f:
                out.add(f.read().rsplit(")", 1)[1].split()[0])
        return out

    freezer = proc.Freezer(parent.pid)
    try:
        wait_for(lambda: count() >= 5, lambda: "child never started")
        assert len(freezer._tree()) == 2  # the parent and its child
        freezer.pause()
        # A signalled process stops when it next runs, so allow it a moment.
        wait_for(lambda: states() == {"T"}, lambda: f"not all stopped: {states()}")
        time.sleep(0.1)
        paused_at = count()
        time.sleep(0.4)
        assert count() == paused_at
        freezer.resume()
        wait_for(lambda: "T" not in states(), lambda: f"not all resumed: {states()}")
        # A loaded machine may take a while to schedule the child again.
        wait_for(lambda: count() > paused_at, lambda: f"child stayed at {count()}")
    finally:
        freezer.resume()
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread faults")
def test_the_torchrun_baseline_marks_its_epochs(tmp_path):
    """The torchrun_worker module under the real torchrun, as the bench runs it (2
    ranks, gloo; the MLP on digits; mlcore.loop.train_epochs with the marks
    hook): each rank's epoch mark carries its steps and the training loop's page
    faults, which the bench turns into faults a step."""
    import subprocess

    marks_file = tmp_path / "marks.jsonl"
    work = {"model": "mlp", "dataset": "digits", "epochs": 2, "batch_size": 64}
    argv = commands.torchrun_argv(work, tmp_path / "out")  # the bench's own command
    env = proc.child_env(marks_file)  # and its own environment
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ends = [m for m in marks.read_marks(marks_file) if m["event"] == "epoch_end"]
    got = sorted((m["epoch"], m["rank"]) for m in ends)
    assert got == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(m["batches"] > 0 and m["page_faults"] >= 0 for m in ends)
    tp = marks.steady_throughput(marks.read_marks(marks_file))
    assert tp["epochs"] == 1 and tp["faults_per_step"] is not None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "checkpoint_epoch0000_attempt01",
        "checkpoint_epoch0001_attempt01",
    ]


def test_the_marks_variable_is_the_one_the_training_code_reads():
    from mlcore.marks import MARKS_ENV

    assert settings.MARKS_ENV == MARKS_ENV


def test_the_allocator_section_in_markdown():
    def setting(faults, faulting):
        return {
            "faults_per_step": stats.stats(faults),
            "steps_faulting": stats.stats(faulting),
            "steps": 40,
        }

    res = _results()
    res["allocator"] = {
        "workloads": {"loop": "a CNN loop", "replica": "a replica"},
        "transparent_huge_pages": "madvise",
        "faulting_above": 256,
        "summary": {
            "loop": {
                "default": setting([3000.0, 4000.0], [28.0, 30.0]),
                "tuned": setting([0.0, 2.0], [0.0, 0.0]),
            }
        },
        "ratios": {"loop default/tuned": stats.stats([2000.0])},
    }
    res["targets"] = report.targets(res)
    md = report.render_markdown(res)
    assert "## 5. Allocator settings (page faults)" in md
    assert "loop: a CNN loop; replica: a replica. Transparent huge pages: madvise" in md
    assert "| loop | default | 3500 (3000-4000) | 29 (28-30) (40) |" in md
    assert "| loop | tuned | 1.0 (0.0-2.0) | 0 (0-0) (40) |" in md
    assert "| loop default/tuned | 2000 |" in md
    assert report.check_schema(res) == []
    assert "## 5." not in report.render_markdown({**_results(), "targets": []})
