"""Hardened Ray pods: read-only roots with sized writable volumes, no API token in
workers or submitters, the restricted Pod Security profile, images by digest
where one is recorded."""

from __future__ import annotations

import datetime
import re

import pytest

from raygpu import manifests, sizing, versions, workloads
from raygpu.config import load_stack_file
from raygpu.offline import stack_path
from raygpu.render import PLACEHOLDER_REFS as REFS
from tests.infra.infra_helpers import stack_config

STACKS = ["dev", "prod"]
# Pod Security Standards, restricted profile (Kubernetes 1.33).
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def cfg_of(stack):
    return load_stack_file(stack_path(stack))


def pods(cfg):
    """(role, pod spec) of every pod the stack's Ray objects describe, plus the
    containers KubeRay adds: the autoscaler (the head's pod security context and
    autoscalerOptions) and wait-gcs-ready (a copy of the worker container)."""
    spec = manifests.raycluster_spec(cfg, REFS)
    head = spec["headGroupSpec"]["template"]["spec"]
    autoscaler = {
        "name": "autoscaler",
        "securityContext": spec["autoscalerOptions"]["securityContext"],
        "volumeMounts": spec["autoscalerOptions"]["volumeMounts"],
    }
    found = [("head", {**head, "containers": [*head["containers"], autoscaler]})]
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        init = {**pod["containers"][0], "name": "wait-gcs-ready"}
        found.append(("worker", {**pod, "initContainers": [init]}))
    job = workloads.rayjob_manifest(cfg, REFS, name="j", entrypoint="python x.py")
    found.append(("submitter", job["spec"]["submitterPodTemplate"]["spec"]))
    return found


def restricted_problems(pod) -> list[str]:
    problems = []
    ctx = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(key)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {kinds}")
    if ctx.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("runAsNonRoot", ctx.get("runAsNonRoot")) is not True:
            problems.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser", ctx.get("runAsUser")) == 0:
            problems.append(f"{c['name']}: runAsUser 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        if sc.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {
            "NET_BIND_SERVICE"
        }:
            problems.append(f"{c['name']}: capabilities")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{c['name']}: hostPort")
    return problems


@pytest.mark.parametrize("stack", STACKS)
def test_every_ray_pod_meets_the_restricted_profile(stack):
    for role, pod in pods(cfg_of(stack)):
        assert restricted_problems(pod) == [], role


@pytest.mark.parametrize("stack", STACKS)
def test_roots_are_read_only_and_only_the_volumes_are_writable(stack):
    cfg = cfg_of(stack)
    for role, pod in pods(cfg):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]
            for mount in c["volumeMounts"]:
                # KubeRay adds the autoscaler's session folder mount itself.
                assert mount["name"] in volumes, (role, mount)
        paths = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        if role == "submitter":
            assert paths == {"/tmp"}
        else:
            assert {"/tmp", "/tmp/ray", "/home/ray/.cache", "/dev/shm"} <= paths


@pytest.mark.parametrize("stack", STACKS)
def test_scratch_volumes_are_sized_within_the_nodes_disk(stack):
    cfg = cfg_of(stack)
    spec = manifests.raycluster_spec(cfg, REFS)
    groups = [(spec["headGroupSpec"], cfg.system_pool.disk_size_gib)] + [
        (g, p.disk_size_gib)
        for g, p in zip(spec["workerGroupSpecs"], cfg.gpu_pools, strict=True)
    ]
    for group, disk_gib in groups:
        volumes = group["template"]["spec"]["volumes"]
        disk = [
            sizing.memory_bytes(v["emptyDir"]["sizeLimit"])
            for v in volumes
            if v["emptyDir"].get("medium") != "Memory"
        ]
        assert all(disk), volumes  # every disk-backed volume has a limit
        # The session folder (runtime_env installs, spills) gets the largest share;
        # together they leave at least a third of the disk to images and the node.
        session = next(v for v in volumes if v["name"] == "ray-logs")
        assert sizing.memory_bytes(session["emptyDir"]["sizeLimit"]) == max(disk)
        assert sum(disk) <= disk_gib * 2**30 * 2 / 3


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_head_mounts_a_kubernetes_api_token(stack):
    cfg = cfg_of(stack)
    for role, pod in pods(cfg):
        if role == "head":
            assert pod["serviceAccountName"] == cfg.ray_service_account
            assert "automountServiceAccountToken" not in pod
        else:
            assert pod["serviceAccountName"] == cfg.ray_worker_service_account
            assert pod["automountServiceAccountToken"] is False


def test_rayjobs_in_other_modes_carry_no_submitter_template():
    job = workloads.rayjob_manifest(
        stack_config("dev"), REFS, name="j", entrypoint="x", submission_mode="HTTPMode"
    )
    assert "submitterPodTemplate" not in job["spec"]


def test_recorded_digests_are_well_formed_and_used():
    for image, record in versions.IMAGE_DIGESTS.items():
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", record.digest), image
        assert record.source.strip(), image
        when = datetime.date.fromisoformat(record.recorded)
        assert when <= datetime.date.today(), image
        assert re.fullmatch(r"[a-z0-9./-]+:[A-Za-z0-9._-]+", image), image
        assert versions.pinned(image) == f"{image}@{record.digest}"
    # Images without a record stay as they are (tag only).
    assert versions.pinned(versions.RAY_IMAGE_GPU) == versions.RAY_IMAGE_GPU
    values_tag = versions.pinned_tag(
        versions.KUBERAY_OPERATOR_IMAGE_REPOSITORY, versions.KUBERAY_OPERATOR_IMAGE_TAG
    )
    assert values_tag.startswith(f"{versions.KUBERAY_OPERATOR_IMAGE_TAG}@sha256:")
