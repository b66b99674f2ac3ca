"""3. serving: rps and p50/p99 at concurrency 1/8/32 for the bare model on
batches, Ray Serve with and without batching behind HAProxy, Serve behind Ray's
proxy, and a single-process FastAPI server, for the digits MLP and the CNN."""

from __future__ import annotations

import json
import math
import resource
import subprocess
import time
from typing import Any

from raygpu.names import LOOPBACK
from scripts.bench import load
from scripts.bench.cpu import CpuSampler
from scripts.bench.proc import (
    Bench,
    child_env,
    kill_group,
    run_logged,
    tail,
    wait_http,
)
from scripts.bench.settings import (
    CONCURRENCY,
    FASTAPI_SERVER,
    LOAD_GENERATOR,
    PY,
    REPO,
    SERVE_DEPLOY,
    SERVE_LEAN_ENV,
    SERVE_MODELS,
    SERVE_MODELS_PROGRAM,
    BenchError,
    log,
)
from scripts.bench.stats import paired_ratios, stats


def one_load(
    bench: Bench, url: str, body: bytes, content_type: str, c: int
) -> dict[str, Any]:
    """One closed-loop load of `url` at concurrency c (wrk, else the Python
    generator in a child): requests, rps, latency percentiles, errors and the
    generator's own CPU."""
    seconds = bench.cfg["serve_seconds"]
    requests = bench.cfg["serve_requests"]
    work = bench.work
    kind = f"{len(body)}-{content_type.split('/')[1]}"
    body_file = work / f"body-{kind}"
    if not body_file.exists():
        body_file.write_bytes(body)
    if load.wrk_path():
        script = work / f"wrk-{kind}.lua"
        if not script.exists():
            script.write_text(load.wrk_script(body, content_type, requests))
        argv = load.wrk_argv(url, str(script), c, seconds)
    else:
        argv = [PY, "-m", LOAD_GENERATOR, url, str(body_file), content_type]
        argv += [str(c), str(requests), str(seconds)]
    # Only the generator is reaped meanwhile: the children's CPU time is its own.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output = proc.communicate(timeout=seconds + 30)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise BenchError(f"the load generator for {url} did not stop") from None
    span = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((x for x in output.splitlines() if x.startswith("RGJSON ")), None)
    if line is None:
        raise BenchError(f"the load generator printed no result for {url}:\n{output}")
    res = json.loads(line[len("RGJSON ") :])
    if res["errors"]:
        raise BenchError(
            f"{res['errors']} of {res['requests']} requests to {url} failed "
            f"(c={c}, {content_type})"
        )
    res["rps"] = res["requests"] / max(res["duration_s"], 1e-9)
    res["generator_cpu_s"] = round(usage, 3)
    res["generator_cores"] = usage / span
    return res


def serve_body(shape: tuple[int, int, int], content_type: str) -> bytes:
    import numpy as np

    x = np.random.default_rng(0).random(math.prod(shape), dtype=np.float32)
    if content_type == "application/json":
        return json.dumps({"instances": [x.round(4).tolist()]}).encode()
    return x.astype("<f4").tobytes()


# Serve variants per head ingress: name -> batching. FastAPI is measured beside
# the HAProxy head only (paired round by round with its variants).
SERVE_VARIANTS = {
    "haproxy": {"serve_batched": True, "serve_unbatched": False},
    "proxy": {"serve_batched_proxy": True},
}
SERVE_REPLICAS = 2  # one per core; FastAPI is one process (the baseline)


