"""`raygpu destroy`: tear a stack down so that nothing is left behind.

It first says what it will do and asks for the stack's name (`--yes` skips the
question; without a terminal to ask on it needs `--yes`); `--dry-run` says what it
would do and changes nothing.

Order, each wait bounded:
1. In the cluster: delete every RayService, then RayJob, then RayCluster, waiting
   for each kind to be gone (the operator removes their pods and services).
2. Delete every Service of type LoadBalancer, every Ingress and every
   PersistentVolumeClaim, and wait until Kubernetes has let go of them (the AWS
   controllers hold them with finalizers until their load balancers are deleted).
3. In the cloud: wait until what those made is gone (AWS: the load balancers and
   target groups tagged for the cluster, and the network interfaces AWS made for
   them; Google Cloud: GKE's forwarding and `k8s-` firewall rules on the stack's
   network; Azure: the load balancers and the Services' public IPs in AKS's node
   resource group). Otherwise the network could not be deleted and `pulumi destroy`
   would fail after a long wait.
4. `pulumi destroy --yes`.
5. Scan for leftovers (`raygpu orphans`, per cloud); exit non-zero listing each one.

The stack's data bucket (and the KMS key that encrypts it) are kept when the stack
protects them (`protectDataBucket`, the default): reported, never deleted, unless
--delete-data-bucket is given. Kubernetes and Pulumi are reached through the small
`Kubernetes` and `Pulumi` interfaces of `seams`, real implementations by kubectl and the
Pulumi CLI, so the order and the waits are tested without a cluster. The
modules: `seams` (Kubernetes, Pulumi), `steps` (Teardown, Plan), `command` (the CLI).
"""

from raygpu.teardown.command import add_arguments, check_arguments, confirm, run
from raygpu.teardown.seams import (
    EXPOSURE_KINDS,
    RAY_KINDS,
    KubectlKubernetes,
    KubeObject,
    Kubernetes,
    Pulumi,
    PulumiCli,
)
from raygpu.teardown.steps import Limits, Plan, Step, Teardown

__all__ = [
    "EXPOSURE_KINDS",
    "RAY_KINDS",
    "KubeObject",
    "KubectlKubernetes",
    "Kubernetes",
    "Limits",
    "Plan",
    "Pulumi",
    "PulumiCli",
    "Step",
    "Teardown",
    "add_arguments",
    "check_arguments",
    "confirm",
    "run",
]
