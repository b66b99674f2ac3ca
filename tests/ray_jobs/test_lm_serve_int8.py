"""The LM app's int8 variant (torchao, made at load): close to fp32 on a briefly
trained "nano" (greedy tokens and held-out perplexity), and refused on GPUs."""

from __future__ import annotations

import math

import pytest
import torch
from lm_serve_app import LMServeArgs, prepare_model
from pydantic import ValidationError

from lm.data import load_corpus
from lm.model import PRESETS, build_model, lm_loss
from lm.serving.engine import EngineLimits, SamplingParams, run_batch

SEQ_LEN = 64


@pytest.fixture(scope="module")
def trained():
    """nano after 60 AdamW steps on the standard library's source (offline):
    peaked enough that greedy choices are not coin flips."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: more threads only contend
    corpus = load_corpus("stdlib", SEQ_LEN, max_bytes=512 << 10)
    model = build_model(PRESETS["nano"], seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        rows = corpus.train[torch.randint(len(corpus.train), (16,), generator=g)]
        rows = rows.long()
        loss = lm_loss(model(rows[:, :-1]), rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    yield model.eval(), corpus.val[:32].long()
    torch.set_num_threads(threads)


def perplexity(model, blocks: torch.Tensor) -> float:
    with torch.inference_mode():
        return math.exp(float(lm_loss(model(blocks[:, :-1]), blocks[:, 1:])))


def test_int8_is_quantised_and_close_to_fp32(trained):
    model, val = trained
    int8 = prepare_model(model, "int8", "cpu")
    assert type(int8.blocks[0].mlp.fc.weight) is not torch.nn.Parameter
    assert type(model.blocks[0].mlp.fc.weight) is torch.nn.Parameter  # a copy
    fp32_ppl, int8_ppl = perplexity(model, val), perplexity(int8, val)
    assert fp32_ppl < 40  # trained: uniform over 257 bytes would be 257
    assert int8_ppl != fp32_ppl
    assert abs(int8_ppl / fp32_ppl - 1) < 0.03, (fp32_ppl, int8_ppl)

    prompts = [row[:32].tolist() for row in val[:6]]
    params = SamplingParams(max_tokens=16, temperature=0.0, stop_at_eot=False)
    want, _ = run_batch(model, prompts, params, EngineLimits(max_seqs=4))
    got, stats = run_batch(int8, prompts, params, EngineLimits(max_seqs=4))
    assert stats["tokens"] == 6 * 16
    first = sum(a[0] == b[0] for a, b in zip(got, want, strict=True))
    same = sum(
        x == y
        for a, b in zip(got, want, strict=True)
        for x, y in zip(a, b, strict=True)
    )
    assert first >= 5 and same >= 0.75 * 6 * 16, (first, same)


def test_fp32_is_the_model_itself_and_int8_is_refused_on_gpus(trained):
    model, _ = trained
    assert prepare_model(model, "fp32", "cpu") is model
    assert LMServeArgs(checkpoint="x", variant="int8").variant == "int8"
    with pytest.raises(ValidationError, match="variant: int8 runs on CPUs only"):
        LMServeArgs(checkpoint="x", variant="int8", num_gpus=1)
    with pytest.raises(ValidationError, match="variant"):
        LMServeArgs(checkpoint="x", variant="int4")
