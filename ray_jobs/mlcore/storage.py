"""Storage paths: a local folder, or an s3://, gs:// or abfs:// URI.

The forms, their credentials and endpoints (mlcore.storage_backends):

- `s3://bucket/prefix`: pyarrow's S3 filesystem with the standard AWS settings
  (IRSA on EKS); the endpoint from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`.
- `gs://bucket/prefix`: Google's default credentials (Workload Identity on
  GKE); an emulator, reached anonymously, from `STORAGE_EMULATOR_HOST`.
- `abfs://container@account.dfs.core.windows.net/prefix` (or `abfss://`):
  DefaultAzureCredential (workload identity on AKS), or the account key in
  `AZURE_STORAGE_KEY`; an emulator (Azurite) from `AZURE_STORAGE_BLOB_ENDPOINT`.

Timeouts and retries are bounded where pyarrow allows, and the start-up probe
(`check_storage`) has a deadline of its own, so that an unreachable store fails
in seconds, not after a long hang.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

from mlcore.errors import JobInputError, StorageError
from mlcore.storage_backends import (
    ALLOWED,
    BACKENDS,
    backend,
    is_remote_uri,
    s3_filesystem,
)

__all__ = [
    "StoragePath",
    "check_storage",
    "download_dir",
    "is_remote_uri",
    "parse_storage",
    "read_text",
    "s3_filesystem",
    "upload_dir",
    "write_text",
]

# The whole probe's deadline: GCS and Azure clients take no request timeout
# from pyarrow, and a server that accepts connections but never answers would
# hold them for minutes.
PROBE_DEADLINE_S = 10.0


@dataclass(frozen=True)
class StoragePath:
    uri: str  # as the user gave it, normalised (no trailing slash)
    filesystem: pafs.FileSystem
    path: str  # the path inside `filesystem` (bucket/prefix, container/prefix)

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

    def uri_of(self, path: str) -> str:
        """The user-facing URI of `path`, a path inside `filesystem` (one that
        Ray Train or a listing returned)."""
        if not self.is_remote:
            return path
        return backend(self.uri).uri_of(self.uri, path)


def parse_storage(uri: str, field: str = "--storage-path") -> StoragePath:
    """Validate a storage URI and return its filesystem; touches no network."""
    if not uri or not uri.strip():
        raise JobInputError(field, ALLOWED)
    uri = uri.strip()
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        local = os.path.abspath(
            os.path.expanduser(parsed.path if parsed.scheme else uri)
        )
        return StoragePath(uri=local, filesystem=pafs.LocalFileSystem(), path=local)
    if parsed.scheme not in BACKENDS:
        raise JobInputError(
            field, f"unsupported scheme {parsed.scheme!r} in {uri!r}; {ALLOWED}"
        )
    store = BACKENDS[parsed.scheme]
    located = store.locate(parsed, uri, field)
    return StoragePath(
        uri=located.uri,
        filesystem=store.filesystem(located.uri),
        path=located.path.rstrip("/"),
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
    # In a child process, killed at the deadline: pyarrow's GCS and Azure clients
    # take no request timeout, and the Azure client aborts its whole process when
    # no credential yields a token.
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE_CHILD, storage.uri, needs],
            capture_output=True,
            text=True,
            timeout=PROBE_DEADLINE_S,
            env={**os.environ, "PYTHONPATH": _child_path()},
        )
    except subprocess.TimeoutExpired:
        raise StorageError(
            f"storage path {storage.uri} cannot be reached: no answer within "
            f"{PROBE_DEADLINE_S:.0f} s"
        ) from None
    if done.returncode == 0:
        return
    if done.returncode == _REFUSED and done.stdout.strip():
        raise StorageError(done.stdout.strip())
    raise StorageError(
        f"storage path {storage.uri}: its client failed: "
        f"{_crash_reason(done.stderr)} ({backend(storage.uri).credentials_hint})"
    )


_REFUSED = 3  # the child's exit status for a StorageError, printed on stdout
_PROBE_CHILD = f"""
import sys
from mlcore.errors import StorageError
from mlcore.storage import _probe_remote, parse_storage
try:
    _probe_remote(parse_storage(sys.argv[1]), sys.argv[2])
except StorageError as exc:
    print(exc)
    sys.exit({_REFUSED})
"""


def _child_path() -> str:
    """PYTHONPATH for the probe: this package's folder first, then the caller's."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)


def _crash_reason(stderr: str) -> str:
    """The C++ exception's text (`what():  ...`), else the last line written."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("what():"):
            return line.removeprefix("what():").strip()[:300]
    return lines[-1][:300] if lines else "no message"


def _probe_remote(storage: StoragePath, needs: str) -> None:
    store = backend(storage.uri)
    word = store.bucket_word
    bucket = storage.path.split("/", 1)[0]
    probe = store.filesystem(storage.uri, probe=True)
    try:
        info = probe.get_file_info(bucket)
    except OSError as exc:
        if any(marker in str(exc) for marker in store.denied_markers):
            raise StorageError(
                f"storage path {storage.uri}: access to {word} {bucket!r} denied "
                f"with these credentials: {_short(exc)}"
            ) from None
        raise StorageError(
            f"storage path {storage.uri} cannot be reached: {_short(exc)}"
        ) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(
            f"storage path {storage.uri}: {word} {bucket!r} does not exist or is "
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
            f"({needs} {store.write_permission} there): {_short(exc)}"
        ) from None
    with contextlib.suppress(OSError):  # no delete permission: an empty object stays
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


def upload_dir(local_dir: str, storage: StoragePath) -> None:
    """Copy a local folder to `storage`, creating the folder first as Ray Train
    does: on GCS that writes its marker object, without which pyarrow's listing
    that is not recursive (list_checkpoints) does not see the folder."""
    storage.filesystem.create_dir(storage.path, recursive=True)
    pafs.copy_files(
        local_dir,
        storage.path,
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=storage.filesystem,
    )
