"""Ray token auth end to end on a local cluster (the `ray_head` fixture runs with
token auth on, as the stacks' clusters do).

The job API and the dashboard refuse no token and a wrong token and answer the
right one; `raygpu submit` fails in one line without a token or with a wrong one
and runs the job with the right one. Then every place the token could leak is
searched: the commands' output and errors, `raygpu plan` (text and --json),
`raygpu render`'s files, and the cluster's own log files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from raygpu import rayclient
from raygpu.errors import CommandError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# Ray's job API, and the dashboard's own API, behind the same port.
ENDPOINTS = ("/api/jobs/", "/api/cluster_status", "/nodes?view=summary")


@pytest.fixture(scope="module")
def token(ray_head):
    found = rayclient.local_token()
    assert found, "the ray_head fixture runs with token auth: a token must exist"
    return found


def status(url: str, token: str | None) -> int:
    """The HTTP status for exactly this token (None: no Authorization header)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def raygpu(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raygpu", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def env_with(token: str | None, tmp_path: Path) -> dict[str, str]:
    """Our environment with exactly this token (or none) for Ray's clients."""
    env = {k: v for k, v in os.environ.items() if k != rayclient.TOKEN_ENV}
    env[rayclient.TOKEN_PATH_ENV] = str(tmp_path / "no-token-here")
    if token is not None:
        env[rayclient.TOKEN_ENV] = token
    return env


@pytest.mark.parametrize("path", ENDPOINTS)
def test_the_api_refuses_no_token_and_a_wrong_one(ray_head, token, path):
    url = ray_head.dashboard_url + path
    wrong = "x" * len(token)
    assert status(url, None) in (401, 403)
    assert status(url, wrong) in (401, 403)
    assert status(url, token) == 200


def test_errors_name_the_refusal_but_never_the_token(ray_head, token):
    with pytest.raises(CommandError) as refused:
        rayclient.dashboard_get(ray_head.dashboard_url, "/api/jobs/", "wrong-token")
    assert "refused the request (HTTP 403)" in str(refused.value)
    assert "wrong-token" not in str(refused.value)
    with pytest.raises(CommandError) as missing:
        rayclient.dashboard_get(ray_head.dashboard_url, "/api/no-such", token)
    assert token not in str(missing.value)


def test_submit_needs_the_right_token_and_never_prints_it(ray_head, token, tmp_path):
    entry = ["--", "python", "-c", "print('hello from the job')"]
    argv = ["submit", "--address", ray_head.dashboard_url, "--no-requirements", *entry]
    outputs = []
    for attempt in (None, "not-" + token[4:]):
        proc = raygpu(*argv, env=env_with(attempt, tmp_path))
        outputs.append(proc.stdout + proc.stderr)
        assert proc.returncode != 0, proc.stdout + proc.stderr
        # One line, before Ray's CLI runs: 401 without a token, 403 with a wrong one.
        code = 401 if attempt is None else 403
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip() == (
            f"raygpu submit: error: Ray at {ray_head.dashboard_url} refused the "
            f"request (HTTP {code}): its auth token is missing or wrong"
        )
        assert "hello from the job" not in proc.stdout
        if attempt:
            assert attempt not in proc.stdout + proc.stderr
    proc = raygpu(*argv, env=env_with(token, tmp_path))
    outputs.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hello from the job" in proc.stdout
    # What the user sees, from plan and render too.
    plan_text = raygpu("plan", "--stack", "dev", "--policy", env=os.environ.copy())
    plan_json = raygpu("plan", "--stack", "prod", "--json", env=os.environ.copy())
    out = tmp_path / "rendered"
    render = raygpu(
        "render", "--stack", "dev", "--out", str(out), env=os.environ.copy()
    )
    assert plan_text.returncode == plan_json.returncode == render.returncode == 0
    outputs += [p.stdout + p.stderr for p in (plan_text, plan_json, render)]
    outputs += [p.read_text() for p in out.rglob("*") if p.is_file()]
    assert not [text for text in outputs if token in text]


def test_the_clusters_logs_never_hold_the_token(ray_head, token):
    logs = [p for p in Path(ray_head.temp_dir).rglob("*") if p.is_file()]
    assert logs, f"no files under {ray_head.temp_dir}"
    leaked = []
    for path in logs:
        if path.suffix in (".so", ".sock") or path.stat().st_size > 50 * 2**20:
            continue
        try:
            text = path.read_bytes()
        except OSError:
            continue
        if token.encode() in text:
            leaked.append(str(path.relative_to(ray_head.temp_dir)))
    assert leaked == []
