"""The object stores behind storage URIs: S3, Google Cloud Storage, Azure Blob.

Each backend turns its URI form into a pyarrow filesystem and the path inside
it, turns such a path back into a URI, and says what its messages need (the
word for a bucket, the permission a write needs, how a refusal reads). Every
client takes its credentials the way the cloud's own tools do (IRSA, Workload
Identity, AKS workload identity), and an emulator or private endpoint from the
environment variable the cloud's own libraries read, where there is one.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from urllib.parse import ParseResult, urlparse

import pyarrow.fs as pafs

from mlcore.errors import JobInputError

ALLOWED = "must be a local folder or an s3://, gs:// or abfs:// URI"
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 3
# The start-up probe is one small request: a store that does not answer it in a
# few seconds is not going to hold checkpoints either.
PROBE_REQUEST_TIMEOUT_S = 4.0
PROBE_MAX_ATTEMPTS = 2
# Google's client retries transient errors for this long (pyarrow exposes no
# per-request timeout for GCS or Azure: storage.check_storage bounds the probe).
GCS_RETRY_S = MAX_ATTEMPTS * REQUEST_TIMEOUT_S
GCS_PROBE_RETRY_S = 2.0  # with its backoff, a few seconds: well inside the deadline

# Google's client libraries read STORAGE_EMULATOR_HOST (http://host:port or
# host:port); Azure's have no such variable, so this one is ours.
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
AZURE_ENDPOINT_ENV = "AZURE_STORAGE_BLOB_ENDPOINT"
AZURE_KEY_ENV = "AZURE_STORAGE_KEY"  # the Azure CLI's name for an account key
AZURE_DFS_SUFFIX = ".dfs.core.windows.net"

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_AZURE_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _endpoint(url: str) -> tuple[str, str]:
    """(scheme, host:port) of an endpoint given as a URL or a bare host:port."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    return parsed.scheme, parsed.netloc


