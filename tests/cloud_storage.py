"""Google Cloud Storage and Azure Blob emulators on loopback, as moto is for S3.

- GCS: gcp-storage-emulator (PyPI, pinned in requirements.txt), a pure-Python
  server of the JSON API with resumable uploads, started with two changes that
  pyarrow's GCS client needs (GCS_SERVER): the standard library's threading
  HTTP server in place of the single-threaded one (the client leaves a partly
  read download open when it seeks, a Parquet footer then its columns, and the
  next request would wait behind it for ever), and objects.list's
  includeTrailingDelimiter, which it ignores: with it, GCS lists the marker
  objects of folders among the items, and that is how pyarrow finds folders
  (checkpoint folders in a run, say) in a listing that is not recursive.
- Azure: Azurite's Blob service (npm), installed by `make azurite` into
  .tools/azurite; it checks shared-key signatures like Azure does.

Each is a session fixture: a subprocess bound to 127.0.0.1 on a free port,
waited for until it answers, killed at the end, with the environment variables
that mlcore.storage reads set meanwhile. A missing emulator fails the tests
that need it, saying what to run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from raygpu.localray import free_port

REPO = Path(__file__).resolve().parents[1]
AZURITE_BLOB = REPO / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (its documentation publishes the key).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw=="
)
# Should a test build a GCS client without the emulator, Google's client must
# look for instance metadata on loopback, never at the metadata server's address.
os.environ.setdefault("GCE_METADATA_ROOT", "127.0.0.1:9")
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:9")

GCS_SERVER = """
import json
import sys
from http import server

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

server.HTTPServer = server.ThreadingHTTPServer
list_objects = objects.ls


def ls(request, response, storage, *args, **kwargs):
    list_objects(request, response, storage, *args, **kwargs)
    trailing = request.query.get("includeTrailingDelimiter", [""])[0] == "true"
    if not trailing or response.status != 200:
        return
    body = json.loads(response._content)
    for prefix in body["prefixes"]:
        try:
            body["items"].append(
                storage.get_file_obj(request.params["bucket_name"], prefix)
            )
        except NotFound:  # a folder implied by deeper names, with no marker object
            pass
    body["items"].sort(key=lambda item: item["name"])
    response.json(body)


objects.ls = ls  # before the server module builds its routes from it
from gcp_storage_emulator.__main__ import main  # noqa: E402

main(["start", "--host", "127.0.0.1", "--port", sys.argv[1], "--in-memory", "-q"])
"""


@dataclass(frozen=True)
class Emulator:
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # what mlcore.storage needs to reach it


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an HTTP answer, even an error, means it is serving
    except (urllib.error.URLError, OSError):
        return False
    return True


def _wait(proc: subprocess.Popen, url: str, name: str, timeout_s: float) -> bool:
    """True once `url` answers; False if the server exited first (its port was
    taken). Kills it and raises if it neither answers nor exits in time."""
    deadline = time.monotonic() + timeout_s
    while not _answers(url):
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=10)
            raise RuntimeError(f"{name} did not answer within {timeout_s:.0f}s")
        time.sleep(0.2)
    return True


@contextlib.contextmanager
def _serve(name: str, command, probe_path: str, timeout_s: float, cwd=None):
    """Run `command(port)` on a free port until it answers; yield its URL; kill it."""
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            command(port),
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _wait(proc, url + probe_path, name, timeout_s):
            break
        proc.wait(timeout=10)
    else:
        raise RuntimeError(
            f"{name} exited at start-up 3 times, each on a fresh free port "
            "(a port taken each time, or a broken install)"
        )
    try:
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def start_gcs():
    """gcp-storage-emulator on 127.0.0.1 (a free port), in memory; yields its URL."""
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        pytest.fail(
            "gcp-storage-emulator is not installed in .venv: run `make venv` "
            "(requirements.txt pins it)",
            pytrace=False,
        )
    with _serve(
        "gcp-storage-emulator",
        lambda port: [sys.executable, "-c", GCS_SERVER, str(port)],
        "/storage/v1/b",
        timeout_s=30,
    ) as url:
        yield url


@contextlib.contextmanager
def start_azurite():
    """Azurite's Blob service on 127.0.0.1 (a free port), in memory; yields its URL."""
    node = shutil.which("node")
    if not AZURITE_BLOB.exists() or node is None:
        pytest.fail(
            f"Azurite is not installed ({AZURITE_BLOB.relative_to(REPO)} "
            f"{'missing' if node else 'needs node, which is not on PATH'}): "
            "run `make azurite` (npm, into .tools/azurite)",
            pytrace=False,
        )
    with (
        tempfile.TemporaryDirectory(prefix="rg-azurite-") as workdir,
        _serve(
            "azurite-blob",
            lambda port: [
                str(AZURITE_BLOB),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--inMemoryPersistence",
                # pyarrow's Azure SDK asks for a newer API version than this
                # Azurite knows; the Blob calls it makes are the same
                "--skipApiVersionCheck",
                "--silent",
            ],
            "/",
            timeout_s=60,  # node loads several hundred modules first
            cwd=workdir,
        ) as url,
    ):
        yield url


def create_gcs_bucket(emulator: Emulator, name: str) -> None:
    """A bucket on the GCS emulator (the jobs never create buckets; the stack does)."""
    request = urllib.request.Request(
        f"{emulator.endpoint}/storage/v1/b?project=raygpu-test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()


@contextlib.contextmanager
def environment(env: dict[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def gcs_server():
    """A GCS JSON API on 127.0.0.1; STORAGE_EMULATOR_HOST names it meanwhile."""
    with start_gcs() as url:
        env = {"STORAGE_EMULATOR_HOST": url}
        with environment(env):
            yield Emulator(endpoint=url, env=env)


@pytest.fixture(scope="session")
def azurite_server():
    """Azure Blob (Azurite) on 127.0.0.1; its endpoint and the development
    account's key in AZURE_STORAGE_BLOB_ENDPOINT and AZURE_STORAGE_KEY meanwhile."""
    with start_azurite() as url:
        env = {"AZURE_STORAGE_BLOB_ENDPOINT": url, "AZURE_STORAGE_KEY": AZURITE_KEY}
        with environment(env):
            yield Emulator(endpoint=url, env=env)
