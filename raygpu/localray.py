"""Start and stop an isolated local Ray head: the embedded default cluster.

`ray start --head` on 127.0.0.1 with its own temp dir and free ports, so that it can
run beside other local clusters, and a stop that ends only the processes of that
cluster (`ray stop` would end every Ray process on the machine). Ray's token
authentication stays on: Ray writes the token to ~/.ray/auth_token and every Ray
client on this machine (`ray job submit`, the dashboard SDK) reads it from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from raygpu.errors import CommandError
from raygpu.names import LOOPBACK
from raygpu.rayclient import client_auth_env, dashboard_get, ensure_token, ray_cli
from raygpu.serve_ingress import (
    LOCAL_INGRESS,
    serve_ingress_env,
)

# Ray's start-up deadlines assume cores to spare. On a laptop or a 2-core VM
# that is also running the job, Serve's proxy can take over 5 s to report ready
# (the controller then kills it and `serve.start` fails with ActorDiedError),
# and Train's worker group over 60 s to start. A local cluster waits longer; a
# value already set in the environment wins.
LOCAL_DEADLINES = {
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180",
}


class LocalRayError(CommandError):
    """The local Ray head could not be started."""


@dataclass(frozen=True)
class LocalRay:
    address: str  # GCS address, host:port
    dashboard_url: str  # job API (what `ray job submit --address` takes)
    temp_dir: str

    def env(self) -> dict[str, str]:
        """Environment for Ray clients of this cluster (`ray.init`, `ray job`)."""
        return {"RAY_ADDRESS": self.address, **client_auth_env()}


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1: each stays bound until all are
    picked, so the kernel cannot hand out one of them twice."""
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(n)
        ]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]


def start_head(
    num_cpus: int | None = None,
    temp_dir: str | None = None,
    timeout_s: float = 90.0,
    extra_env: dict[str, str] | None = None,
    serve_ingress: str = LOCAL_INGRESS,
) -> LocalRay:
    """Start a Ray head bound to 127.0.0.1 and wait until its job API answers.

    `serve_ingress` chooses how Serve's HTTP port reaches replicas (see
    raygpu/serve_ingress.py): Ray's proxy, or HAProxy in front of the replicas.
    With "haproxy", Ray's HAProxy config binds its read-only stats page and its
    Prometheus endpoint to all interfaces (Ray offers no setting for their
    host); the Serve port itself stays on 127.0.0.1. HAProxy's admin socket lives
    in a folder created here with mode 0700, so other users cannot reach it.

    The ports are picked free, then bound by Ray: if another process takes the
    GCS port in between, the head is started once more on other ports.
    """
    try:
        ingress_env = serve_ingress_env(serve_ingress)
    except ValueError as exc:
        raise LocalRayError(str(exc)) from None
    args = (num_cpus, temp_dir, timeout_s, extra_env, ingress_env)
    try:
        return _start_head(*args)
    except _PortTaken:
        return _start_head(*args)  # all ports picked afresh; a second miss raises


class _PortTaken(LocalRayError):
    """`ray start` could not bind a port picked free a moment before."""


# How Ray reports a port it cannot bind: the GCS (grpc_server.cc), Ray's own
# check of the dashboard and client ports (services.py), or the OS's words.
PORT_TAKEN = re.compile(
    r"Failed to start the grpc server|already occupied|[Aa]ddress already in use"
)


