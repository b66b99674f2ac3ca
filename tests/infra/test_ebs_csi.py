"""The EBS CSI add-on tags every volume it creates with the cluster's name and the
stack's tags (the real program on the dev stack under Pulumi's mocks), and the
leftover scan looks for volumes by that same cluster tag."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from infra import ebs_csi
from raygpu import config
from raygpu.offline import run_offline
from raygpu.orphans.model import CLUSTER_NAME_TAGS

ROOT = Path(__file__).resolve().parents[2]
ADDON = "aws:eks/addon:Addon"
CLUSTER = "aws:eks/cluster:Cluster"


def test_volumes_carry_the_cluster_name_and_the_stack_tags(tmp_path):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["raygpu:monitoring"] = True
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = config.load_stack_file(path, "dev")
    run = run_offline("dev", path)
    (addon,) = [
        a for a in run.of_type(ADDON) if a["inputs"]["addonName"] == ebs_csi.ADDON_NAME
    ]
    (cluster,) = run.of_type(CLUSTER)
    values = json.loads(addon["inputs"]["configurationValues"])["controller"]
    assert values["k8sTagClusterId"] == cluster["inputs"]["name"]
    assert values["extraVolumeTags"] == cfg.tags
    # the tag the driver writes from k8sTagClusterId is one the scan matches
    assert "KubernetesCluster" in CLUSTER_NAME_TAGS
