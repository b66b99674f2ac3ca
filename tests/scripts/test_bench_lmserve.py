"""scripts/bench/lmserve*: the streaming load generator's token timing against a
scripted SSE server on loopback, the report's arithmetic on synthetic rounds,
and the FastAPI baseline answering OpenAI's stream correctly."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import torch
from fastapi.testclient import TestClient

from lm import checkpoint as ckpt
from lm.model import PRESETS, build_model
from lm.serving.engine import EngineLimits, SamplingParams, run_batch
from lm.tokenizer import decode
from mlcore.storage import parse_storage
from scripts.bench import lmserve_load as load
from scripts.bench import lmserve_report as rep
from scripts.bench import report
from scripts.bench.lmserve import request_body
from scripts.bench.lmserve_fastapi import build

# ------------------------------------------------------------ load generator


def event(text: str | None = None, usage: int | None = None) -> bytes:
    body = {"choices": [] if text is None else [{"index": 0, "text": text}]}
    if usage is not None:
        body["usage"] = {"completion_tokens": usage}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def test_the_sse_parser_takes_whole_events_across_reads():
    parser = load.SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b": 1}\r\n\r\ndata: [DONE]\n") == ['{"a": 1}']
    assert parser.feed(b"\n") == ["[DONE]"]


async def scripted_server(gaps: list[float], status: int = 200):
    """Answers each request with one text chunk of one byte after each gap
    (seconds), then usage and [DONE], chunked, keep-alive."""

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(x.split(b":")[1])
                    for x in head.split(b"\r\n")
                    if x.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                if status != 200:
                    body = b'{"error": {"message": "full"}}'
                    writer.write(
                        b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                        % (status, len(body), body)
                    )
                    await writer.drain()
                    continue
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                parts = []
                for gap in gaps:
                    parts.append((gap, event("x")))
                parts.append((0.0, event(None, usage=len(gaps)) + b"data: [DONE]\n\n"))
                for gap, data in parts:
                    await asyncio.sleep(gap)
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_the_load_generator_times_each_tokens_arrival():
    gaps = [0.12, 0.03, 0.03, 0.03]

    async def main():
        server = await scripted_server(gaps)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await load.run_load(
                f"http://127.0.0.1:{port}/v1/completions", b"{}", 2, 0.3
            )

    out = asyncio.run(main())
    assert out["errors"] == 0 and out["requests"] >= 2
    assert out["tokens"] == out["tokens_seen"] == 4 * out["requests"]
    assert 115 <= out["ttft_p50_ms"] < 400
    assert 25 <= out["tpot_p50_ms"] < 150
    assert out["tokens_per_s"] == pytest.approx(
        out["tokens"] / out["duration_s"], rel=1e-3
    )
    assert 0 < out["generator_cpu_s"] < out["duration_s"]


def test_error_answers_are_counted_not_taken_as_tokens():
    async def main():
        server = await scripted_server([0.0], status=503)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await load.run_load(f"http://127.0.0.1:{port}/x", b"{}", 1, 0.05)

    out = asyncio.run(main())
    assert out["requests"] == 0 and out["errors"] >= 1 and out["tokens"] == 0
    assert out["first_error"] == "HTTP 503"


def test_a_record_takes_text_usage_and_error_events():
    rec = load.Record(start=10.0)
    assert not rec.on_event(json.dumps({"choices": [{"text": "ab"}]}), 10.5)
    assert not rec.on_event(json.dumps({"choices": [{"text": "é"}]}), 11.5)
    assert not rec.on_event(
        json.dumps({"choices": [], "usage": {"completion_tokens": 4}}), 12
    )
    assert rec.on_event("[DONE]", 12.0)
    assert rec.ttft == 0.5 and rec.completion_tokens == 4
    assert rec.tpot == pytest.approx(1.0 / 3)  # 4 bytes: 3 gaps over 1 s
    rec.on_event(json.dumps({"error": {"message": "boom"}}), 13)
    out = load.summarise([rec, load.Record(start=0.0, completion_tokens=2)], 2.0, 0.1)
    assert out["errors"] == 1 and out["requests"] == 1 and out["tokens"] == 2
    assert math.isnan(out["ttft_p50_ms"])  # the one good record saw no text


# ------------------------------------------------------------ the report


def synthetic_runs() -> dict:
    def point(tps, ttft=10.0):
        return {
            "tokens_per_s": tps,
            "ttft_p50_ms": ttft,
            "ttft_p99_ms": 3 * ttft,
            "tpot_p50_ms": 1.0,
            "generator_cores": 0.1,
            "requests": 4,
        }

    runs = {}
    for c, base in ((1, 100.0), (16, 800.0)):
        runs[f"serve_haproxy/c{c}"] = [
            point(base),
            point(base * 1.1),
            point(base * 0.9),
        ]
        runs[f"serve_proxy/c{c}"] = [point(base / 2)] * 3
        runs[f"fastapi/c{c}"] = [point(100.0)] * 3
        runs[f"bare/c{c}"] = [{"tokens_per_s": v} for v in (base, base, base * 2)]
        runs[f"bare_int8/c{c}"] = [{"tokens_per_s": base / 4}] * 3
    return runs


def test_ratios_are_paired_round_by_round_and_the_targets_read_them():
    out = rep.summarise(synthetic_runs(), (1, 16))
    r = out["ratios"]
    assert r["serve_haproxy c16/c1"]["median"] == pytest.approx(8.0)
    assert r["serve_haproxy/bare c16"]["values"] == [1.0, 1.1, 0.45]
    assert r["serve_haproxy/fastapi c16"]["median"] == pytest.approx(8.0)
    assert r["serve_proxy/serve_haproxy c1"]["median"] == pytest.approx(0.5)
    assert r["bare_int8/bare c16"]["values"] == [0.25, 0.25, 0.125]
    assert out["summary"]["serve_haproxy/c16"]["ttft_p99_ms"]["median"] == 30.0
    section = {**out, "perplexity": {"fp32": 4.0, "int8": 4.1}}
    targets = report.targets({"lmserve": section})
    got = {t["name"]: (t["median"], t["met"]) for t in targets if "LM app" in t["name"]}
    assert got["LM app (haproxy) tokens/s, c=16 / c=1 (batching)"] == (8.0, True)
    assert got["LM app (haproxy) / bare batched loop tokens/s, c=16"] == (1.0, True)
    assert got["LM app (proxy) tokens/s, c=16 / c=1 (batching)"] == (8.0, True)
    assert got["LM app (proxy) / bare batched loop tokens/s, c=16"] == (0.5, False)
    assert rep.perplexity_delta(section) == pytest.approx(0.025)


def test_the_markdown_and_plot_are_written(tmp_path):
    section = {
        **rep.summarise(synthetic_runs(), (1, 16)),
        "work": {
            "prompt_tokens": 32,
            "max_tokens": 128,
            "concurrency": (1, 16),
            "seconds": 4.0,
            "rounds": 3,
        },
        "model": {
            "preset": "micro",
            "config": {"n_layer": 4, "d_model": 256, "context": 256},
            "train": {"steps": 9, "seconds": 60, "batch": "8 x 64 tokens"},
            "eval": {"blocks": 64, "tokens_per_block": 64},
        },
        "perplexity": {"fp32": 4.0, "int8": 4.1},
        "generator": "g",
        "setup": "s",
        "loadavg": {"start": [6.5, 5.0, 4.0], "end": [1.0, 1.0, 1.0]},
    }
    text = "\n".join(rep.lmserve_markdown(section))
    row = "| serve_haproxy | 16 | 800 (720-880) | 10.0 (10.0-10.0) | 30.0 (30.0-30.0) |"
    assert row in text
    assert "+2.50 %" in text and rep.PLOT_FILE in text
    assert "start [6.5, 5.0, 4.0], end [1.0, 1.0, 1.0]; a shared machine" in text
    rep.plot(section, tmp_path / rep.PLOT_FILE)
    assert (tmp_path / rep.PLOT_FILE).read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------ the FastAPI baseline


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_the_fastapi_baseline_streams_the_models_greedy_tokens(tmp_path):
    torch.set_num_threads(1)
    config = PRESETS["nano"]
    model = build_model(config, seed=0)
    directory = str(tmp_path / "checkpoint")
    digests = ckpt.save_shard(
        directory, model, torch.optim.AdamW(model.parameters()), 0
    )
    manifest = {"format": ckpt.FORMAT, "model": config.to_dict(), "position": {}}
    ckpt.commit(parse_storage(directory, "checkpoint"), manifest, digests, 0, 1)
    ckpt.export_full(directory, str(tmp_path / "export"))
    prompt = list(range(65, 85))
    params = SamplingParams(max_tokens=12, temperature=0.0, stop_at_eot=False)
    want, _ = run_batch(model.eval(), [prompt], params, EngineLimits(max_seqs=1))
    client = TestClient(build(str(tmp_path / "export")))
    body = json.loads(request_body(prompt, "nano", 12))
    with client.stream("POST", "/v1/completions", json=body) as resp:
        assert resp.status_code == 200
        payloads = load.SSEParser().feed(resp.read())
    assert payloads[-1] == "[DONE]"
    rec = load.Record(start=0.0)
    for p in payloads:
        rec.on_event(p, 1.0)
    text = "".join(c["text"] for p in payloads[:-1] for c in json.loads(p)["choices"])
    assert text == decode(want[0]) and rec.completion_tokens == 12
    plain = client.post("/v1/completions", json={**body, "stream": False}).json()
    assert plain["choices"][0]["text"] == text
    assert plain["usage"]["completion_tokens"] == 12
