"""`raygpu data push`: checksummed, resumable uploads to S3 (moto on loopback)
and to a local folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from raygpu import cli
from raygpu.data.push import UPLOAD_MANIFEST, Progress, parse_target, push

MIB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def quiet(_text: str) -> None:
    pass


def test_a_local_push_is_checksummed_skipped_on_rerun_and_refuses_other_content(
    tmp_path,
):
    files = {"a.csv": b"x,label\n1,0\n", "sub/b.bin": os.urandom(3000)}
    src = tree(tmp_path / "src", {**files, ".hidden": b"never pushed"})
    dest = tmp_path / "dest"
    first = push(src, parse_target(str(dest)), say=quiet)
    assert (first["uploaded"], first["skipped"]) == (2, 0)
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert not (dest / ".hidden").exists()
    manifest = json.loads((dest / UPLOAD_MANIFEST).read_text())
    assert manifest["objects"] == [
        {"key": rel, "bytes": len(data), "sha256": sha(data)}
        for rel, data in sorted(files.items())
    ]
    again = push(src, parse_target(str(dest)), say=quiet)
    assert (again["uploaded"], again["skipped"]) == (0, 2)

    (src / "a.csv").write_bytes(b"x,label\n2,1\n")
    (src / "new.csv").write_bytes(b"x\n")
    with pytest.raises(cli.RaygpuError) as err:
        push(src, parse_target(str(dest)), say=quiet)
    assert str(err.value).startswith(
        f"1 object(s) already exist with other content ({dest}/a.csv holds "
    )
    assert "nothing was uploaded. Pass --force" in str(err.value)
    assert (dest / "a.csv").read_bytes() == files["a.csv"]
    assert not (dest / "new.csv").exists()  # checked before anything is written
    forced = push(src, parse_target(str(dest)), force=True, say=quiet)
    assert (forced["uploaded"], forced["replaced"]) == (2, 1)
    assert (dest / "a.csv").read_bytes() == b"x,label\n2,1\n"


def test_an_s3_push_goes_multipart_with_checksums_and_compares_content(
    moto_server, s3_bucket, tmp_path
):
    big = os.urandom(11 * MIB)
    src = tree(tmp_path / "src", {"big.bin": big, "small.txt": b"hello"})
    target = parse_target(f"s3://{s3_bucket}/raw/set")
    result = push(src, target, chunk_mb=5, say=quiet)
    assert result["uploaded"] == 2
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url)
    head = s3.head_object(Bucket=s3_bucket, Key="raw/set/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # 3 parts of 5 MiB at most
    assert head["Metadata"]["sha256"] == sha(big)
    body = s3.get_object(Bucket=s3_bucket, Key="raw/set/big.bin")["Body"].read()
    assert body == big
    manifest = json.loads(
        s3.get_object(Bucket=s3_bucket, Key=f"raw/set/{UPLOAD_MANIFEST}")["Body"].read()
    )
    assert {o["key"]: o["sha256"] for o in manifest["objects"]} == {
        "big.bin": sha(big),
        "small.txt": sha(b"hello"),
    }
    assert push(src, target, say=quiet)["skipped"] == 2
    # an object put by something else: compared by content, not by metadata
    s3.put_object(Bucket=s3_bucket, Key="raw/set/small.txt", Body=b"hello")
    assert push(src, target, say=quiet)["skipped"] == 2
    s3.put_object(Bucket=s3_bucket, Key="raw/set/small.txt", Body=b"HELLO")
    with pytest.raises(cli.RaygpuError, match=r"raw/set/small.txt holds"):
        push(src, target, say=quiet)


def test_an_interrupted_push_resumes_where_it_stopped(moto_server, s3_bucket, tmp_path):
    files = {f"part{i}.bin": os.urandom(6 * MIB) for i in range(6)}
    src = tree(tmp_path / "src", files)
    uri = f"s3://{s3_bucket}/raw/big"
    argv = [sys.executable, "-m", "raygpu", "data", "push", str(src), "--to", uri]
    argv += ["--workers", "1", "--chunk-mb", "5"]
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url)

    def stored() -> list[str]:
        found = s3.list_objects_v2(Bucket=s3_bucket, Prefix="raw/big/")
        return [o["Key"] for o in found.get("Contents", [])]

    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not stored() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # as a crash or a lost laptop would
    child.wait(timeout=30)
    before = stored()
    assert 1 <= len(before) < len(files), before  # stopped part-way
    assert f"raw/big/{UPLOAD_MANIFEST}" not in before

    # what a crash in the middle of a big file leaves (if the kill did not)
    s3.create_multipart_upload(Bucket=s3_bucket, Key="raw/big/part5.bin")
    proc = subprocess.run(
        [*argv, "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["skipped"] == len(before)
    assert summary["uploaded"] == len(files) - len(before)
    for rel, data in files.items():
        head = s3.head_object(Bucket=s3_bucket, Key=f"raw/big/{rel}")
        assert head["Metadata"]["sha256"] == sha(data)
    # the killed push's unfinished multipart upload was aborted, not left billing
    left = s3.list_multipart_uploads(Bucket=s3_bucket, Prefix="raw/big/")
    assert left.get("Uploads", []) == []


def test_the_command_pushes_to_the_stacks_data_bucket(
    moto_server, s3_bucket, tmp_path, capsys
):
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"data_bucket": s3_bucket, "region": "us-east-1"}))
    src = tmp_path / "digits.csv.gz"
    src.write_bytes(b"0,1\n")
    argv = ["data", "push", str(src), "--stack", "dev", "--outputs", str(outputs)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"pushed s3://{s3_bucket}/raw/digits: 1 uploaded" in out
    assert (
        f"next: raygpu submit --stack dev -- python prepare.py --format FORMAT "
        f"--source s3://{s3_bucket}/raw/digits --output s3://{s3_bucket}/prepared/"
        "digits"
    ) in out
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url)
    assert (
        s3.get_object(Bucket=s3_bucket, Key="raw/digits/digits.csv.gz")["Body"].read()
        == b"0,1\n"
    )
    assert cli.main([*argv, "--name", "other", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["destination"] == f"s3://{s3_bucket}/raw/other"
    assert summary["prepared"] == f"s3://{s3_bucket}/prepared/other"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["data", "push", "{src}", "--to", "/x", "--name", "n"], 2, "--name goes with"),
        (["data", "push", "{src}"], 2, "one of the arguments --stack --to is required"),
        (["data", "push", "{src}", "--to", "/x", "--chunk-mb", "1"], 2, "at least 5"),
        (["data", "push", "{missing}", "--to", "/x"], 2, "does not exist"),
        (["data"], 2, "the following arguments are required: ACTION"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv, code, message, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    words = [
        w.replace("{src}", str(tmp_path / "f")).replace(
            "{missing}", str(tmp_path / "nope")
        )
        for w in argv
    ]
    assert cli.main(words) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_progress_bar_draws_on_a_terminal_and_lists_objects_elsewhere():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = Progress(total=4 * MIB, count=2, stream=tty, width=10)
    bar.add(2 * MIB)
    bar.last_draw = 0.0
    bar.add(0)
    assert "[#####     ]  50.0% 2.0 MiB/4.0 MiB 0/2 objects" in tty.getvalue()
    log = io.StringIO()
    plain = Progress(total=10, count=1, stream=log)
    plain.finished(type("I", (), {"rel": "a.csv", "size": 10})())
    assert log.getvalue() == "  [1/1] a.csv (0.0 MiB)\n"
