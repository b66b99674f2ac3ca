"""Sharded checkpoints without Ray: 2-rank gloo runs of the real loop (lm.local,
what torchrun runs), FSDP and DDP, then what a resume, a conversion and the
export make of them, and the per-rank memory each strategy reports.

The runs: preset "nano" (context 64), 6 steps, a checkpoint every 3.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lm import checkpoint as ckpt
from lm import train as lm_train
from lm.model import PRESETS, GPTConfig, build_model, num_parameters
from mlcore.errors import CheckpointError
from mlcore.storage import download_dir, parse_storage
from raygpu.localray import free_port
from tests.ray_jobs.lm_ranks import fixed_input, launch

SMALL = ["--preset=nano", "--context=64", "--corpus-bytes=300000", "--batch-size=4"]


def run_local(storage, run_name: str, world: int, *extra: str):
    procs = launch(
        [
            "-m",
            "lm.local",
            *SMALL,
            f"--storage-path={storage}",
            f"--run-name={run_name}",
            *extra,
        ],
        world=world,
        port=free_port(),
    )
    for p in procs:
        assert p.returncode == 0, p.stdout[-3000:]
    return procs


def flip_bytes(path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(storage folder, run folder, sharded model's logits on fixed_input())."""
    storage = tmp_path_factory.mktemp("lm-local")
    run_local(storage, "two", 2, "--max-steps=6", "--checkpoint-every=3")
    run = storage / "two"
    final = run / ckpt.checkpoint_name(6, 1)
    out = storage / "logits.pt"
    procs = launch(
        ["-m", "tests.ray_jobs.lm_ranks", "logits", str(final), str(out), "fsdp"],
        world=2,
        port=free_port(),
    )
    assert all(p.returncode == 0 for p in procs), procs[0].stdout[-3000:]
    return storage, run, torch.load(out)


def test_a_sharded_model_starts_from_the_weights_a_whole_one_does(tmp_path):
    out = tmp_path / "full.pt"
    procs = launch(
        ["-m", "tests.ray_jobs.lm_ranks", "init", str(out)], world=2, port=free_port()
    )
    assert all(p.returncode == 0 for p in procs), procs[0].stdout[-3000:]
    sharded = torch.load(out)
    whole = dict(build_model(PRESETS["nano"], seed=3).named_parameters())
    assert sharded.keys() == whole.keys()
    for name, tensor in whole.items():
        assert torch.equal(sharded[name], tensor), name
    other_seed = build_model(PRESETS["nano"], seed=4).tok_emb.weight
    assert not torch.equal(other_seed, whole["tok_emb.weight"])


def test_every_rank_writes_its_shard_and_the_manifest_lists_them(trained):
    _, run, _ = trained
    names = sorted(p.name for p in run.iterdir())
    assert names == [ckpt.checkpoint_name(3, 1), ckpt.checkpoint_name(6, 1)]
    manifest = ckpt.verify_local(str(run / names[-1]))
    assert set(manifest["files"]) == {
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "train_state_rank00000.pt",
        "train_state_rank00001.pt",
    }
    assert manifest["strategy"] == "fsdp" and manifest["world_size"] == 2
    assert manifest["position"] == {"global_step": 6, "epoch": 0, "step_in_epoch": 6}
    assert [s for s, _ in manifest["loss_curve"]] == [3, 6]


@pytest.fixture(scope="module")
def ddp_run(trained):
    storage = trained[0]
    run_local(
        storage, "ddp", 2, "--strategy=ddp", "--max-steps=6", "--checkpoint-every=3"
    )
    return ckpt.verify_local(str(storage / "ddp" / ckpt.checkpoint_name(6, 1)))