def _start_head(
    num_cpus: int | None,
    temp_dir: str | None,
    timeout_s: float,
    extra_env: dict[str, str] | None,
    ingress_env: dict[str, str],
) -> LocalRay:
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="rg-", dir="/tmp")
    port, dash, client, agent, stats, metrics = free_ports(6)
    if ingress_env:
        folder = _haproxy_dir(temp_dir)
        ingress_env = {**ingress_env, **_haproxy_local_env(folder, stats, metrics)}
        try:
            os.mkdir(folder, 0o700)  # HAProxy's admin socket is mode 666 inside
        except FileExistsError:
            raise LocalRayError(
                f"{folder} already exists; not reusing it for HAProxy's config and "
                "admin socket (remove it if it is a leftover of yours)"
            ) from None
    # The cluster's own scratch folder for TMPDIR: what its processes leave in
    # temporary files (a Train worker killed while writing a checkpoint, for one)
    # goes when stop_head removes temp_dir, instead of piling up in /tmp.
    os.makedirs(temp_dir, mode=0o700, exist_ok=True)  # again after a retry
    scratch = os.path.join(temp_dir, "tmp")
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    cmd = [
        ray_cli(),
        "start",
        "--head",
        f"--node-ip-address={LOOPBACK}",
        f"--port={port}",
        "--include-dashboard=true",
        f"--dashboard-host={LOOPBACK}",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    env = {
        **LOCAL_DEADLINES,
        **os.environ,
        "TMPDIR": scratch,
        **client_auth_env(),
        **ingress_env,
        **(extra_env or {}),
    }
    env.pop("RAY_ADDRESS", None)
    # Job entrypoints say `python ...`: make that this environment's interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    if env["RAY_AUTH_MODE"] == "token":
        ensure_token()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        stop_head(temp_dir)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        taken = PORT_TAKEN.search(proc.stderr + proc.stdout)
        error = _PortTaken if taken else LocalRayError
        raise error("`ray start --head` failed:\n" + "\n".join(tail))
    ray = LocalRay(
        address=f"{LOOPBACK}:{port}",
        dashboard_url=f"http://{LOOPBACK}:{dash}",
        temp_dir=temp_dir,
    )
    try:
        wait_for_job_api(ray.dashboard_url, timeout_s)
    except LocalRayError:
        stop_head(temp_dir)
        raise
    return ray


def _haproxy_dir(temp_dir: str) -> str:
    digest = hashlib.sha256(os.path.abspath(temp_dir).encode()).hexdigest()[:12]
    return f"/tmp/rgh-{digest}"  # short: see _haproxy_local_env


def _haproxy_local_env(base: str, stats: int, metrics: int) -> dict[str, str]:
    """HAProxy's files (in folder `base`) and side ports for one local cluster.

    Ray's defaults are fixed (/tmp/haproxy-serve, ports 8404 and 9101), so two
    local clusters would collide; here they live in a folder of this cluster
    (removed by `stop_head`) and on free ports. The folder is short, not inside
    the temp dir: Ray adds the 56-character node id, and HAProxy refuses socket
    paths over 97 characters.
    """
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(base, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(base, "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(base, "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(base, "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
    }


def wait_for_job_api(dashboard_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            dashboard_get(dashboard_url, "/api/version", None, timeout_s=5)
            return
        except CommandError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise LocalRayError(
        f"the Ray job API at {dashboard_url} did not answer in {timeout_s:.0f}s "
        f"({last})"
    )


def _process_table() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) for every process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (ppid, cmdline)
    return table


def _cluster_pids(temp_dir: str) -> list[int]:
    """Processes of the cluster whose temp dir is `temp_dir`, descendants included.

    The daemons (gcs_server, raylet, dashboard, ...) name the session directory in
    their command line; workers rename themselves (`ray::IDLE`) but are children
    of the raylet; the client server names the GCS port; HAProxy its folder.
    """
    markers = [temp_dir.rstrip("/").encode(), _haproxy_dir(temp_dir).encode()]
    table = _process_table()
    found = {pid for pid, (_, cmd) in table.items() if any(m in cmd for m in markers)}
    # The Ray client server detaches from the tree and names only the GCS
    # address (`--address=HOST:PORT`); find it by the GCS port of this cluster.
    gcs_ports = {
        m.group(1)
        for pid in found
        for m in re.finditer(rb"--gcs_server_port=(\d+)(?:\0|$)", table[pid][1])
    }
    for pid, (_, cmd) in table.items():
        m = re.search(rb"--address=[^\0]*:(\d+)(?:\0|$)", cmd)
        if m and m.group(1) in gcs_ports and b"ray.util.client.server" in cmd:
            found.add(pid)
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found}
        grew = not children <= found
        found |= children
    found.discard(os.getpid())
    return sorted(found)


def stop_head(temp_dir: str, grace_s: float = 10.0) -> None:
    """End every process of the cluster started with `temp_dir`, and only those."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        pids = _cluster_pids(temp_dir)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _cluster_pids(temp_dir):
            time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)
    shutil.rmtree(_haproxy_dir(temp_dir), ignore_errors=True)
