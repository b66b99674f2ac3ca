"""What the operator commands share: a stack's outputs, kubectl and the way in.

A stack is reached from a laptop without exposing anything: the kubeconfig from the
stack's outputs goes to a private temporary file (mode 0600, removed afterwards),
`kubectl port-forward` binds the Ray head's port to 127.0.0.1 only, and Ray's auth
token is read from the cluster's Secret into memory and handed to child processes
through their environment. It is never printed, logged or put on a command line.

Every external program (pulumi, kubectl) runs through `subprocess` here, so that a
test can replace the runner or the executable without touching the logic above it.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygpu.errors import CommandError
from raygpu.names import (
    DASHBOARD_PORT,
    LOOPBACK,
    RAY_TOKEN_SECRET_KEY,
    auth_secret_name,
    head_service_name,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_JOBS_DIR = REPO_ROOT / "ray_jobs"

Runner = Callable[..., subprocess.CompletedProcess]


# --------------------------------------------------------------------------- outputs


# The output naming the cloud identity Ray's service accounts are bound to, per
# cloud (`cloud`, absent on AWS stacks). A new cloud adds its row.
IDENTITY_OUTPUTS = {
    "aws": "irsa_role_arn",
    "gcp": "ray_google_service_account",
    "azure": "ray_identity_client_id",
}


@dataclass(frozen=True)
class StackOutputs:
    """The stack outputs that scripts use (names fixed by the infra contract)."""

    stack: str
    values: Mapping[str, Any] = field(repr=False)  # holds the kubeconfig: no repr

    def get(self, key: str, default: Any = None) -> Any:
        value = self.values.get(key)
        return default if value in (None, "") else value

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise CommandError(
                f"stack output {key!r} is missing from stack {self.stack!r} "
                f"(has: {', '.join(sorted(self.values)) or 'nothing'}); "
                "run `pulumi up` for the stack first"
            )
        return value

    @property
    def cloud(self) -> str:
        """`aws` (stacks from before the output existed export none), or the
        stack's `cloud` output; one the toolkit does not know is refused."""
        cloud = str(self.get("cloud", "aws"))
        if cloud not in IDENTITY_OUTPUTS:
            raise CommandError(
                f"stack output 'cloud' of stack {self.stack!r} is {cloud!r}; this "
                f"raygpu knows: {', '.join(IDENTITY_OUTPUTS)}"
            )
        return cloud

    @property
    def identity(self) -> str:
        """The cloud identity of Ray's service accounts: the IRSA role ARN on
        AWS, the Google service account's email on Google Cloud, the
        user-assigned identity's client ID on Azure."""
        return str(self.require(IDENTITY_OUTPUTS[self.cloud]))

    @property
    def region(self) -> str:
        return str(self.require("region"))

    @property
    def cluster_name(self) -> str:
        return str(self.require("cluster_name"))

    @property
    def artifacts_bucket(self) -> str:
        return str(self.require("artifacts_bucket"))

    @property
    def ray_namespace(self) -> str:
        return str(self.get("ray_namespace", "ray"))

    @property
    def ray_cluster_name(self) -> str:
        return str(self.require("ray_cluster_name"))

    @property
    def ray_head_service(self) -> str:
        return str(
            self.get("ray_head_service") or head_service_name(self.ray_cluster_name)
        )


def pulumi_executable() -> str:
    found = shutil.which("pulumi")
    if not found:
        raise CommandError(
            "the Pulumi CLI was not found on PATH; install it, or pass the stack's "
            "outputs with --outputs FILE (from `pulumi stack output --json "
            "--show-secrets`)"
        )
    return found


