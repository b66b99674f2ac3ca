"""Checkpoints and results in object storage: a real S3 API on loopback.

moto_server on 127.0.0.1 stands in for S3. train.py reaches it through the
standard endpoint setting (AWS_ENDPOINT_URL), which a job gets the way a user
gives it: in the runtime environment's env_vars. Storage that cannot be reached
(nothing listening, the S3 server stopped, a server that never answers) or a
bucket that does not exist fails in seconds with a message naming the path;
so do credentials that may not write the path or reach the bucket (moto_server
with its IAM checks on, holding the stack's own bucket policy).
"""

import contextlib
import json
import socket
import time

import boto3
import botocore.exceptions
import pytest

import train
from mlcore import checkpointing
from mlcore.storage import parse_storage
from raygpu.localray import free_port
from tests.conftest import MOTO_CREDENTIALS, start_moto
from tests.ray_jobs.fault_helpers import (
    checkpoints,
    read_json,
    submit_train,
    wait_job,
)

FAIL_FAST_S = 30  # generous: the probe gives up after ~8 s on a silent server
CREDS = MOTO_CREDENTIALS


def private_moto():
    """A moto_server of our own (so that stopping it harms no other test)."""
    return start_moto()


@contextlib.contextmanager
def unreachable(kind: str):
    """An S3 endpoint on loopback that fails the way `kind` says."""
    if kind == "nothing listening":
        yield f"http://127.0.0.1:{free_port()}"
    elif kind == "S3 server stopped":
        with private_moto() as (proc, url):
            s3 = boto3.client("s3", endpoint_url=url, **_client_creds())
            s3.create_bucket(Bucket="rg-stopped")
            proc.kill()  # the bucket existed a moment ago
            proc.wait(timeout=10)
            yield url
    else:  # "never answers": accepts connections, sends nothing back
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _client_creds() -> dict:
    return {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }


@pytest.mark.parametrize(
    "kind", ["nothing listening", "S3 server stopped", "never answers"]
)
def test_unreachable_storage_fails_in_seconds_naming_the_path(
    kind, monkeypatch, capsys
):
    for key, value in CREDS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    uri = "s3://rg-stopped/runs"
    with unreachable(kind) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        started = time.monotonic()
        rc = train.main(["--storage-path", uri, "--run-name", "r"])
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    print(f"\n{kind}: failed in {elapsed:.1f}s: {err[:160]}")
    assert rc == 1
    assert err.startswith(f"error: storage path {uri} cannot be reached"), err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert elapsed < FAIL_FAST_S


def test_a_missing_bucket_fails_in_seconds_naming_it(moto_server, capsys):
    started = time.monotonic()
    rc = train.main(["--storage-path", "s3://rg-no-such-bucket/runs", "--run-name=r"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    print(f"\nmissing bucket: failed in {elapsed:.1f}s")
    assert rc == 1
    assert err == (
        "error: storage path s3://rg-no-such-bucket/runs: bucket "
        "'rg-no-such-bucket' does not exist or is not visible with these credentials"
    )
    assert elapsed < FAIL_FAST_S


@contextlib.contextmanager
def stack_credentials(monkeypatch):
    """A moto_server that checks IAM policies, two buckets, and the credentials of
    a user holding exactly the stack's bucket policy (infra.identity): read the
    data bucket, read and write the artifacts bucket. Yields the endpoint."""
    from infra.identity import bucket_access_policy

    setup_calls = 6  # the requests below made before the server checks policies
    with start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(setup_calls)}) as (_, url):
        s3 = boto3.client("s3", endpoint_url=url, **_client_creds())
        iam = boto3.client("iam", endpoint_url=url, **_client_creds())
        for bucket in ("rg-data", "rg-artifacts", "rg-elsewhere"):  # 3
            s3.create_bucket(Bucket=bucket)
        iam.create_user(UserName="ray-workload")  # 4
        buckets = ["arn:aws:s3:::rg-data", "arn:aws:s3:::rg-artifacts"]
        policy = json.loads(
            bucket_access_policy(
                *buckets, "arn:aws:kms:us-east-1:123456789012:key/placeholder"
            )
        )
        # moto checks HeadBucket as an action of its own, "s3:HeadBucket"; AWS
        # checks s3:ListBucket, which the stack's policy grants on both buckets.
        policy["Statement"].append(
            {"Effect": "Allow", "Action": "s3:HeadBucket", "Resource": buckets}
        )
        iam.put_user_policy(  # 5
            UserName="ray-workload",
            PolicyName="buckets",
            PolicyDocument=json.dumps(policy),
        )
        key = iam.create_access_key(UserName="ray-workload")["AccessKey"]  # 6
        with pytest.raises(botocore.exceptions.ClientError):  # checks are on
            s3.list_buckets()
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        for name in ("AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED"):
            monkeypatch.setenv(name, CREDS[name])
        yield url, key


