"""Upload a local file or folder to storage, checksummed, resumable.

Every file's SHA-256 is computed first and compared with what the destination
already holds under the same key: the same content is skipped (so a rerun after
an interruption uploads only what is missing), other content is refused unless
`force` (before anything is written). Then the rest goes up in parallel,
multipart through boto3's transfer manager for S3 (each object carrying its
SHA-256 as metadata `sha256`) or copied for a local folder (each file appears
only once complete), and `_raygpu_upload.json` is written last: every object's
key, size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from raygpu.errors import CommandError, UsageError

UPLOAD_MANIFEST = "_raygpu_upload.json"
SHA_METADATA = "sha256"  # S3 user metadata: x-amz-meta-sha256
DEFAULT_CHUNK_MB = 8
DEFAULT_WORKERS = 8
HASH_BLOCK = 4 << 20


@dataclass(frozen=True)
class Target:
    """Where objects go: s3://bucket/prefix or a local folder."""

    uri: str
    bucket: str | None  # None: a local folder
    prefix: str  # the key prefix, or the local folder's path

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def object_uri(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}" if self.is_s3 else self.key(rel)


def parse_target(uri: str) -> Target:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        bucket, prefix = parsed.netloc, parsed.path.strip("/")
        if not bucket:
            raise UsageError(f"--to: {uri!r} names no bucket (s3://bucket/prefix)")
        return Target(f"s3://{bucket}/{prefix}".rstrip("/"), bucket, prefix)
    if parsed.scheme not in ("", "file"):
        raise UsageError(
            f"--to: unsupported scheme {parsed.scheme!r}; use a folder or s3://"
        )
    path = os.path.abspath(os.path.expanduser(parsed.path if parsed.scheme else uri))
    return Target(path, None, path)


@dataclass(frozen=True)
class Item:
    rel: str  # the key below the target prefix, '/'-separated
    path: Path
    size: int
    sha256: str = ""


@dataclass
class Plan:
    target: Target
    items: list[Item]
    skip: list[Item] = field(default_factory=list)
    send: list[Item] = field(default_factory=list)
    conflicts: list[tuple[Item, str]] = field(default_factory=list)


def local_files(src: Path) -> list[Item]:
    """The files to push: SRC itself, or every file below it (dot-names skipped)."""
    if src.is_file():
        return [Item(src.name, src, src.stat().st_size)]
    if not src.is_dir():
        raise UsageError(f"SRC: {src} does not exist")
    items = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(p.startswith(".") for p in rel.parts) or not path.is_file():
            continue
        items.append(Item(rel.as_posix(), path, path.stat().st_size))
    if not items:
        raise UsageError(f"SRC: {src} holds no files")
    return items


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def with_checksums(items: list[Item], workers: int) -> list[Item]:
    def one(item: Item) -> Item:
        return Item(item.rel, item.path, item.size, sha256_file(item.path))

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, items))


# ------------------------------------------------------------------ progress


class Progress:
    """A byte progress bar on a terminal; a line per finished object otherwise.
    Thread-safe: the transfer threads report into it."""

    def __init__(self, total: int, count: int, stream=None, width: int = 30):
        self.total, self.count = max(total, 1), count
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.done_bytes = self.done_objects = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.last_draw = 0.0

    def add(self, n: int) -> None:
        with self.lock:
            self.done_bytes += n
            now = time.monotonic()
            if self.tty and now - self.last_draw > 0.1:
                self.last_draw = now
                self._draw()

    def finished(self, item: Item) -> None:
        with self.lock:
            self.done_objects += 1
            if self.tty:
                self._draw()
            else:
                print(
                    f"  [{self.done_objects}/{self.count}] {item.rel} "
                    f"({_mib(item.size)})",
                    file=self.stream,
                    flush=True,
                )

    def close(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)

    def _draw(self) -> None:
        frac = min(self.done_bytes / self.total, 1.0)
        bar = "#" * int(frac * self.width)
        rate = self.done_bytes / max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r[{bar:<{self.width}}] {frac:6.1%} {_mib(self.done_bytes)}/"
            f"{_mib(self.total)} {self.done_objects}/{self.count} objects "
            f"{_mib(rate)}/s "
        )
        self.stream.flush()


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# ------------------------------------------------------------------ backends


