"""Storage paths: a local folder or an `s3://bucket/prefix` URI.

S3 is reached through pyarrow's S3 filesystem with the standard AWS settings:
credentials and region from the environment (IRSA on EKS), and the endpoint from
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` when one is set (an S3-compatible
store, a VPC endpoint, or a local S3 API). Timeouts and retries are bounded so
that an unreachable store fails in seconds, not after a long hang.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

from mlcore.errors import JobInputError, StorageError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 3
# The start-up probe is one small request: a store that does not answer it in a
# few seconds is not going to hold checkpoints either.
PROBE_REQUEST_TIMEOUT_S = 4.0
PROBE_MAX_ATTEMPTS = 2


@dataclass(frozen=True)
class StoragePath:
    uri: str  # as the user gave it, normalised (no trailing slash)
    filesystem: pafs.FileSystem
    path: str  # the path inside `filesystem` (bucket/prefix for S3)

    @property
    def is_remote(self) -> bool:
        return not isinstance(self.filesystem, pafs.LocalFileSystem)

    def join(self, *parts: str) -> StoragePath:
        suffix = "/".join(p.strip("/") for p in parts if p)
        return StoragePath(
            uri=f"{self.uri}/{suffix}",
            filesystem=self.filesystem,
            path=f"{self.path}/{suffix}",
        )


def s3_filesystem(
    region: str | None = None,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
        "AWS_ENDPOINT_URL"
    )
    kwargs: dict = {
        "region": region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        "connect_timeout": CONNECT_TIMEOUT_S,
        "request_timeout": request_timeout_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
    }
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


def parse_storage(uri: str, field: str = "--storage-path") -> StoragePath:
    """Validate a storage URI and return its filesystem; touches no network."""
    if not uri or not uri.strip():
        raise JobInputError(
            field, "must be a local folder or an s3://bucket/prefix URI"
        )
    uri = uri.strip()
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        local = os.path.abspath(
            os.path.expanduser(parsed.path if parsed.scheme else uri)
        )
        return StoragePath(uri=local, filesystem=pafs.LocalFileSystem(), path=local)
    if parsed.scheme != "s3":
        raise JobInputError(
            field,
            f"unsupported scheme {parsed.scheme!r} in {uri!r}; use a local folder "
            "or s3://bucket/prefix",
        )
    bucket = parsed.netloc
    if not _BUCKET_RE.match(bucket or ""):
        raise JobInputError(
            field,
            f"{uri!r} has no valid bucket name (3-63 lowercase letters, digits, "
            "dots and hyphens)",
        )
    prefix = parsed.path.strip("/")
    path = f"{bucket}/{prefix}" if prefix else bucket
    return StoragePath(
        uri=f"s3://{path}", filesystem=s3_filesystem(), path=path.rstrip("/")
    )


def check_storage(storage: StoragePath, needs: str = "checkpoints need") -> None:
    """Fail fast, naming the path, when the storage cannot be reached or written."""
    if not storage.is_remote:
        try:
            os.makedirs(storage.path, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"storage path {storage.uri} cannot be created: {exc.strerror}"
            ) from None
        if not os.access(storage.path, os.W_OK):
            raise StorageError(f"storage path {storage.uri} is not writable")
        return
    bucket = storage.path.split("/", 1)[0]
    probe = s3_filesystem(
        request_timeout_s=PROBE_REQUEST_TIMEOUT_S, max_attempts=PROBE_MAX_ATTEMPTS
    )
    try:
        info = probe.get_file_info(bucket)
    except OSError as exc:
        if "ACCESS_DENIED" in str(exc):
            raise StorageError(
                f"storage path {storage.uri}: access to bucket {bucket!r} denied "
                f"with these credentials: {_short(exc)}"
            ) from None
        raise StorageError(
            f"storage path {storage.uri} cannot be reached: {_short(exc)}"
        ) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(
            f"storage path {storage.uri}: bucket {bucket!r} does not exist or is "
            "not visible with these credentials"
        )
    # Checkpoints are written after the first epoch: a path these credentials can
    # read but not write (the read-only data bucket, say) would fail only then.
    probe_key = f"{storage.path}/.raygpu-write-probe-{uuid.uuid4().hex[:12]}"
    try:
        with probe.open_output_stream(probe_key) as f:
            f.write(b"")
    except OSError as exc:
        raise StorageError(
            f"storage path {storage.uri} is not writable with these credentials "
            f"({needs} s3:PutObject there): {_short(exc)}"
        ) from None
    with contextlib.suppress(OSError):  # no s3:DeleteObject: an empty object stays
        probe.delete_file(probe_key)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def read_text(storage: StoragePath) -> str:
    with storage.filesystem.open_input_stream(storage.path) as f:
        return f.read().decode()


def write_text(storage: StoragePath, text: str) -> None:
    parent = storage.path.rsplit("/", 1)[0]
    storage.filesystem.create_dir(parent, recursive=True)
    with storage.filesystem.open_output_stream(storage.path) as f:
        f.write(text.encode())


def download_dir(storage: StoragePath, local_dir: str) -> str:
    """Copy a folder from storage to `local_dir` (a no-op copy for local paths)."""
    if not storage.is_remote:
        return storage.path
    os.makedirs(local_dir, exist_ok=True)
    pafs.copy_files(
        storage.path,
        local_dir,
        source_filesystem=storage.filesystem,
        destination_filesystem=pafs.LocalFileSystem(),
    )
    return local_dir
