"""The LM Serve app on a real local Ray cluster, driven by the official `openai`
client over HTTP on 127.0.0.1: completions, chat, streaming, batching across
concurrent streams, a client that disconnects, the queue limit and bad input.

The model: preset "nano" with random init, exported through the real export
format, with 1024 positions (nano's own 128 would let a whole generation finish
before a disconnect reaches the replica).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
from dataclasses import replace

import openai
import pytest
import requests
import torch
from lm_serve_app import LMAutoscaling, LMServeArgs, build_app

from lm import checkpoint as ckpt
from lm.model import PRESETS, build_model
from lm.serving.engine import EngineLimits, SamplingParams, run_batch
from lm.serving.protocol import CHAT_ROLES
from lm.tokenizer import decode, encode
from mlcore.storage import parse_storage
from raygpu.localray import free_port

pytestmark = [
    pytest.mark.slow,
    # DCP saving and loading in one process, as export_full does
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled"),
]

CONFIG = replace(PRESETS["nano"], context=1024)
MODEL = "nano"
MAX_SEQS, MAX_QUEUE = 4, 2


def make_export(folder) -> str:
    """A random-init model, saved as the training loop's checkpoint, exported."""
    model = build_model(CONFIG, seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    directory = str(folder / "checkpoint")
    digests = ckpt.save_shard(directory, model, optimizer, rank=0)
    manifest = {
        "format": ckpt.FORMAT,
        "model": CONFIG.to_dict(),
        "position": {"global_step": 0},
    }
    ckpt.commit(parse_storage(directory, "checkpoint"), manifest, digests, 0, 1)
    ckpt.export_full(directory, str(folder / "export"))
    return str(folder / "export")


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    from ray import serve

    export = make_export(tmp_path_factory.mktemp("lm-serve"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = LMServeArgs(
            checkpoint=export,
            model_name=MODEL,
            num_cpus=0.5,
            max_seqs=MAX_SEQS,
            max_queue=MAX_QUEUE,
        )
        serve.run(build_app(args), name="lm", route_prefix="/lm")
        yield f"http://127.0.0.1:{port}/lm", export
    finally:
        serve.shutdown()


@pytest.fixture
def client(served):
    base, _ = served
    with openai.OpenAI(base_url=f"{base}/v1", api_key="any", max_retries=0) as c:
        yield c


def stats(base: str) -> dict:
    return requests.get(f"{base}/stats", timeout=30).json()


def poll(fn, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (value := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout_s}s")
        time.sleep(0.02)
    return value


def greedy_text(export: str, prompt: str, n: int) -> str:
    model, _ = ckpt.load_exported(export)
    params = SamplingParams(max_tokens=n, temperature=0.0)
    tokens, _ = run_batch(model, [encode(prompt)], params, EngineLimits(max_seqs=1))
    return decode(tokens[0])


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_greedy_completions_are_the_in_process_engine_s(served, client):
    _, export = served
    answer = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=12, temperature=0
    )
    choice = answer.choices[0]
    assert choice.text == greedy_text(export, "Hello", 12)
    assert choice.finish_reason in {"stop", "length"}
    usage = answer.usage
    assert usage.prompt_tokens == 5 and 1 <= usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # the same seed draws the same sample
    again = [
        client.completions.create(
            model=MODEL,
            prompt="Hi",
            max_tokens=10,
            seed=5,
            extra_body={"ignore_eos": True},
        )
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert again[0] == again[1]


def test_chat_uses_the_template_and_streams_in_openai_chunks(served, client):
    _, export = served
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    template = "System: Be brief.\nUser: Hi\nAssistant:"
    assert CHAT_ROLES["user"] == "User"
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=16, temperature=0
    )
    text = answer.choices[0].message.content
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage.prompt_tokens == len(encode(template))
    assert text == greedy_text(export, template, 16).split("\nUser:")[0]
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == answer.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == answer.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_a_stream_is_server_sent_events_ending_in_done(served):
    base, _ = served
    body = {"model": MODEL, "prompt": "ab", "max_tokens": 5, "stream": True}
    url = f"{base}/v1/completions"
    with requests.post(url, json=body, stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line.decode() for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(e.startswith("data: {") for e in events[:-1])
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


def test_concurrent_streams_share_decode_steps(served):
    base, _ = served

    async def one(client, rid_box):
        stream = await client.completions.create(
            model=MODEL,
            prompt="together",
            max_tokens=300,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        text = []
        async for chunk in stream:
            rid_box.append(chunk.id)
            text.append(chunk.choices[0].text if chunk.choices else "")
        return "".join(text)

    async def main():
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key="any", max_retries=0
        ) as client:
            ids_a, ids_b = [], []
            await asyncio.gather(one(client, ids_a), one(client, ids_b))
            return ids_a[0], ids_b[0]

    a, b = asyncio.run(main())
    records = stats(base)["requests"]
    for rid in (a, b):
        assert records[rid]["completion_tokens"] == 300
        assert records[rid]["shared_steps"] > 0, records[rid]


def test_a_client_that_disconnects_stops_its_generation(served, client):
    base, _ = served
    max_tokens = CONFIG.context - 8
    with client.completions.create(
        model=MODEL,
        prompt="goodbye",
        max_tokens=max_tokens,
        stream=True,
        extra_body={"ignore_eos": True},
    ) as stream:
        chunks = iter(stream)
        rid = next(chunks).id
        next(chunks)
    # leaving the block closed the connection mid-stream
    record = poll(lambda: stats(base)["requests"].get(rid), "the stream's end recorded")
    assert record["finish_reason"] == "cancelled"
    assert record["completion_tokens"] < max_tokens
    assert record["decode_steps"] == record["steps_at_cancel"]
    # a later request runs further steps; none of them is the cancelled one's
    client.completions.create(model=MODEL, prompt="next", max_tokens=8)
    after = stats(base)
    assert after["requests"][rid] == record
    assert after["running"] == 0


def test_a_non_streaming_client_that_disconnects_stops_its_generation(served):
    base, _ = served
    url = urllib.parse.urlsplit(base)
    before = set(stats(base)["requests"])
    body = json.dumps(
        {
            "model": MODEL,
            "prompt": "gone",
            "max_tokens": CONFIG.context - 8,
            "ignore_eos": True,
        }
    ).encode()
    head = (
        f"POST {url.path}/v1/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        poll(lambda: stats(base)["running"] == 1, "the request running")
    # the connection closed before any answer: Serve cancels the request
    rid = poll(
        lambda: [r for r in stats(base)["requests"] if r not in before],
        "the request's end recorded",
    )[0]
    record = stats(base)["requests"][rid]
    assert record["finish_reason"] == "cancelled"
    assert record["completion_tokens"] < CONFIG.context - 8
    assert record["decode_steps"] == record["steps_at_cancel"]


def test_beyond_the_queue_a_request_gets_503_with_retry_after(served, client):
    base, _ = served
    held = []
    try:
        for _ in range(MAX_SEQS + MAX_QUEUE):
            held.append(
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "busy"}],
                    max_tokens=1000,
                    stream=True,
                    extra_body={"ignore_eos": True},
                )
            )
        poll(
            lambda: (
                (s := stats(base))["running"] == MAX_SEQS and s["waiting"] == MAX_QUEUE
            ),
            "every slot and queue place taken",
        )
        with pytest.raises(openai.APIStatusError) as err:
            client.completions.create(model=MODEL, prompt="one more", max_tokens=4)
        assert err.value.status_code == 503
        assert err.value.response.headers["retry-after"] == "1"
        assert err.value.response.json()["error"]["code"] == "queue_full"
    finally:
        for stream in held:
            stream.close()
    poll(
        lambda: (s := stats(base))["running"] == 0 and s["waiting"] == 0,
        "every held stream ended",
    )


BAD = [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": CONFIG.context + 1}, "max_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"n": 2}, "n"),
    ({"prompt": "x" * CONFIG.context}, "prompt"),
    ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
]


