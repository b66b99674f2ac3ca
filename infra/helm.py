"""Helm: turn a `helm_values.HelmRelease` into the arguments of a Pulumi Release.

`raygpu/manifests.py` and `raygpu/autoscaler_values.py` describe each chart as a plain
`HelmRelease` (no pulumi); the components hand it to `k8s.helm.v3.Release` through
`release_args`, so every chart the stack installs gets the same install settings.
"""

from __future__ import annotations

import pulumi_kubernetes as k8s

from raygpu.helm_values import HelmRelease

# Releases kept per chart, for `helm rollback`.
MAX_HISTORY = 10


def release_args(
    release: HelmRelease, *, timeout_seconds: int
) -> k8s.helm.v3.ReleaseArgs:
    """`ReleaseArgs` for `release`; a failed install or upgrade is cleaned up."""
    return k8s.helm.v3.ReleaseArgs(
        name=release.name,
        chart=release.chart,
        version=release.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=release.repo),
        namespace=release.namespace,
        values=release.values,
        skip_crds=release.skip_crds,
        cleanup_on_fail=True,
        timeout=timeout_seconds,
        max_history=MAX_HISTORY,
    )
