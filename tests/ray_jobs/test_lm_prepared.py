"""The GPT on a prepared token dataset: prepare.py tokenises a text folder (the
standard library's email package) into Parquet shards, `train.py --model gpt
--data` verifies it and trains 2 FSDP workers under Ray Train, then `lm.local`
resumes the run on 1 rank reading the same dataset from S3 (moto on loopback).
Bad datasets are refused before any worker starts, each in one line.

Preset "nano" at context 32 (blocks of 33 tokens), global batch 4.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import prepare
import train
from lm import checkpoint as ckpt
from lm import train as lm_train
from lm.data import BatchOrder, load_prepared
from lm.tokenizer import VOCAB_SIZE
from mlcore import prepared as fmt
from mlcore.storage import parse_storage
from raygpu.localray import free_port
from tests.ray_jobs.lm_ranks import launch
from tests.ray_jobs.test_lm_checkpoint import flip_bytes

pytestmark = pytest.mark.slow
SEQ = 32
FLAGS = ["--preset=nano", f"--context={SEQ}", "--batch-size=4"]


@pytest.fixture(scope="module")
def tokens(ray_cluster, tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("text")
    email = Path(sysconfig.get_paths()["stdlib"]) / "email"
    for path in sorted(email.glob("*.py")):
        shutil.copy(path, src / path.name)
    out = tmp_path_factory.mktemp("prepared") / "email"
    argv = ["--format", "text", "--source", str(src), "--output", str(out)]
    argv += ["--seq-len", str(SEQ), "--val-fraction", "0.2", "--test-fraction", "0"]
    assert prepare.main([*argv, "--max-shard-mb", "0.1"]) == 0  # many shards
    return out


def test_the_blocks_are_the_prepared_splits_in_shard_order(tokens):
    data = fmt.open_prepared(str(tokens))
    corpus = load_prepared(str(tokens), SEQ, VOCAB_SIZE)
    assert corpus.fingerprint == data.digest
    assert len(data.shards("train")) > 1
    for split, blocks in (("train", corpus.train), ("val", corpus.val)):
        rows = [
            row
            for path in data.shard_paths(split)
            for row in pq.read_table(path).column("tokens").to_pylist()
        ]
        assert blocks.dtype == torch.int16 and blocks.shape == (len(rows), SEQ + 1)
        assert torch.equal(blocks.long(), torch.tensor(rows))
    # an epoch's global batches: distinct train blocks, drawn from all of them
    order = BatchOrder(len(corpus.train), 4, seed=0)
    steps = range(order.steps_per_epoch)
    epoch = torch.cat([order.global_indices(0, s) for s in steps]).tolist()
    assert len(set(epoch)) == len(epoch) == order.steps_per_epoch * 4
    assert max(epoch) >= len(corpus.train) - 8 and min(epoch) < 8


@pytest.fixture(scope="module")
def ray_run(tokens, tmp_path_factory):
    """train.py --model gpt --data: 2 FSDP workers, 4 steps, a checkpoint
    every 2 (the dispatch to lm.train, the driver's verification, Ray Train)."""
    storage = tmp_path_factory.mktemp("lm-prepared")
    argv = ["--model=gpt", "--strategy=fsdp", *FLAGS, f"--data={tokens}"]
    argv += ["--num-workers=2", "--max-steps=4", "--checkpoint-every=2"]
    assert train.main([*argv, f"--storage-path={storage}", "--run-name=p"]) == 0
    return storage, json.loads((storage / "p" / "result.json").read_text())


def test_training_reads_the_verified_dataset_and_records_its_digest(tokens, ray_run):
    _, result = ray_run
    digest = fmt.open_prepared(str(tokens)).digest
    assert result["data"] == {"uri": str(tokens), "manifest_sha256": digest}
    manifest = ckpt.verify_local(result["checkpoint"])
    assert manifest["data"]["uri"] == str(tokens)
    assert manifest["data"]["manifest_sha256"] == digest
    assert manifest["world_size"] == 2 and manifest["position"]["global_step"] == 4
    assert [s for s, _ in manifest["loss_curve"]] == [2, 4]
    assert result["metrics"]["val_perplexity"] < VOCAB_SIZE


def test_one_rank_resumes_the_run_reading_the_dataset_from_s3(
    tokens, ray_run, s3_bucket, tmp_path
):
    import pyarrow.fs as pafs

    storage, result = ray_run
    remote = parse_storage(f"s3://{s3_bucket}/prepared/email")
    pafs.copy_files(
        str(tokens),
        remote.path,
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=remote.filesystem,
    )
    shutil.copytree(storage / "p", tmp_path / "p")
    argv = ["-m", "lm.local", *FLAGS, f"--data={remote.uri}", "--max-steps=6"]
    argv += ["--checkpoint-every=2", f"--storage-path={tmp_path}", "--run-name=p"]
    procs = launch(argv, world=1, port=free_port())
    assert procs[0].returncode == 0, procs[0].stdout[-3000:]
    assert "restored" in procs[0].stdout and "corpus differs" not in procs[0].stdout
    manifest = ckpt.verify_local(str(tmp_path / "p" / ckpt.checkpoint_name(6, 2)))
    assert manifest["world_size"] == 1 and manifest["starts"] == [0, 4]
    assert manifest["loss_curve"][:2] == result["loss_curve"]
    assert manifest["data"]["uri"] == remote.uri
    assert manifest["data"]["manifest_sha256"] == result["data"]["manifest_sha256"]


def run_refused(capsys, *argv, entry=lm_train.main, status=2) -> str:
    """The one line a run refused before training prints (status 2: a flag
    that does not fit the data; 1: the data is damaged)."""
    assert entry([*FLAGS, *argv]) == status
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_bad_datasets_are_refused_before_training_in_one_line(tokens, tmp_path, capsys):
    store = f"--storage-path={tmp_path / 'runs'}"
    images = tmp_path / "images"
    fmt.write_synthetic(str(images), rows=64, shape=(1, 2, 2), held_out=8)
    err = run_refused(
        capsys, f"--data={images}", store, "--model=gpt", entry=train.main
    )
    assert err.startswith(f"error: --data: {images}/manifest.json is a classification")
    assert "prepare.py --format text" in err

    err = run_refused(capsys, f"--data={tokens}", store, "--context=64")
    assert err.startswith("error: --context: ")
    assert f"{tokens}/manifest.json holds blocks of {SEQ + 1} tokens" in err
    assert f"--seq-len {SEQ}" in err and "--context 64" in err

    err = run_refused(capsys, f"--data={tokens}", store, "--batch-size=100000")
    assert err.startswith("error: --batch-size: the global batch (100000 blocks)")

    damaged = shutil.copytree(tokens, tmp_path / "damaged")
    shard = fmt.open_prepared(str(damaged)).shards("val")[0]["path"]
    flip_bytes(damaged / shard)
    err = run_refused(capsys, f"--data={damaged}", store, status=1)
    assert err == f"error: shard {damaged / shard} does not match its checksum in " + (
        "manifest.json"
    )

    (damaged / fmt.MANIFEST).unlink()
    err = run_refused(capsys, f"--data={damaged}", store, status=1)
    assert err.startswith(f"error: {damaged} has no manifest.json")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_data_and_data_dir_together_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        lm_train.parse_args([f"--data={tmp_path}", f"--data-dir={tmp_path}"])
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lm.train: error: --data: ")
