"""gs:// and abfs:// storage paths against real emulators on loopback.

gcp-storage-emulator stands in for Google Cloud Storage and Azurite for Azure
Blob (tests/cloud_storage.py), reached through the variables the jobs read in
production too (STORAGE_EMULATOR_HOST; AZURE_STORAGE_BLOB_ENDPOINT with
AZURE_STORAGE_KEY). Each cloud runs the storage module's round trips, the
start-up probe, a checkpoint saved, verified and resumed through the jobs' own
resume path, a prepared dataset written, verified and read (Ray Data's Parquet
reader included), and an unreachable endpoint failing in seconds in one line.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

import train
from mlcore import checkpointing, ingest, resume
from mlcore import prepared as fmt
from mlcore.errors import DataError, JobInputError
from mlcore.models import ModelSpec, build_model
from mlcore.storage import (
    PROBE_DEADLINE_S,
    check_storage,
    download_dir,
    is_remote_uri,
    parse_storage,
    read_text,
    upload_dir,
    write_text,
)
from raygpu.localray import free_port
from tests.cloud_storage import (  # noqa: F401 (session fixtures)
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    azurite_server,
    create_gcs_bucket,
    gcs_server,
)

CLOUDS = ["gs", "abfs"]
AZ_HOST = f"{AZURITE_ACCOUNT}.dfs.core.windows.net"
FAIL_FAST_S = PROBE_DEADLINE_S + 10  # generous on a loaded machine


def root_uri(cloud: str, bucket: str) -> str:
    return f"gs://{bucket}" if cloud == "gs" else f"abfs://{bucket}@{AZ_HOST}"


@pytest.fixture
def store(request):
    """(cloud, URI of a fresh, empty bucket or container) on that cloud's emulator."""
    cloud = request.param
    emulator = request.getfixturevalue(
        "gcs_server" if cloud == "gs" else "azurite_server"
    )
    bucket = f"rg-{uuid.uuid4().hex[:12]}"
    uri = root_uri(cloud, bucket)
    if cloud == "gs":
        create_gcs_bucket(emulator, bucket)
    else:  # the development account's key may create containers
        parse_storage(uri).filesystem.create_dir(bucket)
    return cloud, uri


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "uri,normalised,path",
    [
        ("gs://my-bucket/runs/", "gs://my-bucket/runs", "my-bucket/runs"),
        ("gs://my_bucket.v2", "gs://my_bucket.v2", "my_bucket.v2"),
        (
            "abfs://artifacts@acct01.dfs.core.windows.net/runs/a/",
            "abfs://artifacts@acct01.dfs.core.windows.net/runs/a",
            "artifacts/runs/a",
        ),
        (
            "abfss://data-1@acct01.dfs.core.windows.net",
            "abfss://data-1@acct01.dfs.core.windows.net",
            "data-1",
        ),
    ],
)
def test_the_accepted_forms_parse_without_touching_the_network(uri, normalised, path):
    storage = parse_storage(uri)
    assert (storage.uri, storage.path, storage.is_remote) == (normalised, path, True)
    assert is_remote_uri(uri) and not is_remote_uri("/data/runs")
    # a path inside the filesystem (as Ray Train or a listing gives it) maps back
    child = storage.join("checkpoint_epoch0001_attempt01")
    assert storage.uri_of(child.path) == child.uri
    assert storage.uri_of(storage.path) == storage.uri


@pytest.mark.parametrize(
    "uri,fragment",
    [
        ("", "must be a local folder or an s3://, gs:// or abfs:// URI"),
        ("hdfs://nn/runs", "unsupported scheme 'hdfs' in 'hdfs://nn/runs'; must be"),
        ("az://c/runs", "unsupported scheme 'az'"),
        ("gs://", "no valid bucket name (3-63 lowercase letters"),
        ("gs://Bad/x", "no valid bucket name"),
        ("gs:///runs", "no valid bucket name"),
        ("abfs://container/runs", "is not of the form abfs://container@account.dfs"),
        ("abfs://c1@acct.blob.core.windows.net/x", "is not of the form"),
        ("abfss://runs", "is not of the form abfss://container@account.dfs"),
        ("abfs://runs@Bad_Acct.dfs.core.windows.net", "no valid storage account"),
        ("abfs://a--b@acct1.dfs.core.windows.net", "no valid container name"),
        ("abfs://UP@acct1.dfs.core.windows.net", "no valid container name"),
    ],
)
def test_a_malformed_uri_names_the_field_and_what_is_allowed(uri, fragment):
    with pytest.raises(JobInputError) as exc:
        parse_storage(uri, "--storage-path")
    message = str(exc.value)
    assert message.startswith("--storage-path: ") and fragment in message, message


