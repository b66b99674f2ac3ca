"""AzureIdentity: the user-assigned identity of Ray's pods, federated with the
Ray head's and the workers' Kubernetes service accounts through the cluster's
OIDC issuer (AKS workload identity), with Storage Blob Data Contributor on the
stack's two containers only: role assignments at container scope, never the
account, the resource group or the subscription.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import authorization, managedidentity

from infra.azure import STORAGE_BLOB_DATA_CONTRIBUTOR, role_definition_id

TYPE_TOKEN = "raygpu:azure:Identity"
# The audience Entra ID expects of a federated Kubernetes token.
TOKEN_AUDIENCE = "api://AzureADTokenExchange"


def subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


@dataclass(frozen=True)
class AzureIdentityArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    subscription_id: str
    identity_name: str
    oidc_issuer_url: pulumi.Input[str]
    namespace: str
    service_accounts: tuple[str, ...]  # the head's and the workers'
    container_ids: Mapping[str, pulumi.Input[str]]
    tags: Mapping[str, str]

    @classmethod
    def from_config(
        cls, cfg, *, resource_group_name, oidc_issuer_url, container_ids
    ) -> AzureIdentityArgs:
        return cls(
            resource_group_name=resource_group_name,
            location=cfg.region,
            subscription_id=cfg.subscription_id,
            identity_name=f"{cfg.name_prefix}-ray",
            oidc_issuer_url=oidc_issuer_url,
            namespace=cfg.ray_namespace,
            service_accounts=(cfg.ray_service_account, cfg.ray_worker_service_account),
            container_ids=container_ids,
            tags=cfg.tags,
        )


class AzureIdentity(pulumi.ComponentResource):
    client_id: pulumi.Output[str]
    principal_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: AzureIdentityArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-ray",
            resource_group_name=args.resource_group_name,
            resource_name_=args.identity_name,
            location=args.location,
            tags=dict(args.tags),
            opts=child,
        )
        credentials = []
        for ksa in args.service_accounts:
            # Azure applies one federated credential of an identity at a time.
            credentials.append(
                managedidentity.FederatedIdentityCredential(
                    f"{name}-fic-{ksa}",
                    resource_group_name=args.resource_group_name,
                    resource_name_=identity.name,
                    federated_identity_credential_resource_name=ksa,
                    issuer=args.oidc_issuer_url,
                    subject=subject(args.namespace, ksa),
                    audiences=[TOKEN_AUDIENCE],
                    opts=pulumi.ResourceOptions(
                        parent=self, depends_on=list(credentials)
                    ),
                )
            )
        role = role_definition_id(args.subscription_id, STORAGE_BLOB_DATA_CONTRIBUTOR)
        for kind, container_id in args.container_ids.items():
            authorization.RoleAssignment(
                f"{name}-blob-{kind}",
                scope=container_id,
                role_definition_id=role,
                principal_id=identity.principal_id,
                # A new identity may not have replicated yet: say what it is.
                principal_type="ServicePrincipal",
                opts=child,
            )
        self.client_id = identity.client_id
        self.principal_id = identity.principal_id
        self.register_outputs(
            {"client_id": self.client_id, "principal_id": self.principal_id}
        )