def start_fastapi(bench: Bench, ckpts: dict[str, str]) -> dict[str, int]:
    from raygpu.localray import free_port

    servers = {}
    for name, ckpt in ckpts.items():
        port = free_port()
        flog = open(bench.new_path(f"fastapi-{name}", ".log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [PY, "-m", FASTAPI_SERVER, "--checkpoint", ckpt, "--port", str(port)],
            cwd=REPO,
            env=child_env(),
            stdout=flog,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        bench.procs.append(proc)
        servers[name] = port
        wait_http(f"http://{LOOPBACK}:{port}/healthz", 120, proc)
    return servers


def deploy_model(bench: Bench, head: Any, port: int, apps: dict[str, Any]) -> float:
    """Deploy one model's apps (name -> (checkpoint, batching)); seconds it took."""
    env = child_env()
    env["RAY_ADDRESS"] = head.address
    argv = [PY, "-m", SERVE_DEPLOY, "--address", head.address, "--port", str(port)]
    argv += ["--replicas", str(SERVE_REPLICAS), "--apps", json.dumps(apps)]
    dlog = bench.new_path("serve-deploy", ".log")
    rc, t0, t1 = run_logged(argv, dlog, env, timeout_s=300)
    if rc != 0:
        raise BenchError(f"Serve deploy failed ({rc}):\n{tail(dlog)}")
    for name in apps:
        wait_http(f"http://{LOOPBACK}:{port}/{name}/healthz", 120)
    return t1 - t0


def serve_models(bench: Bench) -> tuple[dict[str, str], dict[str, Any]]:
    """(checkpoints, bare ceiling) from the serve_models program, in a child."""
    seconds = 1.0 if bench.mode == "quick" else 2.0
    argv = [PY, "-m", SERVE_MODELS_PROGRAM, "--work", str(bench.work)]
    argv += ["--seconds", str(seconds)]
    out = subprocess.run(
        argv,
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RGJSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(
            f"the serving models failed ({out.returncode}):\n{out.stderr[-2000:]}"
        )
    res = json.loads(line[len("RGJSON ") :])
    return res["checkpoints"], res["bare_ceiling"]


def bench_serve(bench: Bench) -> dict[str, Any]:
    from raygpu.localray import free_port

    ckpts, ceiling = serve_models(bench)
    serve_env = SERVE_LEAN_ENV if bench.serve_lean else {}
    binary = "application/octet-stream"
    runs: dict[str, Any] = {}
    heads: dict[str, Any] = {}
    idle_cores: dict[str, Any] = {}
    try:
        servers = start_fastapi(bench, ckpts)
        fastapi_url = {m: f"http://{LOOPBACK}:{servers[m]}/predict" for m in ckpts}
        for ingress, variants in SERVE_VARIANTS.items():
            head, head_s = bench.start_head(
                lean=True, env=serve_env, serve_ingress=ingress
            )
            heads[ingress] = {"start_s": round(head_s, 2)}
            log(f"serve: {ingress} head up in {head_s:.1f}s")
            port = free_port()
            try:
                for model, (_, shape) in SERVE_MODELS.items():
                    apps = {
                        f"{model}-{v}": (ckpts[model], b) for v, b in variants.items()
                    }
                    dep_s = deploy_model(bench, head, port, apps)
                    log(f"serve: {ingress} {model} apps deployed in {dep_s:.1f}s")
                    with CpuSampler(bench.markers) as idle:
                        time.sleep(3)
                    idle_cores[f"{ingress}/{model}"] = idle.cores()
                    urls = {
                        v: f"http://{LOOPBACK}:{port}/{model}-{v}/predict"
                        for v in variants
                    }
                    if ingress == "haproxy":
                        urls["fastapi"] = fastapi_url[model]
                    body = serve_body(shape, binary)
                    for c in CONCURRENCY:
                        for r in range(bench.cfg["serve_rounds"]):
                            for v, url in urls.items():
                                res = one_load(bench, url, body, binary, c)
                                runs.setdefault(f"{model}/{v}/c{c}", []).append(res)
                            log(
                                f"serve {ingress} {model} c={c} round {r + 1}: "
                                + ", ".join(
                                    f"{v} {runs[f'{model}/{v}/c{c}'][-1]['rps']:.0f}"
                                    for v in urls
                                )
                            )
                    if ingress == "haproxy" and model == "cnn":
                        # The request format: JSON lists of floats vs binary, c=32.
                        jbody = serve_body(shape, "application/json")
                        for r in range(bench.cfg["serve_rounds"]):
                            for v in ("serve_batched", "fastapi"):
                                res = one_load(
                                    bench, urls[v], jbody, "application/json", 32
                                )
                                runs.setdefault(f"cnn/{v}-json/c32", []).append(res)
                            log(f"serve cnn json c=32 round {r + 1} done")
            finally:
                bench.stop_head(head.temp_dir)
    finally:
        for proc in bench.procs:
            kill_group(proc)
        bench.procs.clear()
    summary = {
        key: {
            "rps": stats([x["rps"] for x in rs]),
            "p50_ms": stats([x["p50_ms"] for x in rs]),
            "p99_ms": stats([x["p99_ms"] for x in rs]),
            "errors": sum(x["errors"] for x in rs),
            "generator_cores": stats([x.get("generator_cores") for x in rs]),
        }
        for key, rs in runs.items()
    }

    def rps(key: str) -> list[float]:
        return [x["rps"] for x in runs[key]]

    ratios = {}
    for model in SERVE_MODELS:
        for c in CONCURRENCY:
            b = rps(f"{model}/serve_batched/c{c}")
            fa = rps(f"{model}/fastapi/c{c}")
            ratios[f"{model} c{c} serve_batched/fastapi"] = paired_ratios(b, fa)
            ratios[f"{model} c{c} serve_batched/serve_unbatched"] = paired_ratios(
                b, rps(f"{model}/serve_unbatched/c{c}")
            )
            ratios[f"{model} c{c} serve_batched/serve_batched_proxy"] = paired_ratios(
                b, rps(f"{model}/serve_batched_proxy/c{c}")
            )
            ratios[f"{model} c{c} serve_batched_proxy/fastapi"] = paired_ratios(
                rps(f"{model}/serve_batched_proxy/c{c}"), fa
            )
            ceil = ceiling[model][str(c)]["rps"]
            ratios[f"{model} c{c} serve_batched/bare"] = stats([x / ceil for x in b])
    return {
        "generator": load.generator_name(),
        "request": "one instance per request, float32 little-endian body "
        "(application/octet-stream, X-Instances: 1); JSON body where marked",
        "checkpoints": "freshly initialised models saved with "
        "mlcore.checkpointing.save (speed, not accuracy)",
        "setup": f"serve_* = {SERVE_REPLICAS} replicas of 1 torch thread each behind "
        "HAProxy (serveIngress: haproxy); serve_batched_proxy = the same app "
        "behind Ray's proxy (serveIngress: proxy, Ray's default), measured on a "
        "second head after the HAProxy rounds, paired by round number; fastapi = "
        "one uvicorn process, one torch thread",
        "serve_env": serve_env,
        "bare_ceiling": ceiling,
        "heads": heads,
        "idle_cores": idle_cores,
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
    }
