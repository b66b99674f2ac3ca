"""lm: the GPT under FSDP2 on 2 CPU workers.

1. Ray Train (`python -m lm.train` in a fresh driver on a running lean head)
   against the same loop under torchrun (`lm.local`): preset "nano" at context
   128, global batch 16 blocks, 60 steps with a checkpoint every 20. Each run's
   steady tokens/s is the median of its intervals after the first (the loop
   times its steps between checkpoints), in alternating rounds; the target is a
   median paired ratio Ray/torchrun >= 0.95.
2. Saving a checkpoint of preset "small" (model and AdamW state, 2 ranks, gloo)
   the way training does (lm.loop.save_checkpoint: every rank writes its DCP
   shard, hashing it as it goes, then rank 0 writes the manifest once all have)
   against the full state gathered to rank 0 and written with torch.save, its
   digest and a small meta.json beside it; to local disk (the target:
   sharded/full <= 1.0) and to the S3 API on loopback (moto_server, started
   here; each side stages locally and uploads, as Ray Train's report does:
   reported). One untimed save of each kind first, then rounds in which the
   four kinds take turns at going first.

The harness side (`bench_lm(bench)`) runs the children below and reads the one
`LM_BENCH {...}` line each prints:

    PYTHONPATH=ray_jobs:. torchrun --nproc_per_node 2 -m scripts.bench.lm local -- ARGS
    PYTHONPATH=ray_jobs:. python -m scripts.bench.lm driver -- ARGS   # $RAY_ADDRESS
    PYTHONPATH=ray_jobs:. torchrun --nproc_per_node 2 -m scripts.bench.lm save \\
        --preset small --rounds 4 --out DIR [--s3 s3://BUCKET/PREFIX]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

LM_WORK = {
    "preset": "nano",
    "context": 128,
    "batch_size": 16,
    "steps": 60,
    "checkpoint_every": 20,
    "corpus_bytes": 2 << 20,
}
SAVE_WORK = {"preset": "small", "rounds": 4}
SAVE_KINDS = ("sharded", "full")
PREFIX = "LM_BENCH "
VARIANTS = ("torchrun", "ray")
S3_BUCKET = "rg-bench-lm"


def lm_args(work: dict, storage: Path, run_name: str) -> list[str]:
    return [
        f"--preset={work['preset']}",
        f"--context={work['context']}",
        f"--batch-size={work['batch_size']}",
        f"--max-steps={work['steps']}",
        f"--checkpoint-every={work['checkpoint_every']}",
        f"--corpus-bytes={work['corpus_bytes']}",
        "--keep-checkpoints=100",  # every interval's manifest is a measurement
        "--max-failures=0",
        "--num-workers=2",
        f"--storage-path={storage}",
        f"--run-name={run_name}",
    ]


# ------------------------------------------------------------ the child side


def interval_rates(run_dir: str) -> list[float]:
    """tokens/s of each checkpoint interval of a run, in step order."""
    from lm import checkpoint as ckpt
    from mlcore.storage import parse_storage

    found = sorted(ckpt.list_checkpoints(parse_storage(run_dir)), key=lambda c: c[:2])
    rates = []
    for _, _, folder in found:
        manifest = ckpt.verify_local(folder.path, digests=False)
        rates.append(manifest["metrics"]["tokens_per_second"])
    return rates


def _run_dir(argv: list[str]) -> str:
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    return os.path.join(os.path.expanduser(opts["storage-path"]), opts["run-name"])


def child_local(argv: list[str]) -> int:
    from lm.local import main

    rc = main(argv)
    if int(os.environ.get("RANK", "0")) == 0:
        print(PREFIX + json.dumps({"rates": interval_rates(_run_dir(argv))}))
    return rc


def child_driver(argv: list[str]) -> int:
    import ray

    from lm.train import main

    # Workers import lm.loop from ray_jobs/, as the driver does (the PYTHONPATH
    # the harness gave), without a working_dir upload.
    ray.init(
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
    )
    rc = main(argv)
    print(PREFIX + json.dumps({"rates": interval_rates(_run_dir(argv))}))
    return rc


def child_save(preset: str, rounds: int, out: str, s3: str | None = None) -> int:
    """Each round every kind of save once, the order rotating; seconds from a
    barrier before to a barrier after (the last rank done). Every save goes to
    a fresh folder, removed (untimed) after it. `s3` adds the same saves to the
    S3 API."""
    import shutil
    import tempfile
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from lm import checkpoint as ckpt
    from lm.loop import local_session, save_checkpoint
    from lm.model import lm_loss, resolve_config
    from lm.parallelize import build_parallel_model
    from mlcore.storage import parse_storage, write_text

    dist.init_process_group("gloo", timeout=timedelta(minutes=10))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    config, _ = resolve_config(preset)
    model = build_parallel_model(config, "fsdp", torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.randint(0, 256, (2, 33))
    lm_loss(model(x[:, :-1]), x[:, 1:]).backward()
    optimizer.step()  # the optimizer state exists, as in a checkpoint mid-run
    cpu = torch.device("cpu")
    roots = {"": parse_storage(out)} | ({"_s3": parse_storage(s3)} if s3 else {})

    def sharded(run, name: str) -> None:
        session = local_session(run.uri, world, rank, cpu)
        manifest = {"format": ckpt.FORMAT, "world_size": world}
        save_checkpoint(session, model, optimizer, {}, manifest, name)

    def full(run, name: str) -> None:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
        if rank != 0:
            return
        folder = run.join(name)
        with tempfile.TemporaryDirectory(prefix="rg-full-") as tmp:
            local = folder.path if not folder.is_remote else tmp
            os.makedirs(local, exist_ok=True)
            path = os.path.join(local, "full.pt")
            torch.save({"model": model_sd, "optim": optim_sd}, path)
            meta = {"files": {"full.pt": ckpt.file_digest(path)}}
            if folder.is_remote:
                import pyarrow.fs as pafs

                pafs.copy_files(
                    path,
                    folder.join("full.pt").path,
                    source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=folder.filesystem,
                )
            write_text(folder.join("meta.json"), json.dumps(meta))

    def stored_bytes(folder) -> int:
        import pyarrow.fs as pafs

        infos = folder.filesystem.get_file_info(
            pafs.FileSelector(folder.path, recursive=True)
        )
        return sum(i.size for i in infos if i.type == pafs.FileType.File)

    kinds = [(k + where, root) for where, root in roots.items() for k in SAVE_KINDS]
    results: dict[str, list[float]] = {k: [] for k, _ in kinds}
    sizes: dict[str, int] = {}
    for r in range(-1, rounds):  # round -1: one untimed save of each kind
        turn = r % len(kinds)
        for kind, root in kinds[turn:] + kinds[:turn]:
            name = f"{kind}-{r + 1}"
            dist.barrier()
            t0 = time.perf_counter()
            (sharded if kind.startswith("sharded") else full)(root, name)
            dist.barrier()
            if r >= 0:
                results[kind].append(time.perf_counter() - t0)
            if rank == 0:
                sizes[kind] = stored_bytes(root.join(name))
                if root.is_remote:
                    root.filesystem.delete_dir(root.join(name).path)
                else:
                    shutil.rmtree(root.join(name).path)
            dist.barrier()
    if rank == 0:
        print(PREFIX + json.dumps({"seconds": results, "bytes": sizes}))
    dist.destroy_process_group()
    return 0


# ---------------------------------------------------------- the harness side


def _result_text(text: str, where: str = "the output") -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX) :])
    raise ValueError(f"no {PREFIX.strip()} line in {where}")


def _result(log: Path) -> dict[str, Any]:
    return _result_text(log.read_text(errors="replace"), str(log))


def _torchrun(args: list[str]) -> list[str]:
    from scripts.bench.commands import torchrun

    return torchrun("scripts.bench.lm", args)


def _run(bench, name: str, argv: list[str], env: dict) -> tuple[dict, float]:
    from scripts.bench.proc import run_logged, tail
    from scripts.bench.settings import BenchError

    log = bench.new_path(name, ".log")
    rc, t0, t1 = run_logged(argv, log, env, timeout_s=900)
    if rc != 0:
        raise BenchError(f"lm {name} exited with {rc}; log {log}:\n{tail(log)}")
    try:
        return _result(log), t1 - t0
    except ValueError as exc:
        raise BenchError(str(exc)) from None


def bench_lm(bench) -> dict[str, Any]:
    """The section: `rounds` alternating torchrun/Ray runs, then the saves."""
    from scripts.bench.proc import child_env
    from scripts.bench.settings import LEAN_ENV, PY, log
    from scripts.bench.stats import paired_ratios, stats

    rounds = bench.cfg.get("lm_rounds", 3 if bench.mode == "full" else 1)
    head, head_s = bench.start_head(lean=True)
    steady: dict[str, list[float]] = {v: [] for v in VARIANTS}
    walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            run_name = f"lm-{variant}-{r}"
            args = lm_args(LM_WORK, bench.work / "lm-runs", run_name)
            env = child_env()
            if variant == "torchrun":
                argv = _torchrun(["local", "--", *args])
            else:
                env.update({**LEAN_ENV, "RAY_ADDRESS": head.address})
                argv = [PY, "-m", "scripts.bench.lm", "driver", "--", *args]
            log(f"lm round {r + 1}: {variant}")
            result, wall = _run(bench, run_name, argv, env)
            rates = result["rates"][1:] or result["rates"]
            steady[variant].append(statistics.median(rates))
            walls[variant].append(wall)
            log(f"  {variant}: {steady[variant][-1]:.0f} tokens/s (steady)")
    bench.stop_head(head.temp_dir)

    from scripts.bench.s3 import loopback_s3

    save_rounds = max(SAVE_WORK["rounds"], rounds)
    argv = ["save", "--preset", SAVE_WORK["preset"], "--rounds", str(save_rounds)]
    argv += ["--out", str(bench.work / "lm-save"), "--s3", f"s3://{S3_BUCKET}/saves"]
    log(f"lm saves: {save_rounds} rounds, local disk and S3 on loopback")
    with loopback_s3(S3_BUCKET) as s3_env:
        saved, _ = _run(bench, "lm-save", _torchrun(argv), {**child_env(), **s3_env})
    seconds = saved["seconds"]

    def save_stats(where: str) -> dict[str, Any]:
        sharded, full = seconds["sharded" + where], seconds["full" + where]
        return {
            "sharded_s": stats(sharded),
            "full_s": stats(full),
            "sharded/full": paired_ratios(sharded, full),
        }

    return {
        "work": LM_WORK,
        "head_start_s": round(head_s, 2),
        "tokens_per_s": {v: stats(steady[v]) for v in VARIANTS},
        "run_wall_s": {v: stats(walls[v]) for v in VARIANTS},
        "ray/torchrun": paired_ratios(steady["ray"], steady["torchrun"]),
        "save": {
            "preset": SAVE_WORK["preset"],
            **save_stats(""),
            "s3": save_stats("_s3"),
            "bytes": saved["bytes"],
        },
        "targets": {"ray/torchrun": ">= 0.95", "save sharded/full": "<= 1.0"},
    }


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m scripts.bench.lm local|driver|save ...")
        return 2
    mode, rest = argv[0], argv[1:]
    rest = rest[1:] if rest[:1] == ["--"] else rest
    if mode == "local":
        return child_local(rest)
    if mode == "driver":
        return child_driver(rest)
    if mode == "save":
        opts = dict(zip(rest[::2], rest[1::2], strict=True))
        return child_save(
            opts["--preset"], int(opts["--rounds"]), opts["--out"], opts.get("--s3")
        )
    print(f"unknown mode {mode!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
