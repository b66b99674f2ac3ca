"""The LM serving engine without Ray: the KV-cached forward against the plain
one, iteration-level batching, cancellation, limits, sampling, and the text and
request handling of the OpenAI layer, all in-process on preset "nano" (random
init)."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from lm.model import PRESETS, build_model
from lm.serving.app import OpenAIServer, ServingLimits, TextAssembler
from lm.serving.engine import (
    Engine,
    EngineLimits,
    QueueFull,
    SamplingParams,
    run_batch,
)
from lm.serving.kvcache import KVCache, decode, prefill
from lm.serving.protocol import (
    ApiError,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    chat_prompt,
    parse_request,
)
from lm.tokenizer import EOT, encode
from lm.tokenizer import decode as decode_text

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, stop_at_eot=False)


@pytest.fixture(scope="module")
def model():
    # One math thread: on a shared 2-core machine two threads mostly wait on
    # each other (a replica also gets one per CPU it holds).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield build_model(PRESETS["nano"], seed=3).eval()
    finally:
        torch.set_num_threads(threads)


def full_greedy(model, prompt: list[int], n: int) -> tuple[list[int], list]:
    """Reference: the plain forward over the whole sequence for every token."""
    seq, logits = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            row = model(torch.tensor([seq]))[0, -1]
            logits.append(row)
            seq.append(int(torch.argmax(row[: EOT + 1])))
    return seq[len(prompt) :], logits


def test_cached_decode_matches_the_full_forward(model):
    """Two sequences of different lengths in one batch, in slots 3 and 1 of a
    cache whose other slots hold stale values: each step's logits equal the
    full forward's, so the masked, cached attention sees exactly its prefix."""
    prompts = [encode("Hello, world"), encode("Hi")]
    want = [full_greedy(model, p, 20) for p in prompts]
    cache = KVCache(model, slots=4)
    for layer in range(len(cache.k)):  # stale garbage must stay masked out
        cache.k[layer].normal_()
        cache.v[layer].normal_()
    slots = [3, 1]
    firsts = [prefill(model, cache, s, p) for s, p in zip(slots, prompts, strict=True)]
    for first, (_, ref) in zip(firsts, want, strict=True):
        torch.testing.assert_close(first, ref[0], atol=1e-4, rtol=1e-4)
    tokens = [w[0][0] for w in want]
    positions = [len(p) for p in prompts]
    for step in range(1, 20):
        logits = decode(model, cache, slots, tokens, positions)
        for i, (ref_tokens, ref_logits) in enumerate(want):
            torch.testing.assert_close(
                logits[i], ref_logits[step], atol=1e-4, rtol=1e-4
            )
            assert int(torch.argmax(logits[i][: EOT + 1])) == ref_tokens[step]
        tokens = [w[0][step] for w in want]
        positions = [p + 1 for p in positions]


def test_the_batched_loop_gives_each_prompt_its_own_greedy_tokens(model):
    """More prompts than slots: sequences finish, free their slots and waiting
    ones join between steps, and every output equals the unbatched reference."""
    prompts = [encode(t) for t in ("a", "The cat", "0123456789", "xyz", "Q: why?")]
    got, stats = run_batch(model, prompts, GREEDY, EngineLimits(max_seqs=3))
    for g, p in zip(got, prompts, strict=True):
        assert g == full_greedy(model, p, 24)[0]
    assert max(int(k) for k in stats["batch_sizes"]) == 3
    assert stats["running"] == 0 and stats["waiting"] == 0
    assert stats["finished"] == {"length": 5}


def test_concurrent_streams_share_decode_steps(model):
    async def main():
        engine = Engine(model, EngineLimits(max_seqs=4))
        params = SamplingParams(max_tokens=30, temperature=1.0, stop_at_eot=False)

        async def one(rid):
            return [t async for t in engine.generate(encode("hi"), params, rid)]

        outs = await asyncio.gather(one("a"), one("b"), one("c"))
        return outs, engine.stats()

    outs, stats = asyncio.run(main())
    assert [len(o) for o in outs] == [30, 30, 30]
    # 29 decode steps after the prefill, all three in each
    assert stats["batch_sizes"] == {"3": 29}
    for rid in "abc":
        assert stats["requests"][rid]["shared_steps"] == 29
        assert stats["requests"][rid]["completion_tokens"] == 30


