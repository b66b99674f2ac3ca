"""scripts/bench/lm.py: its children's arguments and result lines, and the save
benchmark's rank program on a 2-rank gloo group (preset "nano", one round)."""

from __future__ import annotations

import json

import pytest

from raygpu.localray import free_port
from scripts.bench import lm as bench_lm
from tests.ray_jobs.lm_ranks import launch


def test_the_runs_take_the_entry_points_flags(tmp_path):
    args = bench_lm.lm_args(bench_lm.LM_WORK, tmp_path, "lm-ray-0")
    assert "--preset=nano" in args and "--num-workers=2" in args
    assert bench_lm._run_dir(args) == str(tmp_path / "lm-ray-0")
    from lm.train import parse_args

    parsed = parse_args(args)  # lm.train accepts every flag the bench passes
    assert parsed.max_steps == bench_lm.LM_WORK["steps"]


def test_the_result_is_the_last_marked_line(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(
        f"noise\n{bench_lm.PREFIX}{json.dumps({'rates': [1]})}\n"
        f"{bench_lm.PREFIX}{json.dumps({'rates': [2, 3]})}\nmore noise\n"
    )
    assert bench_lm._result(log) == {"rates": [2, 3]}
    log.write_text("no result\n")
    with pytest.raises(ValueError, match="no LM_BENCH line"):
        bench_lm._result(log)


def test_the_save_benchmark_times_both_ways_on_two_ranks(tmp_path):
    args = ["-m", "scripts.bench.lm", "save", "--preset", "nano", "--rounds", "2"]
    procs = launch([*args, "--out", str(tmp_path)], world=2, port=free_port())
    assert all(p.returncode == 0 for p in procs), procs[0].stdout[-3000:]
    result = bench_lm._result_text(procs[0].stdout)
    assert {k: len(v) for k, v in result["seconds"].items()} == {
        "sharded": 2,
        "full": 2,
    }
    # the same model and optimizer state either way, within DCP's metadata
    sharded, full = result["bytes"]["sharded"], result["bytes"]["full"]
    assert 0.5 * full < sharded < 2 * full
    assert list(tmp_path.iterdir()) == []  # each round's files are removed
