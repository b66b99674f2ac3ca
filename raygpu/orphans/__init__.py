"""Find, and with --delete remove, what a stack left behind in its cloud.

A Google Cloud stack is scanned by raygpu.orphans.gcp_scan through the GoogleCloud
seam of raygpu.orphans.gcp, an Azure stack by raygpu.orphans.azure_scan through the
AzureCloud seam of raygpu.orphans.azure (see there), with what the two share in
raygpu.orphans.cli_cloud; the rest of this describes AWS.

    raygpu orphans --stack dev              # list; exit 1 when something is left
    raygpu orphans --stack dev --delete     # delete in dependency order

A resource belongs to the stack when it carries the stack's tag
(`raygpu:stack=<name>`, found through the Resource Groups Tagging API) or a tag by
which Kubernetes or one of its controllers marks what it made for the stack's
cluster: `kubernetes.io/cluster/<cluster>=owned`, `elbv2.k8s.aws/cluster`,
`cluster.k8s.amazonaws.com/name`, `KubernetesCluster`, `eks:cluster-name` (load
balancers, target groups, network interfaces, EBS volumes, security groups). Nothing
else is ever touched; `kubernetes.io/cluster/<cluster>=shared` marks a resource the
cluster only uses, and is not enough. The stack's data bucket is reported and kept
unless --delete-data-bucket is given. IAM roles and OIDC providers, which the
Tagging API does not list and which are account-wide, are listed through IAM and
deleted only when their `raygpu:region` tag (or the provider's URL) names the
stack's region.

AWS is reached with boto3 in the stack's region; AWS_ENDPOINT_URL and the usual
credential chain apply. The modules: `model` (what is reported), `kinds` (the one
table of kinds: find, confirm, delete, wait), `find`, `scan` (OrphanScanner),
`aws` (sessions, error codes, waits) and `command` (the CLI).
"""

from raygpu.orphans.command import (
    Target,
    add_arguments,
    add_target_args,
    check_arguments,
    from_stack_file,
    report,
    resolve_target,
    run,
    scanner_for,
    target_for,
)
from raygpu.orphans.kinds import DELETE_ORDER, KINDS, Kind, sort_for_deletion
from raygpu.orphans.model import (
    CLASSIC_LOAD_BALANCER,
    LOAD_BALANCER,
    Orphan,
    Outcome,
    classify_arn,
    cluster_reason,
    is_iam_arn,
)
from raygpu.orphans.scan import OrphanScanner

__all__ = [
    "CLASSIC_LOAD_BALANCER",
    "DELETE_ORDER",
    "KINDS",
    "LOAD_BALANCER",
    "Kind",
    "Orphan",
    "OrphanScanner",
    "Outcome",
    "Target",
    "add_arguments",
    "add_target_args",
    "check_arguments",
    "classify_arn",
    "cluster_reason",
    "from_stack_file",
    "is_iam_arn",
    "report",
    "resolve_target",
    "run",
    "scanner_for",
    "sort_for_deletion",
    "target_for",
]