class LocalStore:
    def __init__(self, target: Target):
        self.root = Path(target.prefix)

    def existing_sha256(self, item: Item) -> str | None:
        path = self.root / item.rel
        return sha256_file(path) if path.is_file() else None

    def put(self, item: Item, progress: Progress) -> None:
        dest = self.root / item.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        try:
            with open(item.path, "rb") as src, open(tmp, "wb") as out:
                while block := src.read(HASH_BLOCK):
                    out.write(block)
                    progress.add(len(block))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, rel: str, data: bytes) -> None:
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)


class S3Store:
    def __init__(self, target: Target, client: Any, chunk_mb: int, workers: int):
        self.target, self.client = target, client
        self.chunk_mb, self.workers = chunk_mb, workers

    def existing_sha256(self, item: Item) -> str | None:
        key = self.target.key(item.rel)
        try:
            head = self.client.head_object(Bucket=self.target.bucket, Key=key)
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            what = f"cannot read s3://{self.target.bucket}/{key}"
            raise _s3_error(exc, what) from None
        found = (head.get("Metadata") or {}).get(SHA_METADATA)
        if found:
            return found
        if head.get("ContentLength") != item.size:
            return f"(an object of {head.get('ContentLength')} bytes)"
        # Not pushed by raygpu: the same size, so compare the content itself.
        body = self.client.get_object(Bucket=self.target.bucket, Key=key)["Body"]
        h = hashlib.sha256()
        for block in iter(lambda: body.read(HASH_BLOCK), b""):
            h.update(block)
        return h.hexdigest()

    def abort_stale_uploads(self, items: list[Item]) -> int:
        """Abort multipart uploads of these keys that an interrupted push left
        (their parts are billed until the bucket's lifecycle rule aborts them);
        a caller who may not list them is left to that rule."""
        keys = {self.target.key(i.rel) for i in items}
        prefix = f"{self.target.prefix}/" if self.target.prefix else ""
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.target.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"] in keys:
                        self.client.abort_multipart_upload(
                            Bucket=self.target.bucket,
                            Key=upload["Key"],
                            UploadId=upload["UploadId"],
                        )
                        aborted += 1
        except Exception as exc:
            if _code(exc) not in ("AccessDenied", "403"):
                what = f"cannot list uploads under {self.target.uri}"
                raise _s3_error(exc, what) from None
        return aborted

    def transfer(self, items: list[Item], progress: Progress) -> None:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        from s3transfer.subscribers import BaseSubscriber

        class Report(BaseSubscriber):
            def on_progress(self, future, bytes_transferred, **kwargs):
                progress.add(bytes_transferred)

        chunk = self.chunk_mb << 20
        config = TransferConfig(
            multipart_threshold=chunk,
            multipart_chunksize=chunk,
            max_concurrency=self.workers,
            preferred_transfer_client="classic",
        )
        manager = create_transfer_manager(self.client, config)
        try:
            futures = [
                (
                    item,
                    manager.upload(
                        str(item.path),
                        self.target.bucket,
                        self.target.key(item.rel),
                        extra_args={"Metadata": {SHA_METADATA: item.sha256}},
                        subscribers=[Report()],
                    ),
                )
                for item in items
            ]
            for item, future in futures:
                try:
                    future.result()
                except Exception as exc:
                    raise _s3_error(
                        exc, f"uploading {self.target.object_uri(item.rel)} failed"
                    ) from None
                progress.finished(item)
        except BaseException:
            manager.shutdown(cancel=True)  # aborts the multipart uploads under way
            raise
        manager.shutdown()

    def put_bytes(self, rel: str, data: bytes) -> None:
        key = self.target.key(rel)
        try:
            self.client.put_object(
                Bucket=self.target.bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
                Metadata={SHA_METADATA: hashlib.sha256(data).hexdigest()},
            )
        except Exception as exc:
            raise _s3_error(exc, f"writing s3://{self.target.bucket}/{key}") from None


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _s3_error(exc: BaseException, what: str) -> CommandError:
    code = _code(exc)
    name = type(exc).__name__
    if name == "NoCredentialsError":
        reason = "no AWS credentials found (set AWS_PROFILE or the AWS_* variables)"
    elif name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionError"):
        reason = f"the storage endpoint cannot be reached ({exc})"
    elif code in ("AccessDenied", "403"):
        reason = "access denied with these credentials"
    elif code == "NoSuchBucket":
        reason = "the bucket does not exist"
    else:
        reason = f"{code or name}: {' '.join(str(exc).split())[:300]}"
    return CommandError(f"{what}: {reason}")


