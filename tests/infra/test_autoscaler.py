"""ClusterAutoscaler (infra/autoscaler.py) and its Helm values
(raygpu/autoscaler_values.py): the values as plain data, the component under the
mock runtime, and the whole program on both stacks (scale from zero needs the
ASG node-template tags of every GPU pool to match what the Ray workers ask for).
"""

from __future__ import annotations

import json

import pulumi
import pulumi_kubernetes as k8s
import pytest

from infra.autoscaler import (
    NODEGROUP_READ_ACTIONS,
    SCALING_ACTIONS,
    TYPE_TOKEN,
    UNSCOPED_READ_ACTIONS,
    ClusterAutoscaler,
    ClusterAutoscalerArgs,
)
from raygpu import autoscaler_values as av
from raygpu import config, manifests, names, versions
from raygpu.offline import MOCK_ACCOUNT, OfflineRun, run_offline
from tests.infra.infra_helpers import as_list, run_component, stack_config, statements

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
RELEASE = "kubernetes:helm.sh/v3:Release"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ASG_TAG = "aws:autoscaling/tag:Tag"
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/CAFE01"
ISSUER_HOST = ISSUER.removeprefix("https://")
PROVIDER_ARN = f"arn:aws:iam::{MOCK_ACCOUNT}:oidc-provider/{ISSUER_HOST}"
CA_SUBJECT = "system:serviceaccount:kube-system:cluster-autoscaler"
KUBECONFIG = json.dumps({"apiVersion": "v1", "kind": "Config"})


# ------------------------------------------------------------------ Helm values


def test_values_name_the_cluster_region_role_and_pinned_versions():
    cfg = stack_config()
    values = av.cluster_autoscaler_values(cfg, role_arn="arn:aws:iam::1:role/ca")
    assert values["cloudProvider"] == "aws"
    assert values["awsRegion"] == "us-east-1"
    assert values["autoDiscovery"]["clusterName"] == cfg.cluster_name == "raygpu-dev"
    assert values["autoDiscovery"]["tags"] == [
        "k8s.io/cluster-autoscaler/enabled",
        "k8s.io/cluster-autoscaler/{{ .Values.autoDiscovery.clusterName }}",
        av.AUTOSCALED_TAG,  # the GPU pools only: the stack sizes the system pool
    ]
    sa = values["rbac"]["serviceAccount"]
    assert sa["name"] == "cluster-autoscaler" and sa["create"] is True
    assert sa["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/ca"}
    assert values["image"] == {
        "repository": "registry.k8s.io/autoscaling/cluster-autoscaler",
        "tag": versions.CLUSTER_AUTOSCALER_IMAGE_TAG,
    }
    # The image's minor is the cluster's Kubernetes minor.
    tag_minor = versions.CLUSTER_AUTOSCALER_IMAGE_TAG.removeprefix("v").rsplit(".", 1)
    assert tag_minor[0] == cfg.cluster_version == versions.KUBERNETES_VERSION
    release = av.cluster_autoscaler_release(cfg, role_arn="r")
    assert (release.name, release.namespace, release.chart) == (
        "cluster-autoscaler",
        "kube-system",
        "cluster-autoscaler",
    )
    assert release.version == versions.CLUSTER_AUTOSCALER_CHART_VERSION
    assert release.repo == "https://kubernetes.github.io/autoscaler"


def test_values_flags_and_placement():
    cfg = stack_config()
    values = av.cluster_autoscaler_values(cfg, role_arn="r")
    args = values["extraArgs"]
    assert args["balance-similar-node-groups"] is True
    assert args["skip-nodes-with-system-pods"] is False
    assert args["skip-nodes-with-local-storage"] is True
    assert args["expander"] == "least-waste"
    assert args["scale-down-unneeded-time"] == "5m"
    assert args["emit-per-nodegroup-metrics"] is True  # the pool-at-max alert
    assert values["nodeSelector"] == cfg.system_pool.node_labels
    assert not values.get("tolerations")  # never on the tainted GPU nodes
    assert values["podAnnotations"] == {
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"
    }
    assert values["containerSecurityContext"]["allowPrivilegeEscalation"] is False
    assert values["securityContext"]["runAsNonRoot"] is True
    assert manifests.public_exposure(values) == []
    other = av.cluster_autoscaler_values(
        cfg, role_arn="r", scale_down_unneeded_time="1h30m"
    )
    assert other["extraArgs"]["scale-down-unneeded-time"] == "1h30m"