def test_gcs_is_anonymous_only_with_an_emulator_and_azure_takes_its_endpoint(
    monkeypatch,
):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    (options,) = parse_storage("gs://b-1/x").filesystem.__reduce__()[1]
    assert not options["anonymous"] and options["endpoint_override"] == ""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")  # no scheme
    (options,) = parse_storage("gs://b-1/x").filesystem.__reduce__()[1]
    assert options["anonymous"] and options["scheme"] == "http"
    assert options["endpoint_override"] == "127.0.0.1:4443"
    assert options["retry_time_limit"].total_seconds() > 0

    monkeypatch.delenv("AZURE_STORAGE_BLOB_ENDPOINT", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
    (options,) = parse_storage(f"abfs://c-1@{AZ_HOST}").filesystem.__reduce__()[1]
    assert options["account_name"] == AZURITE_ACCOUNT and not options["account_key"]
    assert options["blob_storage_scheme"] == "https"  # DefaultAzureCredential
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", "http://127.0.0.1:10000")
    monkeypatch.setenv("AZURE_STORAGE_KEY", AZURITE_KEY)
    (options,) = parse_storage(f"abfs://c-1@{AZ_HOST}").filesystem.__reduce__()[1]
    assert options["account_key"] == AZURITE_KEY
    assert options["blob_storage_authority"] == "127.0.0.1:10000"
    assert options["dfs_storage_scheme"] == "http"


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("store", CLOUDS, indirect=True)
def test_probe_text_and_folder_round_trips(store, tmp_path):
    _, uri = store
    runs = parse_storage(f"{uri}/runs")
    check_storage(runs)
    left = runs.filesystem.get_file_info(
        pafs.FileSelector(runs.path, allow_not_found=True, recursive=True)
    )
    assert not [i.path for i in left if ".raygpu-write-probe-" in i.path]
    write_text(runs.join("a", "result.json"), '{"ok": true}')
    write_text(runs.join("a", "deep", "notes.txt"), "ünïcode\n")
    assert read_text(runs.join("a", "result.json")) == '{"ok": true}'
    local = download_dir(runs.join("a"), str(tmp_path / "a"))
    assert (tmp_path / "a" / "deep" / "notes.txt").read_text() == "ünïcode\n"
    assert local == str(tmp_path / "a")
    listed = runs.filesystem.get_file_info(pafs.FileSelector(runs.join("a").path))
    assert sorted(runs.uri_of(i.path) for i in listed) == [
        f"{uri}/runs/a/deep",
        f"{uri}/runs/a/result.json",
    ]


@pytest.mark.parametrize("store", CLOUDS, indirect=True)
def test_a_missing_bucket_or_container_is_named(store, capsys):
    cloud, _ = store
    uri = f"{root_uri(cloud, 'rg-no-such-one')}/runs"
    rc = train.main(["--storage-path", uri, "--run-name", "r"])
    word = "bucket" if cloud == "gs" else "container"
    assert rc == 1
    assert capsys.readouterr().err.strip() == (
        f"error: storage path {uri}: {word} 'rg-no-such-one' does not exist or is "
        "not visible with these credentials"
    )


@pytest.mark.usefixtures("azurite_server")
def test_a_wrong_azure_key_is_refused_and_never_printed(monkeypatch, capsys):
    wrong = "V3Jvbmcga2V5IGZvciB0aGUgdGVzdCBvbmx5IC0gbm90IGEgc2VjcmV0IQ=="
    monkeypatch.setenv("AZURE_STORAGE_KEY", wrong)
    uri = f"abfs://rg-denied@{AZ_HOST}/runs"
    rc = train.main(["--storage-path", uri, "--run-name", "r"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(
        f"error: storage path {uri}: access to container 'rg-denied' denied with "
        "these credentials: "
    ), err
    print(f"\nwrong key: {err[:300]}")
    assert wrong not in err and AZURITE_KEY not in err


def test_an_http_azure_endpoint_needs_the_account_key(monkeypatch):
    # Azure's client sends tokens over HTTPS only: given an http endpoint and no
    # key it would abort the process, so this is refused when the path is parsed
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", "http://127.0.0.1:10000")
    monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
    with pytest.raises(JobInputError) as exc:
        parse_storage(f"abfs://c-1@{AZ_HOST}/runs")
    assert str(exc.value) == (
        "AZURE_STORAGE_BLOB_ENDPOINT: http://127.0.0.1:10000 is not https: give "
        "the account key in AZURE_STORAGE_KEY"
    )


@contextlib.contextmanager
def identity_endpoint():
    """A loopback Entra ID / managed-identity token endpoint that refuses every
    request; yields (its URL, the requests it saw)."""
    seen: list[str] = []

    class Refuse(BaseHTTPRequestHandler):
        def answer(self):
            seen.append(self.path)
            body = json.dumps({"error": "invalid_client"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_azure_without_a_usable_credential_fails_in_one_line(
    monkeypatch, capsys, tmp_path
):
    # No key: DefaultAzureCredential, whose every source is pointed at loopback
    # (the managed identity endpoint and Entra ID refuse; no Azure CLI signed in).
    # pyarrow's Azure client aborts its process when no source yields a token: the
    # probe's child process dies, and the job says so in one line.
    token = tmp_path / "federated-token"
    token.write_text("not-a-real-token")
    with identity_endpoint() as (url, seen):
        monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
        for name, value in {
            "AZURE_STORAGE_BLOB_ENDPOINT": f"https://127.0.0.1:{free_port()}",
            "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
            "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000002",
            "AZURE_FEDERATED_TOKEN_FILE": str(token),
            "AZURE_AUTHORITY_HOST": f"{url}/",
            "IDENTITY_ENDPOINT": f"{url}/msi",
            "IDENTITY_HEADER": "loopback",
        }.items():
            monkeypatch.setenv(name, value)
        uri = f"abfs://rg-nocred@{AZ_HOST}/runs"
        started = time.monotonic()
        rc = train.main(["--storage-path", uri, "--run-name", "r"])
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    print(f"\nno credential: failed in {elapsed:.1f}s: {err[:200]}")
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(
        f"error: storage path {uri}: its client failed: Failed to get token from "
        "DefaultAzureCredential"
    ), err
    assert "workload identity on AKS" in err
    assert any("storage.azure.com" in path for path in seen), seen
    assert elapsed < FAIL_FAST_S


@contextlib.contextmanager
def unreachable(cloud: str, kind: str, monkeypatch):
    """The cloud's endpoint variable pointing at loopback that fails as `kind` says."""
    variable = (
        "STORAGE_EMULATOR_HOST" if cloud == "gs" else "AZURE_STORAGE_BLOB_ENDPOINT"
    )
    if cloud == "abfs":
        monkeypatch.setenv("AZURE_STORAGE_KEY", AZURITE_KEY)
    if kind == "nothing listening":
        monkeypatch.setenv(variable, f"http://127.0.0.1:{free_port()}")
        yield
        return
    with socket.socket() as sock:  # accepts connections, sends nothing back
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        monkeypatch.setenv(variable, f"http://127.0.0.1:{sock.getsockname()[1]}")
        yield


@pytest.mark.parametrize("kind", ["nothing listening", "never answers"])
@pytest.mark.parametrize("cloud", CLOUDS)
def test_an_unreachable_endpoint_fails_in_seconds_in_one_line(
    cloud, kind, monkeypatch, capsys
):
    uri = f"{root_uri(cloud, 'rg-gone')}/runs"
    with unreachable(cloud, kind, monkeypatch):
        started = time.monotonic()
        rc = train.main(["--storage-path", uri, "--run-name", "r"])
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    print(f"\n{cloud} {kind}: failed in {elapsed:.1f}s: {err[:160]}")
    assert rc == 1
    assert err.startswith(f"error: storage path {uri} cannot be reached: "), err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert AZURITE_KEY not in err
    assert elapsed < FAIL_FAST_S


# ------------------------------------------------------ the jobs' own paths


def _checkpoint(tmp_path, epoch: int, seed: int) -> tuple[str, dict]:
    spec = ModelSpec(name="mlp", image_shape=(1, 8, 8), num_classes=10)
    torch.manual_seed(seed)
    model = build_model(spec)
    folder = tmp_path / f"local-{epoch}"
    folder.mkdir()
    checkpointing.save(str(folder), model, None, epoch, spec, {"val_accuracy": 0.5})
    return str(folder), model.state_dict()


@pytest.mark.parametrize("store", CLOUDS, indirect=True)
def test_checkpoints_are_verified_resumed_and_pruned_in_the_bucket(store, tmp_path):
    _, uri = store
    storage = parse_storage(f"{uri}/runs")
    run = storage.join("r1")
    states = {}
    # uploaded as Ray Train's StorageContext does (create_dir, then copy_files),
    # which upload_dir does too: on GCS the folder is then a marker object, which
    # is how pyarrow's listing that is not recursive finds it
    for epoch in (1, 2):
        local, states[epoch] = _checkpoint(tmp_path, epoch, seed=epoch)
        upload_dir(local, run.join(checkpointing.checkpoint_name(epoch, 1)))
    listed = checkpointing.list_checkpoints(run.filesystem, run.path)
    assert [c.epoch for c in listed] == [1, 2]
    newest = run.join(checkpointing.checkpoint_name(2, 1))
    assert storage.uri_of(listed[-1].path) == newest.uri
    assert resume.check_resumable(storage, "r1") == newest.uri

    # what the workers restore from (ray.train.Checkpoint on this filesystem)
    meta, model_state, _ = resume.restore(None, run.uri)
    assert meta["epoch"] == 2
    assert all(torch.equal(model_state[k], v) for k, v in states[2].items())

    # the newest cut short in the bucket (an interrupted upload): the older one
    with run.filesystem.open_output_stream(
        newest.join(checkpointing.MODEL_FILE).path
    ) as f:
        f.write(b"short")
    older = run.join(checkpointing.checkpoint_name(1, 1))
    assert resume.check_resumable(storage, "r1") == older.uri
    assert resume.restore(None, run.uri)[0]["epoch"] == 1
    with checkpointing.local_copy(older.uri) as folder:  # serving and compress
        model, served_meta = checkpointing.load_model(folder)
    assert served_meta["epoch"] == 1
    served = model.state_dict()
    assert all(torch.equal(served[k], v) for k, v in states[1].items())

    removed = resume.prune_stray_checkpoints(storage, "r1", [listed[0].path])
    assert removed == [checkpointing.checkpoint_name(2, 1)]
    assert [
        c.epoch for c in checkpointing.list_checkpoints(run.filesystem, run.path)
    ] == [1]


@pytest.mark.parametrize("store", CLOUDS, indirect=True)
def test_a_prepared_dataset_is_written_verified_and_read_by_ray_data(
    store, ray_cluster
):
    _, uri = store
    data_uri = f"{uri}/prepared/synthetic"
    manifest = fmt.write_synthetic(data_uri, rows=600, shape=(1, 8, 8), held_out=64)
    prepared = fmt.open_prepared(data_uri)
    assert prepared.manifest == manifest and prepared.rows("train") == 600
    fmt.verify(prepared)  # sizes, checksums, Parquet footers in the bucket
    xs, ys = zip(*fmt.iter_split(prepared, "train"), strict=True)
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (600, 1, 8, 8)

    # Ray Data's Parquet reader, on Ray workers, with this pyarrow filesystem
    rows = ingest.read_split(prepared, "train").take_all()
    assert len(rows) == 600
    read_y = np.sort(np.array([r["y"] for r in rows]))
    assert np.array_equal(read_y, np.sort(y))
    read_x = np.stack([np.asarray(r["x"], dtype=np.float32) for r in rows])
    assert np.isclose(read_x.sum(), x.reshape(600, -1).sum(), rtol=1e-5)

    # a shard changed in the bucket is caught, naming its URI
    shard = prepared.root.join(prepared.shards("val")[0]["path"])
    with shard.filesystem.open_output_stream(shard.path) as f:
        f.write(b"PAR1 not parquet")
    with pytest.raises(DataError, match=f"shard {shard.uri} has"):
        fmt.verify(prepared)
