"""EksCluster component (control plane and node groups) under the mock runtime."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.cluster import (
    CONTROL_PLANE_LOG_TYPES,
    GPU_AMI_TYPE,
    EksCluster,
    EksClusterArgs,
    autoscaler_template_tags,
)
from raygpu import names
from raygpu.autoscaler_values import AUTOSCALED_TAG
from raygpu.offline import RaygpuMocks
from tests.infra.infra_helpers import run_component, stack_config

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SUBNETS = ["subnet-a", "subnet-b", "subnet-c"]
ADMIN = "arn:aws:iam::123456789012:role/platform-admin"
POOLS = [
    {
        "name": "a10g",
        "instanceTypes": ["g5.xlarge", "g5.2xlarge"],
        "capacityType": "SPOT",
        "maxSize": 2,
    },
    {
        "name": "l4x4",
        "instanceTypes": ["g6.12xlarge"],
        "minSize": 1,
        "maxSize": 8,
        "diskSizeGib": 400,
    },
]


def cluster_run(**overrides):
    cfg = stack_config(**{"gpuPools": POOLS, **overrides})
    run = run_component(
        lambda: EksCluster("c", EksClusterArgs.from_config(cfg, SUBNETS)), cfg
    )
    return cfg, run


@pytest.fixture(scope="module")
def private():
    return cluster_run(adminPrincipalArns=[ADMIN])


@pytest.fixture(scope="module")
def listed_cidrs():
    return cluster_run(publicEndpointCidrs=["203.0.113.0/24", "198.51.100.7/32"])


def gpu_groups(run):
    return {r["name"]: r for r in run.of_type(NODE_GROUP) if "-gpu-" in r["name"]}


def test_private_endpoint_only_when_no_cidrs(private):
    _, run = private
    vpc = run.one("aws:eks/cluster:Cluster")["inputs"]["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    assert vpc["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in vpc
    assert vpc["subnetIds"] == SUBNETS


def test_public_endpoint_limited_to_listed_cidrs(listed_cidrs):
    _, run = listed_cidrs
    vpc = run.one("aws:eks/cluster:Cluster")["inputs"]["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    assert vpc["endpointPublicAccess"] is True
    assert vpc["publicAccessCidrs"] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert "0.0.0.0/0" not in vpc["publicAccessCidrs"]


def test_cluster_version_secrets_encryption_logs_and_auth_mode(private):
    cfg, run = private
    cluster = run.one("aws:eks/cluster:Cluster")["inputs"]
    assert cluster["name"] == cfg.cluster_name
    assert cluster["version"] == cfg.cluster_version
    enc = cluster["encryptionConfig"]
    assert enc["resources"] == ["secrets"]
    key = run.one("aws:kms/key:Key")
    assert key["inputs"]["enableKeyRotation"] is True
    assert enc["provider"]["keyArn"].endswith(key["id"])
    assert sorted(cluster["enabledClusterLogTypes"]) == sorted(CONTROL_PLANE_LOG_TYPES)
    assert len(CONTROL_PLANE_LOG_TYPES) == 5
    assert cluster["accessConfig"]["authenticationMode"] == "API"
    assert cluster["upgradePolicy"]["supportType"] == "STANDARD"
    group = run.one("aws:cloudwatch/logGroup:LogGroup")["inputs"]
    assert group["name"] == f"/aws/eks/{cfg.cluster_name}/cluster"


def test_cluster_role_has_only_the_cluster_policy(private):
    _, run = private
    attached = [
        r["inputs"]["policyArn"]
        for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if "-cluster-" in r["name"]
    ]
    assert attached == ["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"]


def test_admin_principals_get_access_entries(private):
    _, run = private
    (entry,) = run.of_type("aws:eks/accessEntry:AccessEntry")
    assert entry["inputs"]["principalArn"] == ADMIN
    assert entry["inputs"]["type"] == "STANDARD"
    (assoc,) = run.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert assoc["inputs"]["principalArn"] == ADMIN
    assert assoc["inputs"]["policyArn"].endswith("/AmazonEKSClusterAdminPolicy")
    assert assoc["inputs"]["accessScope"] == {"type": "cluster"}
    assert entry["urn"] in assoc["options"]["depends_on"]


def test_no_access_entries_without_admins(listed_cidrs):
    _, run = listed_cidrs
    assert run.of_type("aws:eks/accessEntry:AccessEntry") == []


def test_one_gpu_node_group_per_pool(private):
    cfg, run = private
    groups = gpu_groups(run)
    assert set(groups) == {"c-gpu-a10g", "c-gpu-l4x4"}
    for pool in cfg.gpu_pools:
        inputs = groups[f"c-gpu-{pool.name}"]["inputs"]
        assert inputs["amiType"] == GPU_AMI_TYPE == "AL2023_x86_64_NVIDIA"
        assert inputs["instanceTypes"] == list(pool.instance_types)
        assert inputs["capacityType"] == pool.capacity_type
        assert inputs["subnetIds"] == SUBNETS
        assert inputs["scalingConfig"] == {
            "minSize": pool.min_size,
            "desiredSize": pool.desired_size,
            "maxSize": pool.max_size,
        }
        assert inputs["taints"] == [
            {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
        ]
        assert inputs["labels"] == {
            names.NODE_ROLE_LABEL: "gpu",
            names.POOL_LABEL: pool.name,
            names.GPU_MODEL_LABEL: pool.gpu_model,
            names.AWS_GPU_LABEL: f"nvidia-{pool.gpu_model.lower()}",
        }
        # No SSH: no remote access block and no key pair in the template.
        assert "remoteAccess" not in inputs
        assert "diskSize" not in inputs  # the launch template sets the disk


def test_gpu_pools_scale_from_zero(private):
    _, run = private
    a10g = gpu_groups(run)["c-gpu-a10g"]
    assert a10g["inputs"]["scalingConfig"]["minSize"] == 0
    assert a10g["inputs"]["scalingConfig"]["desiredSize"] == 0
    for group in run.of_type(NODE_GROUP):
        # The Cluster Autoscaler owns a GPU pool's size; the stack the system's.
        gpu = group["inputs"]["labels"][names.NODE_ROLE_LABEL] == names.GPU_NODE_ROLE
        ignored = ["scalingConfig.desiredSize"] if gpu else []
        assert group["options"]["ignore_changes"] == ignored, group["name"]
        autoscaled = {
            r["inputs"]["tag"]["key"]
            for r in run.of_type("aws:autoscaling/tag:Tag")
            if r["name"].startswith(f"{group['name']}-asg-")
        }
        assert (AUTOSCALED_TAG in autoscaled) == gpu, group["name"]


def test_launch_templates_require_imdsv2_and_encrypt_gp3_roots(private):
    cfg, run = private
    templates = {r["id"]: r for r in run.of_type(LAUNCH_TEMPLATE)}
    assert len(templates) == 3  # system + 2 GPU pools
    disks = {}
    for group in run.of_type(NODE_GROUP):
        template = templates[group["inputs"]["launchTemplate"]["id"]]["inputs"]
        meta = template["metadataOptions"]
        assert meta["httpTokens"] == "required"
        assert meta["httpPutResponseHopLimit"] == 1
        assert meta["httpEndpoint"] == "enabled"
        assert "keyName" not in template
        assert "imageId" not in template and "userData" not in template
        (mapping,) = template["blockDeviceMappings"]
        ebs = mapping["ebs"]
        assert mapping["deviceName"] == "/dev/xvda"
        assert ebs["volumeType"] == "gp3"
        assert ebs["encrypted"] == "true"
        assert ebs["deleteOnTermination"] == "true"
        disks[group["name"]] = ebs["volumeSize"]
        kinds = {t["resourceType"] for t in template["tagSpecifications"]}
        assert kinds == {"instance", "volume", "network-interface"}
        for spec in template["tagSpecifications"]:
            assert spec["tags"]["raygpu:stack"] == cfg.stack
    assert disks == {"c-system": 50, "c-gpu-a10g": 200, "c-gpu-l4x4": 400}


def test_autoscaler_node_template_tags_on_group_and_asg(private):
    _, run = private
    l4 = gpu_groups(run)["c-gpu-l4x4"]
    tags = l4["inputs"]["tags"]
    prefix = "k8s.io/cluster-autoscaler/node-template"
    assert tags[f"{prefix}/label/raygpu.io/pool"] == "l4x4"
    assert tags[f"{prefix}/label/raygpu.io/gpu-model"] == "L4"
    assert tags[f"{prefix}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags[f"{prefix}/resources/nvidia.com/gpu"] == "4"
    asg_tags = {
        r["inputs"]["tag"]["key"]: r["inputs"]
        for r in run.of_type("aws:autoscaling/tag:Tag")
        if r["name"].startswith("c-gpu-l4x4-")
    }
    expected = {k: v for k, v in tags.items() if k.startswith(prefix)}
    expected[AUTOSCALED_TAG] = "true"
    assert {k: v["tag"]["value"] for k, v in asg_tags.items()} == expected
    for inputs in asg_tags.values():
        assert inputs["autoscalingGroupName"].startswith("eks-c-gpu-l4x4-")
        assert inputs["tag"]["propagateAtLaunch"] is False


def test_autoscaler_template_tags_helper():
    tags = autoscaler_template_tags(
        {"a": "b"}, (("nvidia.com/gpu", "true", "NoSchedule"),), 2
    )
    prefix = "k8s.io/cluster-autoscaler/node-template"
    assert tags == {
        f"{prefix}/label/a": "b",
        f"{prefix}/taint/nvidia.com/gpu": "true:NoSchedule",
        f"{prefix}/resources/nvidia.com/gpu": "2",
    }


def test_system_group_is_on_demand_cpu_without_taints(private):
    cfg, run = private
    system = run.one(NODE_GROUP, "c-system")["inputs"]
    assert system["capacityType"] == "ON_DEMAND"
    assert system["amiType"] == "AL2023_x86_64_STANDARD"
    assert system["instanceTypes"] == list(cfg.system_pool.instance_types)
    assert system.get("taints", []) == []
    assert system["labels"] == {names.NODE_ROLE_LABEL: "system"}
    assert system["scalingConfig"]["minSize"] >= 1


def test_node_role_has_only_the_standard_node_policies(private):
    _, run = private
    node_role = run.one("aws:iam/role:Role", "c-node")
    trust = json.loads(node_role["inputs"]["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = sorted(
        r["inputs"]["policyArn"].rsplit("/", 1)[1]
        for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r["name"].startswith("c-node-")
    )
    assert attached == [
        "AmazonEC2ContainerRegistryReadOnly",
        "AmazonEKSWorkerNodePolicy",
        "AmazonEKS_CNI_Policy",
    ]
    # No inline policies on any role of the cluster component.
    assert run.of_type("aws:iam/rolePolicy:RolePolicy") == []
    # Every node group depends on the attachments (nodes can join on creation).
    for group in run.of_type(NODE_GROUP):
        assert group["inputs"]["nodeRoleArn"].endswith(node_role["id"])
        deps = group["options"]["depends_on"]
        assert sum("rolePolicyAttachment" in d for d in deps) == 3


def test_addons_and_coredns_after_system_nodes(private):
    _, run = private
    addons = {r["inputs"]["addonName"]: r for r in run.of_type("aws:eks/addon:Addon")}
    assert set(addons) == {"vpc-cni", "kube-proxy", "coredns"}
    system_urn = run.one(NODE_GROUP, "c-system")["urn"]
    assert system_urn in addons["coredns"]["options"]["depends_on"]


@pulumi.runtime.test
def test_kubeconfig_is_a_secret_that_uses_aws_eks_get_token():
    cfg = stack_config()
    pulumi.runtime.set_mocks(RaygpuMocks("us-east-1"), project="raygpu", stack="dev")
    cluster = EksCluster("c", EksClusterArgs.from_config(cfg, SUBNETS))

    def check(values):
        kubeconfig, endpoint, issuer, is_secret = values
        assert is_secret is True
        doc = json.loads(kubeconfig)
        assert doc["clusters"][0]["cluster"]["server"] == endpoint
        assert endpoint.startswith("https://")
        exec_ = doc["users"][0]["user"]["exec"]
        assert exec_["command"] == "aws"
        assert exec_["args"][:4] == ["eks", "get-token", "--cluster-name", "raygpu-dev"]
        assert "us-east-1" in exec_["args"]
        assert issuer.startswith("https://oidc.eks.us-east-1.amazonaws.com/id/")
        assert "token" not in json.dumps(doc["users"][0]["user"]).replace(
            "get-token", ""
        )

    return pulumi.Output.all(
        cluster.kubeconfig,
        cluster.endpoint,
        cluster.oidc_issuer_url,
        pulumi.Output.from_input(cluster.kubeconfig.is_secret()),
    ).apply(check)