@pytest.mark.parametrize("bad", ["", "5", "five", "5 m", "-5m"])
def test_bad_scale_down_time_is_rejected_by_name(bad):
    with pytest.raises(manifests.ManifestError, match="scale_down_unneeded_time"):
        av.cluster_autoscaler_values(
            stack_config(), role_arn="r", scale_down_unneeded_time=bad
        )


def test_a_cluster_version_the_pinned_autoscaler_does_not_serve_is_rejected():
    cfg = stack_config(clusterVersion="1.32")
    with pytest.raises(manifests.ManifestError) as info:
        av.cluster_autoscaler_values(cfg, role_arn="r")
    assert str(info.value).startswith("raygpu:clusterVersion:")
    assert "'1.32'" in str(info.value)
    # The component refuses before it registers anything.
    with pytest.raises(manifests.ManifestError):
        run_component(lambda: build_component(cfg), cfg)


# -------------------------------------------------------------------- component


def build_component(cfg):
    provider = k8s.Provider("k8s", kubeconfig=KUBECONFIG)
    return ClusterAutoscaler(
        "ca",
        ClusterAutoscalerArgs(
            config=cfg,
            cluster_name=pulumi.Output.from_input(cfg.cluster_name),
            oidc_provider_arn=PROVIDER_ARN,
            oidc_issuer_url=ISSUER,
            k8s_provider=provider,
        ),
    )


@pytest.fixture(scope="module")
def component():
    cfg = stack_config()
    return cfg, run_component(lambda: build_component(cfg), cfg)


def policy_statements(run: OfflineRun, name: str) -> list[dict]:
    return statements(run.one(ROLE_POLICY, name)["inputs"]["policy"])


def test_trust_is_scoped_to_the_autoscaler_service_account(component):
    _, run = component
    role = run.one(ROLE)
    (stmt,) = statements(role["inputs"]["assumeRolePolicy"])
    assert stmt["Effect"] == "Allow"
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert stmt["Principal"] == {"Federated": PROVIDER_ARN}
    assert stmt["Condition"] == {
        "StringEquals": {
            f"{ISSUER_HOST}:sub": CA_SUBJECT,
            f"{ISSUER_HOST}:aud": "sts.amazonaws.com",
        }
    }
    assert role["inputs"]["tags"]["raygpu:stack"] == "dev"


def test_mutating_actions_only_on_owned_groups_of_this_cluster(component):
    cfg, run = component
    stmts = policy_statements(run, "ca-scaling")
    mutating = [s for s in stmts if set(as_list(s["Action"])) & set(SCALING_ACTIONS)]
    (stmt,) = mutating
    assert sorted(as_list(stmt["Action"])) == sorted(SCALING_ACTIONS)
    assert as_list(stmt["Resource"]) == [
        f"arn:aws:autoscaling:us-east-1:{MOCK_ACCOUNT}:autoScalingGroup:*:"
        "autoScalingGroupName/*"
    ]
    assert stmt["Condition"] == {
        "StringEquals": {
            f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cfg.cluster_name}": "owned",
            "aws:ResourceTag/k8s.io/cluster-autoscaler/enabled": "true",
            f"aws:ResourceTag/{av.AUTOSCALED_TAG}": "true",
        }
    }
    # No statement lets anything but Describe*/Get* through without a condition.
    for s in stmts:
        if "Condition" in s:
            continue
        for action in as_list(s["Action"]):
            verb = action.split(":")[1]
            assert verb.startswith(("Describe", "Get")), action


def test_only_the_documented_read_actions_use_a_star_resource(component):
    cfg, run = component
    stmts = policy_statements(run, "ca-scaling")
    for s in stmts:
        assert s["Effect"] == "Allow"
        assert "NotAction" not in s and "NotResource" not in s
        for action in as_list(s["Action"]):
            assert "*" not in action, action
    star = [s for s in stmts if "*" in as_list(s["Resource"])]
    (read,) = star
    assert as_list(read["Resource"]) == ["*"]
    assert sorted(as_list(read["Action"])) == sorted(UNSCOPED_READ_ACTIONS)
    assert all(
        a.split(":")[1].startswith(("Describe", "Get")) for a in UNSCOPED_READ_ACTIONS
    )
    (eks,) = [
        s for s in stmts if set(as_list(s["Action"])) == {"eks:DescribeNodegroup"}
    ]
    assert tuple(as_list(eks["Action"])) == NODEGROUP_READ_ACTIONS
    assert as_list(eks["Resource"]) == [
        f"arn:aws:eks:us-east-1:{MOCK_ACCOUNT}:nodegroup/{cfg.cluster_name}/*/*"
    ]


