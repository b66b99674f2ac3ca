"""Talking to a Ray cluster as a client: the `ray` CLIs, the token, the REST API.

Ray's token is read from the environment or `~/.ray/auth_token` and handed on
only through a child's environment or an Authorization header: never on a
command line, never printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raygpu.errors import CommandError, UsageError

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# The make target that installs Ray (and torch) beside the operator's tools.
FULL_INSTALL_TARGET = "make venv"


def ray_cli(name: str = "ray") -> str:
    """A Ray CLI (`ray`, `serve`) from this virtualenv, else from PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise UsageError(
            f"the `{name}` command is not installed (an operator-only install has "
            f"no Ray); run `{FULL_INSTALL_TARGET}` first"
        )
    return found


def token_path() -> Path:
    return Path(os.environ.get(TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token")


def local_token() -> str | None:
    """The token Ray's own clients would use on this machine (env or ~/.ray)."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token.strip()
    try:
        return token_path().read_text().strip() or None
    except OSError:
        return None


def auth_headers(token: str | None = None) -> dict[str, str]:
    """The Authorization header for `token`, else for this machine's token."""
    token = token or local_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def ensure_token() -> None:
    """Create ~/.ray/auth_token (mode 0600) when no token is configured yet."""
    if os.environ.get(TOKEN_ENV) or os.environ.get(TOKEN_PATH_ENV):
        return
    path = token_path()
    if not path.exists():
        subprocess.run(
            [ray_cli(), "get-auth-token", "--generate"],
            capture_output=True,
            check=True,
            timeout=60,
        )
    path.chmod(0o600)


def client_auth_env() -> dict[str, str]:
    """Settings every Ray process of a local cluster needs, clients included.

    - Token auth: Ray only enables it by itself for `address="auto"`; a client
      given an explicit address must be told, or it sends no token.
    - Loopback: on Linux Ray replaces 127.0.0.1 with the machine's outward IP
      address (it assumes a multi-node cluster); this single-node mode (the one
      Ray uses on macOS) keeps every connection on 127.0.0.1.
    """
    return {
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": os.environ.get(
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"
        ),
    }


def ray_client_env(token: str | None, extra: Mapping[str, str] | None = None) -> dict:
    """Environment for a Ray CLI child: the token only here, never on argv."""
    env = dict(os.environ)
    env.update(extra or {})
    if token:
        env["RAY_AUTH_MODE"] = "token"
        env[TOKEN_ENV] = token
    elif "RAY_AUTH_MODE" not in env and local_token():
        # Ray's CLIs given an explicit address send the token from ~/.ray only
        # when told that token auth is on.
        env["RAY_AUTH_MODE"] = "token"
    return env


def dashboard_get(
    address: str, path: str, token: str | None, timeout_s: float = 30.0
) -> Any:
    """GET a JSON document from Ray's dashboard API (the job/Serve REST API)."""
    request = urllib.request.Request(
        address.rstrip("/") + path, headers=auth_headers(token)
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise CommandError(
                f"Ray at {address} refused the request (HTTP {exc.code}): its auth "
                "token is missing or wrong"
            ) from None
        raise CommandError(f"GET {path} on {address}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot reach Ray at {address}: {reason}") from None
    except ValueError:
        raise CommandError(f"GET {path} on {address} did not return JSON") from None


def check_address(address: str) -> str:
    """Validate --address: an http(s) URL of Ray's job API."""
    if not re.match(r"^https?://[^/\s]+/?$", address):
        raise UsageError(
            f"--address: {address!r} is not allowed; give the job API's URL, "
            "e.g. http://127.0.0.1:8265"
        )
    return address.rstrip("/")
