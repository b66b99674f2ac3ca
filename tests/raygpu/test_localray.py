"""The local head: `stop_head` ends every process of its cluster and only those."""

from __future__ import annotations

import os
import time

import pytest

from raygpu.localray import (
    LocalRayError,
    _haproxy_dir,
    _process_table,
    start_head,
    stop_head,
)
from raygpu.rayclient import client_auth_env, ray_cli


def _mentions(needles: list[bytes]) -> list[tuple[int, bytes]]:
    return [
        (pid, cmd[:120])
        for pid, (_, cmd) in _process_table().items()
        if any(n in cmd for n in needles)
    ]


def test_unknown_ingress_is_refused_naming_the_choices():
    with pytest.raises(LocalRayError, match="one of proxy, haproxy, got 'nginx'"):
        start_head(num_cpus=1, serve_ingress="nginx")


def test_an_existing_haproxy_folder_is_not_reused(tmp_path):
    temp_dir = str(tmp_path / "cluster")
    os.mkdir(_haproxy_dir(temp_dir))  # e.g. made by someone else first
    try:
        with pytest.raises(LocalRayError, match="already exists"):
            start_head(num_cpus=1, temp_dir=temp_dir, serve_ingress="haproxy")
    finally:
        os.rmdir(_haproxy_dir(temp_dir))
    assert not os.path.exists(temp_dir)  # nothing was started


@pytest.mark.slow
def test_stop_head_leaves_no_process_of_the_cluster_behind():
    other = start_head(num_cpus=1)  # a bystander cluster that must survive
    head = start_head(num_cpus=1)
    try:
        needles = [head.temp_dir.encode(), f"--address={head.address}\0".encode()]
        before = _mentions(needles)
        # The daemons and the detached Ray client server (which names only the
        # GCS address) are all found.
        assert any(b"gcs_server" in cmd for _, cmd in before)
        assert any(b"ray.util.client.server" in cmd for _, cmd in before), before
        stop_head(head.temp_dir)
        deadline = time.monotonic() + 10
        while _mentions(needles) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _mentions(needles) == []
        bystander = [other.temp_dir.encode()]
        assert any(b"gcs_server" in cmd for _, cmd in _mentions(bystander))
    finally:
        stop_head(head.temp_dir)
        stop_head(other.temp_dir)


@pytest.mark.slow
def test_temporary_files_of_the_clusters_workers_go_with_the_cluster(monkeypatch):
    """A Ray worker's temporary folder (e.g. a checkpoint being written when the
    worker is killed) lands in the cluster's own folder, which stop_head removes.
    The same worker reads the local cluster's longer start-up deadlines: Serve's
    as Serve parses them, Train's from the variable its controller reads."""
    import subprocess

    from raygpu.localray import LOCAL_DEADLINES

    for name in LOCAL_DEADLINES:  # a value set by whoever runs the tests wins
        monkeypatch.delenv(name, raising=False)
    head = start_head(num_cpus=1)
    try:
        code = (
            "import ray, tempfile; ray.init(); "
            "f = ray.remote(lambda: tempfile.mkdtemp(prefix='rg-litter-')); "
            "print('LITTER', ray.get(f.remote()))\n"
            "def deadlines():\n"
            "    from ray.serve._private import constants as s\n"
            "    from ray.train.v2._internal import constants as t\n"
            "    import os\n"
            "    return (s.PROXY_READY_CHECK_TIMEOUT_S,\n"
            "            s.PROXY_HEALTH_CHECK_TIMEOUT_S,\n"
            "            os.environ.get(t.WORKER_GROUP_START_TIMEOUT_S_ENV_VAR))\n"
            "print('DEADLINES', ray.get(ray.remote(deadlines).remote()))"
        )
        out = subprocess.run(
            [ray_cli(), "job", "submit", "--address", head.dashboard_url]
            + ["--", "python", "-c", code],
            env={**os.environ, **client_auth_env()},
            capture_output=True,
            text=True,
            timeout=180,
        )
        lines = [x for x in out.stdout.splitlines() if x.startswith("LITTER ")]
        assert lines, out.stdout[-2000:] + out.stderr[-2000:]
        deadlines = [x for x in out.stdout.splitlines() if x.startswith("DEADLINES ")]
        assert deadlines == ["DEADLINES (30.0, 30.0, '180')"], out.stdout[-2000:]
        litter = lines[0].split(" ", 1)[1]
        assert litter.startswith(os.path.join(head.temp_dir, "tmp") + "/")
        assert os.path.isdir(litter)
        stop_head(head.temp_dir)
        assert not os.path.exists(litter)
    finally:
        stop_head(head.temp_dir)


def test_free_ports_are_distinct(monkeypatch):
    """Even from a kernel that hands out the lowest unbound port: each socket
    stays bound until all are picked. Picking them one by one, closing each,
    would get the same port six times from such a kernel."""
    import socket as real_socket

    from raygpu import localray

    bound: set[int] = set()

    class LowestPortSocket:  # a thin seam around the kernel's choice of port
        def __init__(self, *args):
            self.port = None

        def bind(self, address):
            self.port = min(set(range(40000, 40010)) - bound)
            bound.add(self.port)

        def getsockname(self):
            return ("127.0.0.1", self.port)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            bound.discard(self.port)

    monkeypatch.setattr(localray.socket, "socket", LowestPortSocket)
    assert sorted(localray.free_ports(6)) == list(range(40000, 40006))
    assert bound == set()  # all released
    monkeypatch.setattr(localray.socket, "socket", real_socket.socket)
    assert len(set(localray.free_ports(6))) == 6


@pytest.mark.slow
def test_a_head_whose_port_was_taken_starts_again_on_other_ports(monkeypatch):
    """Another process binds the GCS port between the pick and `ray start` (here
    a real listening socket): Ray's GCS fails to bind, and the head is started
    once more on freshly picked ports."""
    import socket

    from raygpu import localray

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        real = localray.free_ports
        calls = []

        def first_gcs_port_taken(n):
            calls.append(n)
            ports = real(n)
            return [busy, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(localray, "free_ports", first_gcs_port_taken)
        head = start_head(num_cpus=1)
        try:
            assert len(calls) == 2
            assert not head.address.endswith(f":{busy}")
            localray.wait_for_job_api(head.dashboard_url, 10)  # it answers
        finally:
            stop_head(head.temp_dir)