def test_fsdp_per_rank_memory_is_at_most_055_of_ddp_for_the_same_model(
    trained, ddp_run
):
    _, run, _ = trained
    fsdp = ckpt.verify_local(str(run / ckpt.checkpoint_name(6, 1)))
    fsdp_mem = fsdp["metrics"]["memory_per_rank"]
    ddp_mem = ddp_run["metrics"]["memory_per_rank"]
    full_params = 4 * num_parameters(PRESETS["nano"])
    ratios = []
    for f, d in zip(fsdp_mem, ddp_mem, strict=True):
        assert d["param_bytes"] == full_params  # each DDP rank: a whole replica
        assert abs(f["param_bytes"] - full_params / 2) < 1024  # FSDP: half
        assert d["grad_bytes"] == full_params  # as views of DDP's buckets, once
        ratios.append(f["total_bytes"] / d["total_bytes"])
    assert max(ratios) <= 0.55, (fsdp_mem, ddp_mem)
    # the same initial weights and global batches: the same losses either way
    for (fs, fl), (ds, dl) in zip(
        fsdp["loss_curve"], ddp_run["loss_curve"], strict=True
    ):
        assert fs == ds and abs(fl - dl) < 1e-4 * fl
    print(f"\nper-rank FSDP/DDP state bytes at 2 ranks: {max(ratios):.3f}")


def test_the_export_loads_into_a_plain_model_with_the_sharded_models_logits(
    trained, tmp_path
):
    _, run, sharded_logits = trained
    meta = ckpt.export_full(str(run / ckpt.checkpoint_name(6, 1)), str(tmp_path))
    model, loaded_meta = ckpt.load_exported(str(tmp_path))
    assert loaded_meta == meta and meta["position"]["global_step"] == 6
    assert type(model).__name__ == "GPT"  # plain modules: no FSDP, no DDP
    state = torch.load(tmp_path / ckpt.EXPORT_MODEL, weights_only=True)
    assert all(
        isinstance(v, torch.Tensor) and type(v) is torch.Tensor for v in state.values()
    )
    assert not any("module" in k or "_checkpoint" in k for k in state)
    with torch.no_grad():
        logits = model(fixed_input())
    torch.testing.assert_close(logits, sharded_logits, rtol=1e-5, atol=1e-5)
    flip_bytes(tmp_path / ckpt.EXPORT_MODEL)
    with pytest.raises(CheckpointError, match="fails its checksum"):
        ckpt.load_exported(str(tmp_path))


def test_a_damaged_missing_or_short_shard_or_no_manifest_is_refused(trained, tmp_path):
    _, run, _ = trained
    src = run / ckpt.checkpoint_name(6, 1)

    def copy(name):
        return shutil.copytree(src, tmp_path / name)

    flipped = copy("flipped")
    flip_bytes(flipped / "__1_0.distcp")
    with pytest.raises(CheckpointError, match=r"__1_0.distcp fails its checksum"):
        ckpt.verify_local(str(flipped))
    short = copy("short")
    with open(short / "__0_0.distcp", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match="__0_0.distcp has the wrong size"):
        ckpt.verify_remote(parse_storage(str(short)))
    missing = copy("missing")
    (missing / "__1_0.distcp").unlink()
    with pytest.raises(CheckpointError, match="incomplete: __1_0.distcp is missing"):
        ckpt.verify_remote(parse_storage(str(missing)))
    unfinished = copy("unfinished")  # the manifest is written last
    (unfinished / ckpt.MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="incomplete: manifest.json is missing"):
        ckpt.verify_local(str(unfinished))


def _args(storage, *extra):
    return lm_train.parse_args(
        [*SMALL, f"--storage-path={storage}", "--run-name=two", *extra]
    )