def s3_filesystem(
    region: str | None = None,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> pafs.S3FileSystem:
    """S3 with the standard AWS settings; the endpoint from AWS_ENDPOINT_URL_S3
    or AWS_ENDPOINT_URL when set (an S3-compatible store, a local S3 API)."""
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


def gcs_filesystem(retry_s: float = GCS_RETRY_S) -> pafs.GcsFileSystem:
    """GCS with Google's default credentials (Workload Identity on GKE), or an
    emulator, anonymously, when STORAGE_EMULATOR_HOST names one."""
    kwargs: dict = {"retry_time_limit": datetime.timedelta(seconds=retry_s)}
    emulator = os.environ.get(GCS_EMULATOR_ENV)
    if emulator:
        kwargs["scheme"], kwargs["endpoint_override"] = _endpoint(emulator)
        kwargs["anonymous"] = True
    return pafs.GcsFileSystem(**kwargs)


def azure_filesystem(account: str) -> pafs.AzureFileSystem:
    """Azure Blob of `account`: an account key from AZURE_STORAGE_KEY when set,
    else DefaultAzureCredential (workload identity on AKS); a path-style
    endpoint (Azurite) from AZURE_STORAGE_BLOB_ENDPOINT when set."""
    kwargs: dict = {"account_name": account}
    key = os.environ.get(AZURE_KEY_ENV)
    if key:
        kwargs["account_key"] = key
    endpoint = os.environ.get(AZURE_ENDPOINT_ENV)
    if endpoint:
        scheme, authority = _endpoint(endpoint)
        if scheme != "https" and not key:
            # Azure sends tokens over HTTPS only; its client would abort the process
            raise JobInputError(
                AZURE_ENDPOINT_ENV,
                f"{endpoint} is not https: give the account key in {AZURE_KEY_ENV}",
            )
        kwargs |= {
            "blob_storage_authority": authority,
            "dfs_storage_authority": authority,
            "blob_storage_scheme": scheme,
            "dfs_storage_scheme": scheme,
        }
    return pafs.AzureFileSystem(**kwargs)


@dataclass(frozen=True)
class Located:
    uri: str  # normalised: no trailing slash
    path: str  # inside the backend's filesystem: bucket[/prefix]


class Backend:
    """One object store: its URI form, filesystem and wording."""

    form: str  # the URI form, for messages
    bucket_word: str  # what the first path component is called
    write_permission: str  # what the start-up write probe needs there
    denied_markers: tuple[str, ...]  # how the client reports a refusal
    credentials_hint: str  # where its credentials come from, for messages

    def locate(self, parsed: ParseResult, uri: str, field: str) -> Located:
        raise NotImplementedError

    def filesystem(self, uri: str, probe: bool = False) -> pafs.FileSystem:
        raise NotImplementedError

    def uri_of(self, uri: str, path: str) -> str:
        """The URI of `path` (inside this filesystem) for the store of `uri`."""
        return f"{urlparse(uri).scheme}://{path.strip('/')}"


def _bucket_path(
    parsed: ParseResult, uri: str, field: str, pattern: re.Pattern, rule: str
) -> Located:
    bucket = parsed.netloc
    if not pattern.match(bucket or ""):
        raise JobInputError(field, f"{uri!r} has no valid bucket name ({rule})")
    prefix = parsed.path.strip("/")
    path = f"{bucket}/{prefix}" if prefix else bucket
    return Located(uri=f"{parsed.scheme}://{path}", path=path)


class S3(Backend):
    form = "s3://bucket/prefix"
    bucket_word = "bucket"
    write_permission = "s3:PutObject"
    denied_markers = ("ACCESS_DENIED",)
    credentials_hint = "credentials: the AWS chain, IRSA on EKS"

    def locate(self, parsed, uri, field):
        rule = "3-63 lowercase letters, digits, dots and hyphens"
        return _bucket_path(parsed, uri, field, _S3_BUCKET, rule)

    def filesystem(self, uri, probe=False):
        if probe:
            return s3_filesystem(
                request_timeout_s=PROBE_REQUEST_TIMEOUT_S,
                max_attempts=PROBE_MAX_ATTEMPTS,
            )
        return s3_filesystem()


class GCS(Backend):
    form = "gs://bucket/prefix"
    bucket_word = "bucket"
    write_permission = "storage.objects.create"
    denied_markers = ("PERMISSION_DENIED", "UNAUTHENTICATED")
    credentials_hint = (
        "credentials: Workload Identity on GKE, GOOGLE_APPLICATION_CREDENTIALS "
        "elsewhere"
    )

    def locate(self, parsed, uri, field):
        rule = "3-63 lowercase letters, digits, dots, hyphens and underscores"
        return _bucket_path(parsed, uri, field, _GCS_BUCKET, rule)

    def filesystem(self, uri, probe=False):
        return gcs_filesystem(GCS_PROBE_RETRY_S if probe else GCS_RETRY_S)


class Azure(Backend):
    """abfs://container@account.dfs.core.windows.net/prefix (abfss:// alike:
    Hadoop's ABFS form; both reach the account over HTTPS). The filesystem's
    root is the account, so its paths are container/prefix."""

    form = "abfs://container@account.dfs.core.windows.net/prefix"
    bucket_word = "container"
    write_permission = "write access (Storage Blob Data Contributor)"
    # Azure's error codes (AuthorizationFailure, AuthorizationPermissionMismatch,
    # ...): the bare status 403 could match a port or a request id.
    denied_markers = ("[Authorization", "[AuthenticationFailed]", "[Insufficient")
    credentials_hint = (
        "credentials: workload identity on AKS, from the pod's federated service "
        "account; elsewhere AZURE_STORAGE_KEY, or AZURE_CLIENT_ID, AZURE_TENANT_ID "
        "and AZURE_CLIENT_SECRET"
    )

    def locate(self, parsed, uri, field):
        container, at, host = parsed.netloc.partition("@")
        account = host.removesuffix(AZURE_DFS_SUFFIX)
        if not at or account == host:
            raise JobInputError(
                field, f"{uri!r} is not of the form {parsed.scheme}{self.form[4:]}"
            )
        if not _AZURE_ACCOUNT.match(account):
            raise JobInputError(
                field,
                f"{uri!r} has no valid storage account name (3-24 lowercase "
                "letters and digits)",
            )
        if not _AZURE_CONTAINER.match(container):
            raise JobInputError(
                field,
                f"{uri!r} has no valid container name (3-63 lowercase letters, "
                "digits and single hyphens)",
            )
        prefix = parsed.path.strip("/")
        path = f"{container}/{prefix}" if prefix else container
        return Located(
            uri=self.uri_of(f"{parsed.scheme}://{parsed.netloc}", path), path=path
        )

    def filesystem(self, uri, probe=False):
        return azure_filesystem(_account(uri))

    def uri_of(self, uri, path):
        parsed = urlparse(uri)
        host = parsed.netloc.partition("@")[2]
        container, _, rest = path.strip("/").partition("/")
        tail = f"/{rest}" if rest else ""
        return f"{parsed.scheme}://{container}@{host}{tail}"


def _account(uri: str) -> str:
    return urlparse(uri).netloc.partition("@")[2].removesuffix(AZURE_DFS_SUFFIX)


BACKENDS: dict[str, Backend] = {
    "s3": S3(),
    "gs": GCS(),
    "abfs": Azure(),
    "abfss": Azure(),
}
REMOTE_SCHEMES = tuple(f"{scheme}://" for scheme in BACKENDS)


def is_remote_uri(text: str) -> bool:
    """True for an object-store URI (any scheme above), False for a local path."""
    return text.strip().startswith(REMOTE_SCHEMES)


def backend(uri: str) -> Backend:
    return BACKENDS[urlparse(uri).scheme]