@pytest.mark.parametrize("kwargs,param", BAD, ids=[p for _, p in BAD])
def test_bad_requests_are_openai_400s_naming_the_field(client, kwargs, param):
    request = {"model": MODEL, "prompt": "hi", "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**request)
    error = err.value.response.json()["error"]
    assert error["param"] == param, error
    assert set(error) == {"message", "type", "param", "code"}
    assert client.completions.create(model=MODEL, prompt="ok", max_tokens=2).usage


@pytest.mark.parametrize(
    "body,status,param",
    [
        (b'{"model": "nano", "prompt": ', 400, None),
        (b'{"model": "nano", "prompt": "\xff\xfe bytes"}', 400, "prompt"),
        (b'{"model": "gpt-4", "prompt": "hi"}', 404, "model"),
    ],
    ids=["malformed", "not-utf8", "unknown-model"],
)
def test_raw_bad_bodies_get_openai_errors(served, client, body, status, param):
    base, _ = served
    r = requests.post(
        f"{base}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == status
    assert r.json()["error"]["param"] == param
    assert client.completions.create(model=MODEL, prompt="ok", max_tokens=2).usage


def test_an_oversized_body_gets_a_413_the_client_reads(client):
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model=MODEL, prompt="x" * 2_000_000, max_tokens=1)
    assert err.value.status_code == 413
    assert "larger than" in err.value.response.json()["error"]["message"]


def test_unknown_routes_and_methods_are_openai_errors(served):
    base, _ = served
    r = requests.get(f"{base}/v1/nothing", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = requests.get(f"{base}/v1/completions", timeout=30)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_autoscaling_args_have_lm_defaults_and_pass_through():
    args = LMServeArgs(checkpoint="/x", autoscaling={"max_replicas": 3})
    config = args.replica_options()["autoscaling_config"]
    assert config["max_replicas"] == 3
    assert config["target_ongoing_requests"] == LMAutoscaling().target_ongoing_requests
    assert config["downscale_delay_s"] == 600.0
    with pytest.raises(ValueError, match="not both"):
        LMServeArgs(checkpoint="/x", num_replicas=2, autoscaling={})
    with pytest.raises(ValueError, match="min_replicas"):
        LMServeArgs(checkpoint="/x", autoscaling={"min_replicas": 5, "max_replicas": 2})
    with pytest.raises(ValueError, match="frobnicate"):
        LMServeArgs(checkpoint="/x", frobnicate=1)
