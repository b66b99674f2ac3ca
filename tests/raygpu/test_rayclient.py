"""raygpu.rayclient: the address check, the token lookup and the CLI environment."""

import os

import pytest

from raygpu import rayclient
from raygpu.errors import UsageError
from raygpu.rayclient import check_address, ray_client_env


@pytest.mark.parametrize(
    "address", ["127.0.0.1:8265", "ftp://x", "http://a b", "http://h/path", ""]
)
def test_bad_address(address):
    with pytest.raises(UsageError, match="--address: .* is not allowed"):
        check_address(address)


def test_good_address():
    assert check_address("http://127.0.0.1:8265/") == "http://127.0.0.1:8265"


def test_local_token_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", " abc ")
    assert rayclient.local_token() == "abc"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    path = tmp_path / "tok"
    path.write_text("fromfile\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert rayclient.local_token() == "fromfile"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    assert rayclient.local_token() is None
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "RAY_AUTH_MODE" not in ray_client_env(None)
    assert os.environ.get("RAY_AUTH_TOKEN") is None
