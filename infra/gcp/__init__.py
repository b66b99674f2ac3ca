"""The Google Cloud stack (`raygpu:cloud: gcp`): one component per concern, as on
AWS: network.py (VPC, subnet with secondary ranges, Cloud Router and NAT),
storage.py (the two GCS buckets and their Cloud KMS key), cluster.py (GKE and its
node pools), identity.py (Ray's Google service account and Workload Identity),
budget.py (the billing budget). infra/__main__.py wires them with the Kubernetes
layer that every cloud shares (infra/kuberay.py).
"""
