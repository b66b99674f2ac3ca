"""The GPT, its presets, the byte tokenizer, the corpus and the batch order: plain
torch in this process, no process group."""

from __future__ import annotations

import math

import pytest
import torch

from lm import tokenizer
from lm.data import (
    STDLIB,
    BatchOrder,
    batch,
    load_corpus,
    num_blocks,
    plan_corpus,
    split_documents,
    to_blocks,
)
from lm.memory import storage_bytes
from lm.model import (
    PRESETS,
    build_model,
    flops_per_token,
    lm_loss,
    num_parameters,
    resolve_config,
)
from mlcore.errors import JobInputError


def test_presets_run_from_half_a_million_to_about_a_billion_parameters():
    counts = {name: num_parameters(cfg) for name, cfg in PRESETS.items()}
    assert list(counts.values()) == sorted(counts.values())
    assert counts["nano"] < 1e6
    assert 2e6 < counts["micro"] < 5e6  # "a few million"
    assert 0.9e9 < counts["1b"] < 1.1e9
    for cfg in PRESETS.values():
        assert cfg.d_model % cfg.n_head == 0


def test_a_width_that_does_not_divide_across_the_heads_names_the_flags():
    with pytest.raises(JobInputError) as err:
        resolve_config("nano", n_head=3)
    assert err.value.field == "--d-model"
    assert "does not divide across 3 heads" in str(err.value)


def test_a_context_longer_than_the_preset_allows_names_the_flag_and_limit():
    with pytest.raises(JobInputError) as err:
        resolve_config("nano", context=129)
    assert err.value.field == "--context"
    assert "129 is longer than preset 'nano' allows (128 positions)" in str(err.value)
    assert resolve_config("nano", context=64)[1] == 64
    assert resolve_config("nano")[1] == 128


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"preset": "huge"}, "--preset"),
        ({"preset": "nano", "n_layer": 0}, "--n-layer"),
        ({"preset": "nano", "dropout": 1.0}, "--dropout"),
        ({"preset": "nano", "context": 1}, "--context"),
    ],
)
def test_other_bad_shapes_name_their_flag(kwargs, flag):
    with pytest.raises(JobInputError) as err:
        resolve_config(**kwargs)
    assert err.value.field == flag


def test_the_decoder_is_causal_and_its_loss_starts_near_uniform():
    torch.manual_seed(0)
    config, _ = resolve_config("nano")
    model = build_model(config).eval()
    x = torch.randint(0, 256, (2, 16))
    logits = model(x)
    assert logits.shape == (2, 16, config.vocab_size)
    changed = x.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.equal(a[:, :10], b[:, :10])  # the past does not see the future
    assert not torch.allclose(a[:, 10:], b[:, 10:])
    loss = float(lm_loss(logits, x).detach())
    assert abs(loss - math.log(config.vocab_size)) < 0.5


def test_meta_built_model_holds_no_memory_and_counts_the_same_parameters():
    config = PRESETS["base"]
    meta = build_model(config, "meta")
    assert all(p.is_meta for p in meta.parameters())
    assert num_parameters(config) == sum(p.numel() for p in meta.parameters())


def test_flops_per_token_is_six_per_weight_plus_attention():
    config = PRESETS["base"]
    short = flops_per_token(config, 1)
    matmul_weights = num_parameters(config) - (config.vocab_size + config.context) * (
        config.d_model
    )
    # layer norms hold no matmul weights; the rest is 6 per weight
    assert abs(short - 6 * matmul_weights) / short < 0.01
    assert flops_per_token(config, 1024) > short


def test_the_byte_tokenizer_round_trips_any_text():
    text = "def f(x):\n    return 'héllo ✓'  # ünïcode\n"
    ids = tokenizer.encode(text)
    assert max(ids) < 256 and tokenizer.decode(ids) == text
    assert tokenizer.encode_document(b"ab") == [97, 98, tokenizer.EOT]
    assert tokenizer.decode([104, 105, tokenizer.EOT, 300]) == "hi\n\ufffd"
    assert tokenizer.VOCAB_SIZE % 64 == 0 and tokenizer.VOCAB_SIZE > tokenizer.EOT


def test_the_stdlib_corpus_is_deterministic_and_split_by_document():
    docs = plan_corpus(STDLIB, 400_000)
    assert docs == plan_corpus(STDLIB, 400_000)
    assert sum(d.size for d in docs) == 400_000
    train, val = split_documents(docs, 5)
    assert train and val and not {d.name for d in train} & {d.name for d in val}
    corpus = load_corpus(STDLIB, 64, 400_000)
    assert corpus.fingerprint == load_corpus(STDLIB, 64, 400_000).fingerprint
    assert corpus.train.shape == (num_blocks(train, 64), 65)
    assert corpus.val.shape == (num_blocks(val, 64), 65)
    assert int(corpus.train.max()) == tokenizer.EOT  # documents are separated
    assert load_corpus(STDLIB, 64, 300_000).fingerprint != corpus.fingerprint


def test_a_text_folder_is_a_corpus_and_an_empty_one_says_so(tmp_path):
    from mlcore.errors import DatasetUnavailable

    (tmp_path / "a.txt").write_text("hello world\n" * 50)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# title\n" * 50)
    (tmp_path / "c.bin").write_bytes(b"\0" * 100)
    docs = plan_corpus(str(tmp_path), 10_000)
    assert [d.name for d in docs] == ["a.txt", "sub/b.md"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetUnavailable, match="holds no text files"):
        plan_corpus(str(empty), 10_000)


def test_blocks_hold_inputs_and_their_next_tokens():
    tokens = torch.arange(21, dtype=torch.int16).numpy()
    blocks = to_blocks(tokens, 5)
    assert blocks.shape == (4, 6)
    assert blocks[1].tolist() == [5, 6, 7, 8, 9, 10]
    x, y = batch(blocks, torch.tensor([1]), "cpu")
    assert x.tolist() == [[5, 6, 7, 8, 9]] and y.tolist() == [[6, 7, 8, 9, 10]]


def test_every_world_size_sees_the_same_global_batches():
    order = BatchOrder(num_blocks=100, global_batch=8, seed=3)
    assert order.steps_per_epoch == 12
    for epoch, step in [(0, 0), (0, 11), (2, 5)]:
        whole = order.rank_indices(epoch, step, 0, 1)
        halves = [order.rank_indices(epoch, step, r, 2) for r in range(2)]
        quarters = [order.rank_indices(epoch, step, r, 4) for r in range(4)]
        assert sorted(torch.cat(halves).tolist()) == sorted(whole.tolist())
        assert sorted(torch.cat(quarters).tolist()) == sorted(whole.tolist())
    epoch0 = torch.cat([order.global_indices(0, s) for s in range(12)])
    assert len(set(epoch0.tolist())) == 96  # no block twice in an epoch
    assert not torch.equal(order.global_indices(0, 0), order.global_indices(1, 0))
    assert order.position(25) == (2, 1)
    with pytest.raises(JobInputError) as err:
        BatchOrder(num_blocks=4, global_batch=8, seed=0)
    assert err.value.field == "--batch-size"


def test_memory_counts_each_storage_once():
    a = torch.zeros(1000)
    views = [a[:500], a[500:], a]
    assert storage_bytes(views) == 4000
    assert storage_bytes([a, torch.zeros(10, dtype=torch.float64), None]) == 4080