def test_release_uses_the_given_provider_after_the_policy(component):
    cfg, run = component
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    release = run.one(RELEASE)
    assert release["options"]["provider"].startswith(provider["urn"] + "::")
    policy = run.one(ROLE_POLICY, "ca-scaling")
    assert policy["urn"] in release["options"]["depends_on"]
    inputs = release["inputs"]
    assert inputs["chart"] == "cluster-autoscaler"
    assert inputs["namespace"] == "kube-system"
    assert inputs["version"] == versions.CLUSTER_AUTOSCALER_CHART_VERSION
    assert inputs["repositoryOpts"]["repo"] == versions.CLUSTER_AUTOSCALER_HELM_REPO
    values = inputs["values"]
    assert values["autoDiscovery"]["clusterName"] == cfg.cluster_name
    assert values["awsRegion"] == cfg.region
    assert values["nodeSelector"] == {names.NODE_ROLE_LABEL: names.SYSTEM_NODE_ROLE}
    role = run.one(ROLE)
    annotations = values["rbac"]["serviceAccount"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == (
        f"arn:aws:iam::{MOCK_ACCOUNT}:role/{role['id']}"
    )
    for res in (release, role, policy):
        assert res["parent_type"] == TYPE_TOKEN


# ---------------------------------------------------------------- whole program


@pytest.fixture(scope="module", params=["dev", "prod"])
def program(request) -> tuple[config.StackConfig, OfflineRun]:
    cfg = config.load_stack_file(f"Pulumi.{request.param}.yaml")
    return cfg, run_offline(request.param)


def autoscaler_release(run: OfflineRun) -> dict:
    (release,) = [r for r in run.of_type(RELEASE) if r["parent_type"] == TYPE_TOKEN]
    return release


def test_program_release_reuses_the_ray_layers_provider(program):
    cfg, run = program
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert provider["parent_type"] == "raygpu:kuberay:RayOnKubernetes"
    release = autoscaler_release(run)
    assert release["options"]["provider"].startswith(provider["urn"] + "::")
    values = release["inputs"]["values"]
    assert values["autoDiscovery"]["clusterName"] == run.outputs["cluster_name"]
    assert values["awsRegion"] == run.outputs["region"] == cfg.region
    (system,) = [
        g
        for g in run.of_type(NODE_GROUP)
        if g["inputs"]["labels"].get(names.NODE_ROLE_LABEL) == names.SYSTEM_NODE_ROLE
    ]
    assert values["nodeSelector"].items() <= system["inputs"]["labels"].items()
    assert not system["inputs"].get("taints")


def test_program_role_trusts_the_stacks_oidc_provider(program):
    cfg, run = program
    role = run.one(ROLE, f"{cfg.name_prefix}-autoscaler-role")
    (stmt,) = statements(role["inputs"]["assumeRolePolicy"])
    assert stmt["Principal"]["Federated"] == run.outputs["oidc_provider_arn"]
    issuer = run.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    host = issuer["inputs"]["url"].removeprefix("https://")
    assert stmt["Condition"]["StringEquals"] == {
        f"{host}:sub": CA_SUBJECT,
        f"{host}:aud": "sts.amazonaws.com",
    }
    annotations = autoscaler_release(run)["inputs"]["values"]["rbac"]["serviceAccount"][
        "annotations"
    ]
    assert annotations["eks.amazonaws.com/role-arn"].endswith(f":role/{role['id']}")
    scaling = policy_statements(run, f"{cfg.name_prefix}-autoscaler-scaling")
    (cond,) = [s["Condition"] for s in scaling if "Condition" in s]
    tag_key = f"aws:ResourceTag/k8s.io/cluster-autoscaler/{run.outputs['cluster_name']}"
    assert cond["StringEquals"][tag_key] == "owned"


def test_no_star_in_any_iam_policy_but_the_autoscalers_read_statement(program):
    """The program-wide rule: no `*` action and no `*` resource in any role's
    policy. The one exception is explicit and narrow: the autoscaler role's
    statement of read-only actions that AWS cannot scope to a resource."""
    cfg, run = program
    exception_policy = f"{cfg.name_prefix}-autoscaler-scaling"
    policies = run.of_type(ROLE_POLICY) + run.of_type("aws:iam/policy:Policy")
    assert len(policies) >= 3
    exceptions = []
    for res in policies:
        for stmt in statements(res["inputs"]["policy"]):
            assert "NotAction" not in stmt and "NotResource" not in stmt
            for action in as_list(stmt["Action"]):
                assert "*" not in action, (res["name"], action)
            if "*" in as_list(stmt["Resource"]):
                exceptions.append((res["name"], stmt))
    assert [name for name, _ in exceptions] == [exception_policy]
    ((_, stmt),) = exceptions
    assert as_list(stmt["Resource"]) == ["*"]
    assert sorted(as_list(stmt["Action"])) == sorted(UNSCOPED_READ_ACTIONS)
    assert "Condition" not in stmt
    for role in run.of_type(ROLE):
        for trust in statements(role["inputs"]["assumeRolePolicy"]):
            assert trust["Principal"] != "*" and "*" not in str(
                trust["Principal"].get("AWS", "")
            ), role["name"]


def test_every_gpu_pool_asg_carries_the_scale_from_zero_tags(program):
    """EKS does not copy node group tags to the Auto Scaling group: the program
    tags each GPU pool's ASG itself with the labels, taint and GPU count, and
    they let the pool's Ray worker pod fit a node template of that group."""
    cfg, run = program
    (rc,) = run.of_type("kubernetes:ray.io/v1:RayCluster")
    workers = {g["groupName"]: g for g in rc["inputs"]["spec"]["workerGroupSpecs"]}
    gpu_groups = [
        g
        for g in run.of_type(NODE_GROUP)
        if g["inputs"]["labels"].get(names.NODE_ROLE_LABEL) == names.GPU_NODE_ROLE
    ]
    assert len(gpu_groups) == len(cfg.gpu_pools) >= 1
    for group in gpu_groups:
        labels = group["inputs"]["labels"]
        pool = next(p for p in cfg.gpu_pools if p.name == labels[names.POOL_LABEL])
        # The ASG the mock gives this node group: resources[0].autoscalingGroups[0].
        node_group_name = group["id"].split(":", 1)[1]
        asg_tags = {
            t["inputs"]["tag"]["key"]: t["inputs"]["tag"]["value"]
            for t in run.of_type(ASG_TAG)
            if t["inputs"]["autoscalingGroupName"].startswith(f"eks-{node_group_name}-")
        }
        expected = {f"{TEMPLATE}/label/{k}": v for k, v in labels.items()}
        for taint in group["inputs"]["taints"]:
            assert taint["effect"] == "NO_SCHEDULE"
            expected[f"{TEMPLATE}/taint/{taint['key']}"] = (
                f"{taint['value']}:NoSchedule"
            )
        expected[f"{TEMPLATE}/resources/nvidia.com/gpu"] = str(pool.gpus_per_node)
        expected[av.AUTOSCALED_TAG] = av.AUTOSCALED_TAG_VALUE
        assert asg_tags == expected, group["name"]
        assert asg_tags[f"{TEMPLATE}/label/{names.AWS_GPU_LABEL}"].startswith("nvidia-")

        # The node template these tags describe takes the pool's worker pod.
        pod = workers[pool.name]["template"]["spec"]
        template_labels = {
            k.removeprefix(f"{TEMPLATE}/label/"): v
            for k, v in asg_tags.items()
            if k.startswith(f"{TEMPLATE}/label/")
        }
        assert pod["nodeSelector"].items() <= template_labels.items()
        for key, value in asg_tags.items():
            if key.startswith(f"{TEMPLATE}/taint/"):
                taint_key = key.removeprefix(f"{TEMPLATE}/taint/")
                taint_value, effect = value.split(":")
                assert any(
                    t["key"] == taint_key
                    and t.get("value") == taint_value
                    and t["effect"] == effect
                    for t in pod["tolerations"]
                ), key
        gpus = pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"]
        assert gpus <= int(asg_tags[f"{TEMPLATE}/resources/nvidia.com/gpu"])


def test_program_exports_no_new_secret_and_keeps_the_autoscaler_internal(program):
    _, run = program
    assert run.secret_outputs == {"kubeconfig"}
    release = autoscaler_release(run)
    assert manifests.public_exposure(release["inputs"]) == []
    assert release["inputs"]["values"]["service"]["type"] == "ClusterIP"