def s3_client(region: str | None):
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client("s3", region_name=region, config=config)


# ---------------------------------------------------------------------- push


def plan(items: list[Item], store, target: Target, workers: int) -> Plan:
    result = Plan(target, items)

    def check(item: Item) -> tuple[Item, str | None]:
        return item, store.existing_sha256(item)

    with ThreadPoolExecutor(workers) as pool:
        for item, found in pool.map(check, items):
            if found is None:
                result.send.append(item)
            elif found == item.sha256:
                result.skip.append(item)
            else:
                result.conflicts.append((item, found))
    return result


def push(
    src: Path,
    target: Target,
    *,
    force: bool = False,
    workers: int = DEFAULT_WORKERS,
    chunk_mb: int = DEFAULT_CHUNK_MB,
    region: str | None = None,
    client_factory: Callable[[str | None], Any] = s3_client,
    say: Callable[[str], None] = print,
) -> dict:
    """Push `src` to `target`; the upload manifest (as written) with a summary."""
    items = with_checksums(local_files(src), workers)
    if target.is_s3:
        store = S3Store(target, client_factory(region), chunk_mb, workers)
    else:
        store = LocalStore(target)
    found = plan(items, store, target, workers)
    if found.conflicts and not force:
        first = "; ".join(
            f"{target.object_uri(i.rel)} holds {there[:12]}..., SRC {i.sha256[:12]}..."
            for i, there in found.conflicts[:3]
        )
        raise CommandError(
            f"{len(found.conflicts)} object(s) already exist with other content "
            f"({first}); nothing was uploaded. Pass --force to replace them, or "
            "push to another destination"
        )
    send = found.send + [i for i, _ in found.conflicts]
    total = sum(i.size for i in send)
    say(
        f"pushing {src} to {target.uri}: {len(send)} object(s), {_mib(total)} to "
        f"send, {len(found.skip)} already there"
    )
    progress = Progress(total, len(send))
    try:
        if target.is_s3:
            stale = store.abort_stale_uploads(items)
            if stale:
                say(f"aborted {stale} multipart upload(s) an interrupted push left")
            store.transfer(send, progress)
        else:
            with ThreadPoolExecutor(workers) as pool:
                for item in pool.map(lambda i: (store.put(i, progress), i)[1], send):
                    progress.finished(item)
    finally:
        progress.close()
    manifest = {
        "format": "raygpu-upload",
        "version": 1,
        "source": str(src.resolve()),
        "destination": target.uri,
        "objects": [
            {"key": i.rel, "bytes": i.size, "sha256": i.sha256}
            for i in sorted(items, key=lambda i: i.rel)
        ],
    }
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    store.put_bytes(UPLOAD_MANIFEST, data)
    return {
        **manifest,
        "uploaded": len(send),
        "skipped": len(found.skip),
        "replaced": len(found.conflicts),
        "bytes_sent": total,
        "manifest": target.object_uri(UPLOAD_MANIFEST),
    }