def test_storage_without_write_access_fails_before_training(monkeypatch, capsys):
    with stack_credentials(monkeypatch) as (url, key):
        # The stack's own artifacts bucket: the start-up probe writes and
        # deletes its object.
        train.check_storage(parse_storage("s3://rg-artifacts/runs"))
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        )
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="rg-artifacts")["Contents"]]
        # pyarrow keeps the emptied prefix as a directory marker; the probe is gone
        assert keys == ["runs/"]
        # The data bucket is read-only to the stack: refused at start-up, not
        # after the first epoch when the first checkpoint would be written.
        uri = "s3://rg-data/runs"
        started = time.monotonic()
        rc = train.main(["--storage-path", uri, "--run-name", "r"])
        elapsed = time.monotonic() - started
        err = capsys.readouterr().err.strip()
        assert rc == 1
        assert err.startswith(
            f"error: storage path {uri} is not writable with these credentials "
            "(checkpoints need s3:PutObject there): "
        ), err
        assert "ACCESS_DENIED" in err
        assert "Traceback" not in err and len(err.splitlines()) == 1
        assert key["SecretAccessKey"] not in err
        assert elapsed < FAIL_FAST_S
        # A bucket the policy does not name at all.
        rc = train.main(["--storage-path", "s3://rg-elsewhere/x", "--run-name=r"])
        err = capsys.readouterr().err.strip()
        assert rc == 1
        assert err.startswith(
            "error: storage path s3://rg-elsewhere/x: access to bucket "
            "'rg-elsewhere' denied with these credentials: "
        ), err


def _keys(bucket: str, endpoint: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, **_client_creds())
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.mark.slow
def test_checkpoints_on_s3_are_pruned_and_an_interrupted_upload_is_skipped(
    ray_head, moto_server, s3_bucket
):
    storage = f"s3://{s3_bucket}/runs"
    argv = [
        "--num-workers=1",
        "--batch-size=32",
        f"--storage-path={storage}",
        "--run-name=s3run",
        "--keep-checkpoints=2",
    ]
    client, job_id = submit_train(ray_head, [*argv, "--epochs=4"], moto_server.env)
    try:
        status, logs = wait_job(client, job_id, timeout_s=300)
    finally:
        client.stop_job(job_id)
    assert status == "SUCCEEDED", logs[-3000:]

    fs = parse_storage(storage).filesystem
    run_path = f"{s3_bucket}/runs/s3run"
    kept = checkpoints(fs, run_path)
    # retention on S3: of four checkpoints only the newest two are left
    assert [(e, a) for e, a, _ in kept] == [(2, 1), (3, 1)]
    keys = _keys(s3_bucket, moto_server.endpoint_url)
    assert not any("checkpoint_epoch0000" in k or "epoch0001" in k for k in keys)
    result = read_json(fs, f"{run_path}/result.json")
    latest = f"s3://{run_path}/checkpoint_epoch0003_attempt01"
    assert result["checkpoint"] == latest
    assert result["storage_path"] == storage
    with checkpointing.local_copy(latest) as folder:
        assert checkpointing.verify(folder)["epoch"] == 3

    # An interrupted upload: the latest checkpoint lost meta.json (written last).
    fs.delete_file(f"{kept[-1][2]}/meta.json")
    client, job_id = submit_train(ray_head, [*argv, "--epochs=6"], moto_server.env)
    try:
        status, logs = wait_job(client, job_id, timeout_s=300)
    finally:
        client.stop_job(job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    assert f"resumes from s3://{run_path}/checkpoint_epoch0002_attempt01" in logs
    result = read_json(fs, f"{run_path}/result.json")
    assert result["metrics"]["start_epoch"] == 3  # after epoch 2, the good one
    assert result["checkpoint"] == f"s3://{run_path}/checkpoint_epoch0005_attempt02"
    kept = checkpoints(fs, run_path)
    assert [(e, a) for e, a, _ in kept] == [(4, 2), (5, 2)]
    print(
        f"\nS3 keys after the rerun: {len(_keys(s3_bucket, moto_server.endpoint_url))}"
    )
