"""The LM benchmark's model side, in a child process (ray_jobs code):

    PYTHONPATH=ray_jobs:. python -m scripts.bench.lmserve_models prepare \\
        --work DIR --preset micro --train-s 60
    PYTHONPATH=ray_jobs:. python -m scripts.bench.lmserve_models bare \\
        --export DIR --prompts FILE --max-tokens 128 --jobs fp32:1,fp32:16,int8:16

`prepare` trains the preset for a fixed time on the standard library's source
(lm.data's offline default corpus; one thread, AdamW), exports it as training
does (lm.checkpoint.export_full), and measures the perplexity of fp32 and of
its int8 variant (the app's: lm_serve_app.prepare_model) on held-out blocks
(the corpus's validation documents). It writes the prompts (the first tokens of
held-out blocks) and prints `RGJSON {...}`.

`bare` is the ceiling: `lm.serving.engine.run_batch` in-process, no event loop
and no HTTP, `c` prompts at once (16 KV-cache slots, as the app), greedy and
`ignore_eos` as the load; after one untimed warm-up per variant. Prints output
tokens/s per job as `RGJSON {...}`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace

SEQ_LEN = 64  # training and evaluation blocks
BATCH = 8
EVAL_BLOCKS = 64
MAX_SEQS = 16  # the app's default KV-cache slots


def perplexity(model, blocks) -> float:
    import torch

    from lm.model import lm_loss

    losses = []
    with torch.inference_mode():
        for i in range(0, len(blocks), 16):
            b = blocks[i : i + 16]
            losses.append(float(lm_loss(model(b[:, :-1]), b[:, 1:])) * len(b))
    return math.exp(sum(losses) / len(blocks))


def prepare(work: str, preset: str, train_s: float, prompt_tokens: int) -> dict:
    import torch
    from lm_serve_app import prepare_model

    from lm import checkpoint as ckpt
    from lm.data import load_corpus
    from lm.model import PRESETS, build_model, lm_loss
    from mlcore.storage import parse_storage

    torch.manual_seed(0)
    config = PRESETS[preset]
    corpus = load_corpus("stdlib", SEQ_LEN, max_bytes=2 << 20)
    model = build_model(config, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    steps, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < train_s:
        rows = corpus.train[torch.randint(len(corpus.train), (BATCH,), generator=g)]
        rows = rows.long()
        loss = lm_loss(model(rows[:, :-1]), rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    trained_s = time.monotonic() - t0
    model.eval()
    directory = os.path.join(work, "checkpoint")
    digests = ckpt.save_shard(directory, model, optimizer, rank=0)
    manifest = {
        "format": ckpt.FORMAT,
        "model": config.to_dict(),
        "position": {"global_step": steps},
    }
    ckpt.commit(parse_storage(directory, "checkpoint"), manifest, digests, 0, 1)
    export = os.path.join(work, preset)
    ckpt.export_full(directory, export)
    val = corpus.val[:EVAL_BLOCKS].long()
    ppl = {
        "fp32": perplexity(model, val),
        "int8": perplexity(prepare_model(model, "int8", "cpu"), val),
    }
    prompts = [row[:prompt_tokens].tolist() for row in corpus.val[:64]]
    with open(os.path.join(work, "prompts.json"), "w") as f:
        json.dump(prompts, f)
    return {
        "export": export,
        "prompts": os.path.join(work, "prompts.json"),
        "preset": preset,
        "config": replace(config).to_dict(),
        "train": {
            "steps": steps,
            "seconds": round(trained_s, 1),
            "batch": f"{BATCH} x {SEQ_LEN} tokens",
            "final_loss": round(float(loss.detach()), 4),
        },
        "eval": {"blocks": len(val), "tokens_per_block": SEQ_LEN},
        "perplexity": ppl,
    }


def bare(export: str, prompts_file: str, max_tokens: int, jobs: list[str]) -> dict:
    import torch
    from lm_serve_app import prepare_model

    from lm.checkpoint import load_exported
    from lm.serving.engine import EngineLimits, SamplingParams, run_batch

    torch.set_num_threads(1)
    model, _ = load_exported(export)
    with open(prompts_file) as f:
        prompts = json.load(f)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop_at_eot=False)
    limits = EngineLimits(max_seqs=MAX_SEQS, max_queue=1 << 20)
    models = {}
    out: dict[str, float] = {}
    for job in jobs:
        variant, c = job.split(":")
        if variant not in models:
            models[variant] = prepare_model(model, variant, "cpu")
            run_batch(models[variant], prompts[:2], params, limits)  # warm-up
        batch = [prompts[i % len(prompts)] for i in range(int(c))]
        t0 = time.perf_counter()
        tokens, stats = run_batch(models[variant], batch, params, limits)
        seconds = time.perf_counter() - t0
        out[job] = sum(len(t) for t in tokens) / seconds
    return {"tokens_per_s": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("prepare", "bare"))
    p.add_argument("--work")
    p.add_argument("--preset", default="micro")
    p.add_argument("--train-s", type=float, default=60.0)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--export")
    p.add_argument("--prompts")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--jobs", default="fp32:1,fp32:16")
    args = p.parse_args(argv)
    if args.mode == "prepare":
        res = prepare(args.work, args.preset, args.train_s, args.prompt_tokens)
    else:
        res = bare(args.export, args.prompts, args.max_tokens, args.jobs.split(","))
    print("RGJSON " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