def load_outputs(
    stack: str, outputs_file: str | Path | None = None, runner: Runner = subprocess.run
) -> StackOutputs:
    """Read a stack's outputs from FILE, or from `pulumi stack output --json`."""
    if outputs_file is not None:
        path = Path(outputs_file)
        try:
            values = json.loads(path.read_text())
        except OSError as exc:
            raise CommandError(
                f"--outputs: cannot read {path}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise CommandError(f"--outputs: {path} is not JSON: {exc}") from None
    else:
        argv = [
            pulumi_executable(),
            "stack",
            "output",
            "--json",
            "--show-secrets",
            "--stack",
            stack,
        ]
        proc = runner(argv, cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            # pulumi's stderr never carries output values; stdout might.
            reason = _last_line(proc.stderr) or f"exit status {proc.returncode}"
            raise CommandError(f"`pulumi stack output` for stack {stack!r}: {reason}")
        try:
            values = json.loads(proc.stdout or "{}")
        except ValueError:
            raise CommandError(
                f"`pulumi stack output --json` for stack {stack!r} did not print JSON"
            ) from None
    if not isinstance(values, dict):
        raise CommandError(f"stack outputs of {stack!r} must be a JSON object")
    return StackOutputs(stack=stack, values=values)


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------ kubeconfig


@contextmanager
def private_kubeconfig(kubeconfig: str | Mapping[str, Any]) -> Iterator[Path]:
    """Write the kubeconfig to a file only this user can read; remove it after."""
    if isinstance(kubeconfig, Mapping):
        text = json.dumps(kubeconfig)
    elif isinstance(kubeconfig, str) and kubeconfig.strip():
        text = kubeconfig
    else:
        raise CommandError("stack output 'kubeconfig' is empty")
    fd, name = tempfile.mkstemp(prefix="raygpu-kubeconfig-", suffix=".yaml")
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; say it explicitly
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        yield path
    finally:
        path.unlink(missing_ok=True)


class ClusterAsleep(CommandError):
    """The stack's RayCluster is suspended (`raygpu sleep`): no head to reach."""


class Kubectl:
    """kubectl against one kubeconfig. The seam to Kubernetes for every script."""

    def __init__(
        self,
        kubeconfig: str | Path,
        executable: str | None = None,
        runner: Runner = subprocess.run,
        timeout_s: float = 120.0,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.executable = executable or shutil.which("kubectl") or "kubectl"
        self.runner = runner
        self.timeout_s = timeout_s

    def argv(self, *args: str) -> list[str]:
        return [self.executable, "--kubeconfig", self.kubeconfig, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            proc = self.runner(
                self.argv(*args),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
            )
        except FileNotFoundError:
            raise CommandError("kubectl was not found on PATH; install it") from None
        except subprocess.TimeoutExpired:
            raise CommandError(
                f"`kubectl {' '.join(args[:3])}` did not answer in "
                f"{self.timeout_s:.0f}s"
            ) from None
        if check and proc.returncode != 0:
            # stderr only: stdout may hold a Secret's data.
            reason = _last_line(proc.stderr) or f"exit status {proc.returncode}"
            raise CommandError(f"`kubectl {' '.join(args[:3])}` failed: {reason}")
        return proc

    def get_json(self, *args: str) -> Any:
        proc = self.run(*args, "-o", "json")
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise CommandError(
                f"`kubectl {' '.join(args[:3])}` did not print JSON"
            ) from None

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        try:
            return subprocess.Popen(self.argv(*args), **kwargs)
        except FileNotFoundError:
            raise CommandError("kubectl was not found on PATH; install it") from None


def read_ray_auth_token(
    kubectl: Kubectl, namespace: str, ray_cluster: str
) -> str | None:
    """Ray's token from the Secret KubeRay made for the RayCluster, or None.

    None when the RayCluster does not use token authentication. The value stays in
    memory; errors name the Secret, never its content.
    """
    cluster = kubectl.get_json("get", "raycluster", ray_cluster, "-n", namespace)
    if (cluster.get("spec") or {}).get("suspend"):
        raise ClusterAsleep(
            f"the Ray cluster {namespace}/{ray_cluster} is asleep (suspended): "
            "`raygpu wake` brings it back"
        )
    auth = (cluster.get("spec") or {}).get("authOptions") or {}
    if auth.get("mode") != "token":
        return None
    secret_name = auth.get("secretName") or auth_secret_name(ray_cluster)
    secret = kubectl.get_json("get", "secret", secret_name, "-n", namespace)
    encoded = (secret.get("data") or {}).get(RAY_TOKEN_SECRET_KEY)
    if not encoded:
        raise CommandError(
            f"Secret {namespace}/{secret_name} has no key {RAY_TOKEN_SECRET_KEY!r}; "
            "is the KubeRay operator running?"
        )
    try:
        token = base64.b64decode(encoded, validate=True).decode().strip()
    except ValueError:
        raise CommandError(
            f"Secret {namespace}/{secret_name} key {RAY_TOKEN_SECRET_KEY!r} "
            "is not valid base64"
        ) from None
    if not token:
        raise CommandError(f"Secret {namespace}/{secret_name} holds an empty token")
    return token


# ---------------------------------------------------------------------- port-forward

_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")


@contextmanager
def port_forward(
    kubectl: Kubectl,
    namespace: str,
    target: str,
    remote_port: int,
    local_port: int = 0,
    timeout_s: float = 30.0,
) -> Iterator[str]:
    """`kubectl port-forward` bound to 127.0.0.1; yields http://127.0.0.1:PORT.

    The forward is stopped when the block ends, however it ends (error, Ctrl-C).
    `local_port` 0 lets kubectl pick a free port.
    """
    proc = kubectl.popen(
        "port-forward",
        "--address",
        LOOPBACK,
        "-n",
        namespace,
        target,
        f"{local_port or ''}:{remote_port}",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    errors: list[str] = []
    stderr_done = threading.Event()

    def drain(stream, sink, done=None) -> None:
        # Keep reading for the forward's whole life: kubectl writes a line per
        # connection and would block on a full pipe.
        try:
            for line in stream:
                sink(line)
        except (OSError, ValueError):  # closed by _stop
            pass
        if done is not None:
            done()

    threads = [
        threading.Thread(
            target=drain,
            args=(proc.stdout, lines.put, lambda: lines.put(None)),
            daemon=True,
        ),
        threading.Thread(
            target=drain,
            args=(proc.stderr, errors.append, stderr_done.set),
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    try:
        url = _wait_forwarding(proc, lines, errors, stderr_done, target, timeout_s)
        yield url
    finally:
        _stop(proc)


def _wait_forwarding(
    proc: subprocess.Popen,
    lines: queue.Queue,
    errors: list[str],
    stderr_done: threading.Event,
    target: str,
    timeout_s: float,
) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandError(
                f"kubectl port-forward to {target} did not start in {timeout_s:.0f}s"
            )
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:  # stdout closed: kubectl ended
            proc.wait(timeout=5)
            stderr_done.wait(timeout=5)
            reason = _last_line("".join(errors)) or f"exit status {proc.returncode}"
            raise CommandError(f"kubectl port-forward to {target} failed: {reason}")
        match = _FORWARDING.search(line)
        if match:
            return f"http://{LOOPBACK}:{match.group(1)}"


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextmanager
def stack_access(
    outputs: StackOutputs,
    remote_port: int = DASHBOARD_PORT,
    kubectl_executable: str | None = None,
) -> Iterator[tuple[str, str | None, Kubectl]]:
    """Private kubeconfig + Ray's token + a port-forward to the head.

    Yields (url on 127.0.0.1, token or None, kubectl); everything is undone on exit.
    """
    with stack_kubectl(outputs, kubectl_executable) as kubectl:
        with ray_access(kubectl, outputs, remote_port) as access:
            yield access


@contextmanager
def stack_kubectl(
    outputs: StackOutputs, kubectl_executable: str | None = None
) -> Iterator[Kubectl]:
    """kubectl on the stack's kubeconfig, kept in a private file while in use."""
    with private_kubeconfig(outputs.require("kubeconfig")) as path:
        yield Kubectl(path, executable=kubectl_executable)


@contextmanager
def ray_access(
    kubectl: Kubectl, outputs: StackOutputs, remote_port: int = DASHBOARD_PORT
) -> Iterator[tuple[str, str | None, Kubectl]]:
    """Ray's token and a port-forward to the head (ClusterAsleep if suspended)."""
    namespace = outputs.ray_namespace
    token = read_ray_auth_token(kubectl, namespace, outputs.ray_cluster_name)
    target = f"svc/{outputs.ray_head_service}"
    with port_forward(kubectl, namespace, target, remote_port) as url:
        yield url, token, kubectl


# ---------------------------------------------------------------------- bounded waits


class Clock:
    """Time for bounded waits; tests pass one that advances without sleeping."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def wait_until(
    check: Callable[[], Any],
    timeout_s: float,
    what: str,
    interval_s: float = 5.0,
    clock: Clock | None = None,
) -> Any:
    """Call `check` until it returns something truthy, at most `timeout_s` seconds.

    Returns that value; raises CommandError naming `what` on timeout. `what` may be a
    callable that describes what is still missing at the end.
    """
    clock = clock or Clock()
    deadline = clock.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if clock.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise CommandError(f"timed out after {timeout_s:.0f}s waiting for {detail}")
        clock.sleep(min(interval_s, max(deadline - clock.monotonic(), 0.0)) or 0.01)
