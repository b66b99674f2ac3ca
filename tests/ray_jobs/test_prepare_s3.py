"""Prepared data in object storage: the stack's least-privilege policy under
moto's IAM checks, and a store that fails in the middle of a write.

The stack's role (infra.identity.bucket_access_policy) reads the whole data
bucket but writes only its prepared/ prefix: prepare.py writes there, and is
refused at start-up, naming the path, anywhere else in that bucket. A stopped
S3 server under a running preparation ends in one line naming the shard, with
no manifest written.
"""

from __future__ import annotations

import threading
import time

import boto3
import botocore.exceptions
import numpy as np
import pytest

import prepare
from mlcore import prepared as fmt
from tests.conftest import start_moto
from tests.ray_jobs.test_s3 import _client_creds, stack_credentials


def small_csv(folder, rows=300):
    rng = np.random.default_rng(0)
    folder.mkdir()
    lines = [
        ",".join(f"{v:.5f}" for v in rng.random(4)) + f",{i % 3}" for i in range(rows)
    ]
    (folder / "t.csv").write_text("a,b,c,d,label\n" + "\n".join(lines) + "\n")


def test_the_role_writes_prepared_data_only_under_prepared(
    monkeypatch, capsys, tmp_path
):
    with stack_credentials(monkeypatch) as (url, key):
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        )
        admin = boto3.client("s3", endpoint_url=url, **_client_creds())
        with pytest.raises(botocore.exceptions.ClientError):  # checks are on
            admin.put_object(Bucket="rg-data", Key="raw/x/t.csv", Body=b"a")

        def denied(call, **kw) -> bool:
            try:
                call(Bucket="rg-data", **kw)
            except botocore.exceptions.ClientError as exc:
                return exc.response["Error"]["Code"] == "AccessDenied"
            return False

        # raw/ is read-only to the cluster; prepared/ is its to write and tidy
        assert denied(s3.put_object, Key="raw/x/t.csv", Body=b"a")
        assert denied(s3.delete_object, Key="raw/x/t.csv")
        assert denied(s3.put_object, Key="elsewhere/t.csv", Body=b"a")
        s3.put_object(Bucket="rg-data", Key="prepared/x/probe", Body=b"a")
        assert s3.get_object(Bucket="rg-data", Key="prepared/x/probe")["Body"].read()
        s3.delete_object(Bucket="rg-data", Key="prepared/x/probe")

        # prepare.py refuses a destination the role may not write, at start-up
        rc = prepare.main(
            ["--format", "digits", "--output", "s3://rg-data/raw/digits-out"]
        )
        err = capsys.readouterr().err.strip()
        assert rc == 1
        assert err.startswith(
            "error: storage path s3://rg-data/raw/digits-out is not writable with "
            "these credentials (the prepared dataset needs s3:PutObject there): "
        ), err
        assert key["SecretAccessKey"] not in err


@pytest.mark.slow
def test_prepare_writes_under_prepared_with_the_stacks_role(
    ray_cluster, monkeypatch, capsys, tmp_path
):
    small_csv(tmp_path / "raw")
    with stack_credentials(monkeypatch):
        out = "s3://rg-data/prepared/t"
        rc = prepare.main(
            ["--format", "csv", "--source", str(tmp_path / "raw"), "--output", out]
        )
        assert rc == 0, capsys.readouterr().err
        data = fmt.open_prepared(out)  # read back with the role's credentials
        fmt.verify(data)
        assert sum(data.rows(s) for s in fmt.SPLITS) == 300
        assert data.manifest["classes"] == ["0", "1", "2"]


@pytest.mark.slow
def test_storage_failing_mid_write_names_the_shard_and_leaves_no_manifest(
    ray_cluster, monkeypatch, capsys, tmp_path
):
    small_csv(tmp_path / "raw", rows=2000)
    with start_moto() as (proc, url):
        for name, value in {**_env(url)}.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3", endpoint_url=url, **_client_creds())
        s3.create_bucket(Bucket="rg-data")
        seen: list[str] = []

        def stop_after_first_shard() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    found = s3.list_objects_v2(Bucket="rg-data", Prefix="prepared/")
                except Exception:
                    return
                keys = [o["Key"] for o in found.get("Contents", [])]
                if any(k.endswith(".parquet") for k in keys):
                    seen.extend(keys)
                    proc.kill()
                    return
                time.sleep(0.02)

        watcher = threading.Thread(target=stop_after_first_shard)
        watcher.start()
        rc = prepare.main(
            [
                "--format",
                "csv",
                "--source",
                str(tmp_path / "raw"),
                "--output",
                "s3://rg-data/prepared/t",
                "--max-shard-mb",
                "0.0002",  # 8 rows a shard: many writes
            ]
        )
        watcher.join(timeout=60)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert seen, "the S3 server was never stopped"
    assert not any(k.endswith("manifest.json") for k in seen)
    assert err[-1].startswith("error: writing shard "), err[-1]
    assert "part-" in err[-1] and "s3://rg-data/prepared/t/" in err[-1]
    print("\n" + err[-1])


def _env(url: str) -> dict[str, str]:
    from tests.conftest import MOTO_CREDENTIALS

    return {"AWS_ENDPOINT_URL": url, **MOTO_CREDENTIALS}
