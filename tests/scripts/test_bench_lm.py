"""scripts/bench/lm.py: its children's arguments and result lines, and the save
benchmark's rank program on a 2-rank gloo group (preset "nano", one round, to
local disk and to moto_server on loopback)."""

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


def test_the_save_benchmark_times_both_ways_on_two_ranks(tmp_path, s3_bucket):
    args = ["-m", "scripts.bench.lm", "save", "--preset", "nano", "--rounds", "1"]
    args += ["--out", str(tmp_path), "--s3", f"s3://{s3_bucket}/saves"]
    procs = launch(args, world=2, port=free_port())  # moto's endpoint in env
    assert all(p.returncode == 0 for p in procs), procs[0].stdout[-3000:]
    result = bench_lm._result_text(procs[0].stdout)
    assert {k: len(v) for k, v in result["seconds"].items()} == {
        "sharded": 1,
        "full": 1,
        "sharded_s3": 1,
        "full_s3": 1,
    }
    # the same model and optimizer state either way, within DCP's metadata
    sizes = result["bytes"]
    assert 0.5 * sizes["full"] < sizes["sharded"] < 2 * sizes["full"]
    assert sizes["full_s3"] == sizes["full"]
    assert abs(sizes["sharded_s3"] - sizes["sharded"]) < 4096  # DCP's paths differ
    assert list(tmp_path.iterdir()) == []  # each round's files are removed
    import boto3

    listed = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="saves/")
    assert [o["Key"] for o in listed.get("Contents", []) if o["Size"]] == []


def test_the_report_shows_both_saves_and_targets_the_local_one():
    from scripts.bench import report
    from scripts.bench.stats import paired_ratios, stats

    def save(sharded, full):
        return {
            "sharded_s": stats(sharded),
            "full_s": stats(full),
            "sharded/full": paired_ratios(sharded, full),
        }

    lm = {
        "work": bench_lm.LM_WORK,
        "tokens_per_s": {v: stats([100.0]) for v in bench_lm.VARIANTS},
        "run_wall_s": {v: stats([9.0]) for v in bench_lm.VARIANTS},
        "ray/torchrun": paired_ratios([96.0], [100.0]),
        "save": {"preset": "small", **save([0.4], [0.5]), "s3": save([3.0], [2.0])},
    }
    lines = report.lm_markdown(lm)
    assert "| local disk | 0.400 | 0.500 | 0.800 |" in lines
    assert "| S3 API on loopback (moto) | 3.000 | 2.000 | 1.500 |" in lines
    (target,) = [t for t in report.targets({"lm": lm}) if "save" in t["name"]]
    assert target["median"] == 0.8 and target["met"] is True