def test_the_driver_resumes_from_the_newest_good_checkpoint_and_names_bad_ones(
    trained, tmp_path
):
    storage, run, _ = trained
    copy = shutil.copytree(run, tmp_path / "two")
    flip_bytes(copy / ckpt.checkpoint_name(6, 1) / "__0_0.distcp")
    store = parse_storage(str(tmp_path))
    assert lm_train.check_resumable(store, _args(tmp_path)) == str(
        copy / ckpt.checkpoint_name(3, 1)
    )
    (copy / ckpt.checkpoint_name(3, 1) / ckpt.MANIFEST).unlink()
    with pytest.raises(CheckpointError) as err:
        lm_train.check_resumable(store, _args(tmp_path))
    message = str(err.value)
    assert message.startswith(f"run {copy} has 2 checkpoint(s) and none is usable")
    assert "__0_0.distcp fails its checksum" in message
    assert "manifest.json is missing" in message


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            ["--d-model=64"],
            ["another model shape", "d_model=128", "d_model=64", "--preset"],
        ),
        (
            ["--batch-size=2"],
            ["--batch-size 4", "this run has --batch-size 2", "has not seen"],
        ),
        (
            ["--strategy=ddp"],
            ["--strategy fsdp", "this run uses --strategy ddp", "--convert-checkpoint"],
        ),
    ],
)
def test_a_checkpoint_of_another_shape_or_strategy_stops_before_training(
    trained, capsys, extra, words
):
    storage, run, _ = trained
    argv = [*SMALL, f"--storage-path={storage}", "--run-name=two", *extra]
    assert lm_train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"error: checkpoint {run / ckpt.checkpoint_name(6, 1)} ")
    for word in words:
        assert word in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--n-head=3"], "--d-model"),
        (["--context=129"], "--context"),
        (["--batch-size=3", "--num-workers=2"], "--batch-size"),
        (["--batch-size=100000"], "--batch-size"),
        (["--cpu-offload"], "--cpu-offload"),
        (["--strategy=zero3"], "--strategy"),
        (["--model=resnet18"], "--model"),
    ],
)
def test_bad_flags_are_one_usage_error_naming_the_flag(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        lm_train.parse_args(
            ["--corpus-bytes=300000", f"--storage-path={tmp_path}", *argv]
        )
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"lm.train: error: {flag}: ")


def test_a_fsdp_checkpoint_converts_to_ddp_at_one_rank_and_training_carries_on(
    trained, tmp_path
):
    _, run, _ = trained
    shutil.copytree(run, tmp_path / "two")
    run_local(
        tmp_path,
        "two",
        1,
        "--strategy=ddp",
        "--convert-checkpoint",
        "--activation-checkpointing",
        "--max-steps=9",
        "--checkpoint-every=3",
    )
    manifest = json.loads(
        (tmp_path / "two" / ckpt.checkpoint_name(9, 2) / ckpt.MANIFEST).read_text()
    )
    before = ckpt.verify_local(str(run / ckpt.checkpoint_name(6, 1)))
    assert manifest["strategy"] == "ddp" and manifest["world_size"] == 1
    assert manifest["starts"] == [0, 6]
    assert manifest["loss_curve"][:2] == before["loss_curve"]
    assert GPTConfig.from_dict(manifest["model"]) == GPTConfig.from_dict(
        before["model"]
    )


def test_on_s3_the_driver_checks_sizes_and_the_export_goes_to_the_bucket(
    trained, s3_bucket, tmp_path
):
    import pyarrow.fs as pafs

    _, run, sharded_logits = trained
    store = parse_storage(f"s3://{s3_bucket}/runs")
    pafs.copy_files(
        str(run),
        store.join("two").path,
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=store.filesystem,
    )
    args = _args(store.uri)
    newest = store.join("two", ckpt.checkpoint_name(6, 1))
    assert lm_train.check_resumable(store, args) == newest.uri
    # a shard cut short in the bucket (an interrupted upload): the older one
    with store.filesystem.open_output_stream(newest.join("__1_0.distcp").path) as f:
        f.write(b"short")
    older = store.join("two", ckpt.checkpoint_name(3, 1))
    assert lm_train.check_resumable(store, args) == older.uri
    with pytest.raises(CheckpointError, match="__1_0.distcp has the wrong size"):
        ckpt.verify_remote(newest)
    # the export is read from and written to the bucket, meta.json last
    meta = ckpt.export_to_storage(older, store.join("two", "export"))
    assert meta["position"]["global_step"] == 3
    local = download_dir(store.join("two", "export"), str(tmp_path / "export"))
    model, _ = ckpt.load_exported(local)
    with torch.no_grad():
        assert model(fixed_input()).shape == sharded_logits.shape
