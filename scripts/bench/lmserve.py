"""lmserve: the LM app (lm_serve_app) under streaming load, against the bare
batched loop and a one-request-at-a-time FastAPI server, behind both ingresses.

Model: preset "micro" (4 layers, d_model 256, context 256), trained for a fixed
time on the standard library's source and exported (lmserve_models prepare):
the smallest preset whose decode step, rather than the HTTP path per token,
bounds what a core serves. Load: the same completions request each time, a
held-out 32-token prompt, 128 output tokens (greedy, `ignore_eos`, streamed
with `include_usage`), from lmserve_load (asyncio, raw HTTP/SSE, each chunk's
arrival timestamped; its own CPU reported) at concurrency 1, 8, 16 and 32.

Servers, each round in turn:
- serve_haproxy, serve_proxy: the app (1 replica, 1 CPU, one torch thread, 16
  KV-cache slots) on a lean head with serveIngress haproxy, then on a second
  head with Ray's proxy (paired with the first by round number);
- fastapi: lmserve_fastapi (one uvicorn process, one thread, one request at a
  time), measured beside the HAProxy head;
- bare, bare_int8: lm.serving.engine.run_batch in a child (no event loop, no
  HTTP), the ceiling, and the int8 variant's speed (lmserve_models bare).
Perplexity of fp32 and int8 on held-out blocks comes from prepare.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from raygpu.names import LOOPBACK
from scripts.bench.lmserve_report import summarise
from scripts.bench.proc import (
    Bench,
    child_env,
    kill_group,
    run_logged,
    tail,
    wait_http,
)
from scripts.bench.settings import PY, REPO, SERVE_LEAN_ENV, BenchError, log

LMSERVE_WORK = {
    "preset": "micro",
    "prompt_tokens": 32,
    "max_tokens": 128,
    "max_seqs": 16,
    "concurrency": (1, 8, 16, 32),
    "int8_concurrency": (1, 16),
}
LMSERVE_MODES = {
    "quick": {"rounds": 1, "seconds": 1.5, "train_s": 8.0},
    "full": {"rounds": 3, "seconds": 4.0, "train_s": 60.0},
}
INGRESSES = ("haproxy", "proxy")
MODELS_PROGRAM = "scripts.bench.lmserve_models"
FASTAPI_PROGRAM = "scripts.bench.lmserve_fastapi"
DEPLOY_PROGRAM = "scripts.bench.lmserve_deploy"
LOAD_PROGRAM = "scripts.bench.lmserve_load"
ROUTE = "/lm"  # lmserve_deploy's route prefix


def rgjson(text: str, what: str) -> dict[str, Any]:
    line = next((x for x in text.splitlines() if x.startswith("RGJSON ")), None)
    if line is None:
        raise BenchError(f"{what} printed no result:\n{text[-2000:]}")
    return json.loads(line[len("RGJSON ") :])


def child(bench: Bench, name: str, argv: list[str], timeout_s: float) -> dict:
    """Run a benchmark program to its end; its RGJSON result."""
    log_path = bench.new_path(name, ".log")
    with open(log_path, "w") as logf:
        proc = subprocess.run(
            [PY, "-m", *argv],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=logf,
            text=True,
            timeout=timeout_s,
        )
    if proc.returncode != 0:
        raise BenchError(f"{name} failed ({proc.returncode}):\n{tail(log_path, 20)}")
    return rgjson(proc.stdout, name)


def request_body(prompt: list[int], model: str, max_tokens: int) -> bytes:
    return json.dumps(
        {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
    ).encode()


def one_load(bench: Bench, url: str, body_file: str, c: int, seconds: float) -> dict:
    out = child(
        bench,
        f"load-c{c}",
        [LOAD_PROGRAM, url, body_file, str(c), str(seconds)],
        seconds + 300,
    )
    if out["errors"]:
        raise BenchError(
            f"{out['errors']} of {out['requests'] + out['errors']} requests to {url} "
            f"failed (c={c}): {out['first_error']}"
        )
    out["generator_cores"] = out["generator_cpu_s"] / max(out["duration_s"], 1e-9)
    return out


def start_fastapi(bench: Bench, export: str) -> str:
    from raygpu.localray import free_port

    port = free_port()
    flog = open(bench.new_path("lmserve-fastapi", ".log"), "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [PY, "-m", FASTAPI_PROGRAM, "--export", export, "--port", str(port)],
        cwd=REPO,
        env=child_env(),
        stdout=flog,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    bench.procs.append(proc)
    wait_http(f"http://{LOOPBACK}:{port}/healthz", 120, proc)
    return f"http://{LOOPBACK}:{port}/v1/completions"


def deploy(bench: Bench, head: Any, port: int, export: str, model: str) -> float:
    env = child_env()
    env["RAY_ADDRESS"] = head.address
    argv = [PY, "-m", DEPLOY_PROGRAM, "--address", head.address, "--port", str(port)]
    argv += ["--export", export, "--model-name", model]
    dlog = bench.new_path("lmserve-deploy", ".log")
    rc, t0, t1 = run_logged(argv, dlog, env, timeout_s=300)
    if rc != 0:
        raise BenchError(f"LM app deploy failed ({rc}):\n{tail(dlog)}")
    wait_http(f"http://{LOOPBACK}:{port}{ROUTE}/healthz", 180)
    return t1 - t0


def bare_round(bench: Bench, prep: dict, work: dict) -> dict[str, float]:
    jobs = [f"fp32:{c}" for c in work["concurrency"]]
    jobs += [f"int8:{c}" for c in work["int8_concurrency"]]
    argv = [MODELS_PROGRAM, "bare", "--export", prep["export"]]
    argv += ["--prompts", prep["prompts"], "--max-tokens", str(work["max_tokens"])]
    argv += ["--jobs", ",".join(jobs)]
    return child(bench, "lmserve-bare", argv, 900)["tokens_per_s"]


def bench_lmserve(bench: Bench) -> dict[str, Any]:
    from raygpu.localray import free_port

    mode = LMSERVE_MODES[bench.mode]
    work = LMSERVE_WORK
    load_start = [round(x, 2) for x in os.getloadavg()]
    log(f"lmserve: training {work['preset']} for {mode['train_s']:.0f} s, int8 ppl")
    argv = [MODELS_PROGRAM, "prepare", "--work", str(bench.work / "lmserve")]
    argv += ["--preset", work["preset"], "--train-s", str(mode["train_s"])]
    argv += ["--prompt-tokens", str(work["prompt_tokens"])]
    prep = child(bench, "lmserve-prepare", argv, 900)
    log(f"lmserve: perplexity {prep['perplexity']}")
    with open(prep["prompts"]) as f:
        prompt = json.load(f)[0]
    body_file = bench.work / "lmserve-body.json"
    body_file.write_bytes(request_body(prompt, work["preset"], work["max_tokens"]))
    runs: dict[str, list[dict]] = {}
    heads: dict[str, Any] = {}
    try:
        fastapi_url = start_fastapi(bench, prep["export"])
        for ingress in INGRESSES:
            head, head_s = bench.start_head(
                lean=True, env=SERVE_LEAN_ENV, serve_ingress=ingress
            )
            try:
                port = free_port()
                dep_s = deploy(bench, head, port, prep["export"], work["preset"])
                heads[ingress] = {
                    "start_s": round(head_s, 1),
                    "deploy_s": round(dep_s, 1),
                }
                log(f"lmserve: {ingress} head {head_s:.0f} s, app {dep_s:.0f} s")
                urls = {
                    f"serve_{ingress}": f"http://{LOOPBACK}:{port}{ROUTE}/v1/completions"
                }
                if ingress == INGRESSES[0]:
                    urls["fastapi"] = fastapi_url
                for r in range(mode["rounds"]):
                    names = list(urls)
                    names = names[r % len(names) :] + names[: r % len(names)]
                    for c in work["concurrency"]:
                        for name in names:
                            res = one_load(
                                bench, urls[name], str(body_file), c, mode["seconds"]
                            )
                            runs.setdefault(f"{name}/c{c}", []).append(res)
                        log(
                            f"lmserve {ingress} round {r + 1} c={c}: "
                            + ", ".join(
                                f"{n} {runs[f'{n}/c{c}'][-1]['tokens_per_s']:.0f} tok/s"
                                for n in names
                            )
                        )
                    if ingress == INGRESSES[0]:
                        for job, tps in bare_round(bench, prep, work).items():
                            variant, c = job.split(":")
                            name = "bare" if variant == "fp32" else f"bare_{variant}"
                            runs.setdefault(f"{name}/c{c}", []).append(
                                {"tokens_per_s": tps}
                            )
                        log(f"lmserve round {r + 1}: bare loop done")
            finally:
                bench.stop_head(head.temp_dir)
    finally:
        for proc in bench.procs:
            kill_group(proc)
        bench.procs.clear()
    return {
        "work": {**work, **mode},
        "model": {k: prep[k] for k in ("preset", "config", "train", "eval")},
        "perplexity": prep["perplexity"],
        "generator": "scripts.bench.lmserve_load (python asyncio, raw HTTP/1.1 + SSE)",
        "setup": "serve_*: 1 replica, 1 CPU, 1 torch thread, 16 sequences, lean "
        "head (serveIngress haproxy, then proxy; paired by round number); fastapi: "
        "one uvicorn process, 1 thread, one request at a time (asyncio.Lock), "
        "measured beside the HAProxy head; bare: run_batch in a child, 1 thread",
        "heads": heads,
        "loadavg": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "runs": runs,
        **summarise(runs, work["concurrency"]),
    }