def test_a_cancelled_stream_stops_decoding_and_frees_its_slot_for_the_next(model):
    async def main():
        engine = Engine(model, EngineLimits(max_seqs=1, max_queue=4))
        long = SamplingParams(max_tokens=100, temperature=1.0, stop_at_eot=False)
        first = engine.submit(encode("one"), long, "first")
        second = engine.submit(encode("two"), GREEDY, "second")
        got = []
        async for token in first:
            got.append(token)
            if len(got) == 3:
                first.cancel()
                break
        assert engine.stats()["running"] <= 1
        rest = [t async for t in second]  # joined once the slot was free
        await engine.wait_idle()
        return got, rest, engine.stats()

    got, rest, stats = asyncio.run(main())
    record = stats["requests"]["first"]
    assert record["finish_reason"] == "cancelled"
    assert record["decode_steps"] == record["steps_at_cancel"]
    assert record["completion_tokens"] < 100
    assert len(rest) == 24 and stats["requests"]["second"]["shared_steps"] == 0
    assert stats["running"] == 0 and stats["waiting"] == 0


def test_closing_generate_early_cancels_too(model):
    async def main():
        engine = Engine(model, EngineLimits(max_seqs=2), thread=False)
        params = SamplingParams(max_tokens=60, temperature=0.5, stop_at_eot=False)
        gen = engine.generate(encode("x"), params, "g")
        assert isinstance(await gen.__anext__(), int)
        await gen.aclose()
        await engine.wait_idle()
        return engine.stats()

    stats = asyncio.run(main())
    record = stats["requests"]["g"]
    assert record["finish_reason"] == "cancelled"
    assert record["decode_steps"] == record["steps_at_cancel"] <= 1
    assert stats["running"] == 0 and stats["tokens"] <= 2


def test_the_queue_is_bounded_and_prompts_must_fit(model):
    async def main():
        engine = Engine(model, EngineLimits(max_seqs=1, max_queue=1, context=32))
        params = SamplingParams(max_tokens=10, temperature=0.0)
        a = engine.submit([1, 2], params)
        b = engine.submit([1, 2], params)
        with pytest.raises(QueueFull, match="the queue is full"):
            engine.submit([1, 2], params)
        with pytest.raises(ValueError, match="context holds 32"):
            engine.submit(list(range(32)), params)
        with pytest.raises(ValueError, match="token id 300"):
            engine.submit([300], params)
        a.cancel()
        b.cancel()

    asyncio.run(main())


def test_sampling_follows_seed_temperature_top_p_and_the_context(model):
    prompt = encode("seed")

    def run(params, context=None):
        limits = EngineLimits(max_seqs=2, context=context)
        return run_batch(model, [prompt], params, limits)[0][0]

    p = SamplingParams(max_tokens=20, temperature=1.0, seed=7, stop_at_eot=False)
    assert run(p) == run(p)
    assert run(p) != run(SamplingParams(20, 1.0, seed=8, stop_at_eot=False))
    # a nucleus this small holds only the most likely token: greedy
    tiny = SamplingParams(max_tokens=20, temperature=1.0, top_p=1e-6, seed=1)
    assert run(tiny) == run(SamplingParams(20, 0.0))
    # prompt + completion never exceed the context
    assert len(run(SamplingParams(50, 0.0, stop_at_eot=False), context=10)) == 6
    for bad, field in [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temp"),
    ]:
        with pytest.raises(ValueError, match=field):
            SamplingParams(**bad)


def test_text_is_released_as_whole_characters_and_stops_at_a_stop_string():
    asm = TextAssembler(["STOP", "\nUser:"])
    out = "".join(asm.feed(b) for b in "héllo €".encode())
    assert out == "héllo €"
    # EOT, kept under ignore_eos, reads as the tokenizer's newline
    assert TextAssembler([]).feed(EOT) == decode_text([EOT]) == "\n"
    asm = TextAssembler(["STOP"])
    pieces = [asm.feed(b) for b in b"abST"]
    assert "".join(pieces) == "ab"  # "ST" is held: it may begin STOP
    assert asm.feed(ord("x")) == "STx"
    pieces = [asm.feed(b) for b in b"yzSTOPmore"]
    assert "".join(pieces) == "yz" and asm.stopped and asm.flush() == ""


def test_the_chat_template_is_the_documented_one():
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content=[{"type": "text", "text": "Hi"}]),
    ]
    assert chat_prompt(messages) == "System: Be brief.\nUser: Hi\nAssistant:"


