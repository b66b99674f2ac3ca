"""Pulumi program for raygpu: AWS networking, storage, EKS and Ray on Kubernetes.

Nothing in this package imports ray or torch.
"""