@pytest.mark.parametrize(
    "body,param,fragment",
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"model": "m", "prompt": "a", "frobnicate": 1}', "frobnicate", "unknown"),
        (b'{"model": "m", "prompt": "a", "n": 2}', "n", "only n=1"),
        (
            b'{"model": "m", "prompt": "a", "max_tokens": 0}',
            "max_tokens",
            "or equal to 1",
        ),
        (
            b'{"model": "m", "prompt": "a", "temperature": -1}',
            "temperature",
            "or equal to 0",
        ),
        (b'{"model": "m", "prompt": "a", "top_p": 0}', "top_p", "greater than 0"),
        (b'{"model": "m", "prompt": "\xff\xfe"}', "prompt", "not valid UTF-8"),
        (b'{"model": "m", "prompt": "\\ud800"}', "prompt", "lone surrogate"),
        (b'{"model": "m", "prompt": {"x": 1}}', "prompt", "prompt"),
        (b'{"prompt": "a"}', "model", "required"),
        (b'{"model": "m", "prompt": "a", "stop": ["a","b","c","d","e"]}', "stop", "4"),
        (b'{"model": "m", "prompt": "a", "stream_options": {"x": 1}}', "", "unknown"),
    ],
)
def test_bad_completion_requests_name_their_field(body, param, fragment):
    with pytest.raises(ApiError) as err:
        parse_request(body, CompletionRequest)
    assert err.value.status == 400
    if param == "":
        assert err.value.param == "stream_options.x"
    else:
        assert err.value.param == param
    assert fragment in err.value.message
    shape = err.value.body()["error"]
    assert set(shape) == {"message", "type", "param", "code"}


def test_bad_chat_messages_name_their_field():
    with pytest.raises(ApiError) as err:
        parse_request(
            json.dumps(
                {"model": "m", "messages": [{"role": "bot", "content": "x"}]}
            ).encode(),
            ChatCompletionRequest,
        )
    assert err.value.param == "messages.0.role"


def test_limits_and_timeouts_are_openai_errors(model):
    limits = ServingLimits(
        context=64,
        max_prompt_tokens=40,
        max_tokens_cap=32,
        request_timeout_s=0.05,
        retry_after_s=3,
    )

    def body(**kw):
        return json.dumps({"model": "nano", "prompt": "hello", **kw}).encode()

    async def main():
        engine = Engine(model, EngineLimits(max_seqs=1, max_queue=0, context=64))
        server = OpenAIServer(engine, "nano", limits)
        create = server.completions.create
        errors = {}
        for name, b in {
            "long": body(prompt="x" * 41),
            "cap": body(max_tokens=33),
            "room": json.dumps(
                {"model": "nano", "prompt": "x" * 40, "max_tokens": 30}
            ).encode(),
            "model": body(model="gpt-4"),
            "empty": body(prompt=""),
            "ids": body(prompt=[1, 999]),
        }.items():
            with pytest.raises(ApiError) as err:
                await create(b)
            errors[name] = err.value
        # one sequence running, no queue: the next one is turned away
        running = engine.submit([1, 2], SamplingParams(40, 1.0, stop_at_eot=False))
        with pytest.raises(ApiError) as err:
            await create(body())
        errors["full"] = err.value
        running.cancel()
        # a generation longer than request_timeout_s
        slow = json.dumps(
            {"model": "nano", "prompt": "a", "max_tokens": 32, "ignore_eos": True}
        ).encode()
        server.completions.limits = ServingLimits(64, 40, 32, 1e-4, 3)
        with pytest.raises(ApiError) as err:
            await create(slow)
        errors["timeout"] = err.value
        await engine.wait_idle()
        return errors, engine.stats()

    errors, stats = asyncio.run(main())
    assert (errors["long"].param, errors["long"].code) == (
        "prompt",
        "context_length_exceeded",
    )
    assert (
        errors["cap"].param == "max_tokens" and "limit of 32" in errors["cap"].message
    )
    assert (
        errors["room"].param == "max_tokens" and "at most 24" in errors["room"].message
    )
    assert (errors["model"].status, errors["model"].param) == (404, "model")
    assert errors["empty"].param == "prompt" and errors["ids"].param == "prompt"
    assert errors["full"].status == 503
    assert errors["full"].headers == {"Retry-After": "3"}
    assert errors["timeout"].status == 408 and errors["timeout"].type == "timeout_error"
    assert stats["running"] == 0 and stats["waiting"] == 0


def test_a_stream_past_its_timeout_ends_with_an_error_event(model):
    limits = ServingLimits(64, 40, 32, request_timeout_s=1e-4, retry_after_s=1)

    async def main():
        engine = Engine(model, EngineLimits(max_seqs=2, context=64))
        server = OpenAIServer(engine, "nano", limits)
        body = {
            "model": "nano",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 32,
            "ignore_eos": True,
            "stream": True,
        }
        response = await server.chat.create(json.dumps(body).encode())
        events = [e async for e in response.body_iterator]
        await engine.wait_idle()
        return events, engine.stats()

    events, stats = asyncio.run(main())
    assert events[-1] == b"data: [DONE]\n\n"
    first = json.loads(events[0].removeprefix(b"data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    error = json.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["type"] == "timeout_error" and "request_timeout_s" in error["message"]
    assert stats["finished"] == {"cancelled": 1} and stats["running"] == 0
