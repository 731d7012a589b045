"""Whether the EKS cluster enforces the tier's NetworkPolicies: otherwise they are decoration.

The VPC CNI enforces NetworkPolicy only when its add-on configuration says `enableNetworkPolicy:
"true"`; read it through the EKS API (a managed add-on) before anything relies on the policies.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from components.settings import PROJECT, ConfigError

ADDON = "vpc-cni"


def network_policy_problem(configuration_values: str | None) -> str | None:
    """Why an add-on with these configuration values does not enforce NetworkPolicy, or None."""
    try:
        values = json.loads(configuration_values or "{}")
    except json.JSONDecodeError:
        return "its configuration values are not JSON"
    if not isinstance(values, dict) or str(values.get("enableNetworkPolicy", "")).lower() != "true":
        return 'its configuration lacks enableNetworkPolicy: "true"'
    return None


def require_network_policy_enforcement(cluster_name: str, provider: aws.Provider) -> None:
    """Refuse the update, naming the fix, when the cluster's VPC CNI does not enforce NetworkPolicy."""
    key = f"{PROJECT}:aws.eksClusterName = {cluster_name!r}"
    fix = (
        f"enable it (`aws eks update-addon --cluster-name {cluster_name} --addon-name {ADDON} "
        """--configuration-values '{"enableNetworkPolicy":"true"}'`), or unset aws.eksClusterName if another """
        "CNI (Calico, Cilium) enforces NetworkPolicy"
    )
    try:
        addon = aws.eks.get_addon(
            addon_name=ADDON, cluster_name=cluster_name, opts=pulumi.InvokeOptions(provider=provider)
        )
    except Exception as error:  # the provider's error (no such cluster, self-managed CNI, no access)
        raise ConfigError(f"{key}: cannot read the cluster's {ADDON} add-on ({error}); {fix}") from None
    problem = network_policy_problem(addon.configuration_values)
    if problem is not None:
        raise ConfigError(
            f"{key}: the {ADDON} add-on does not enforce NetworkPolicy ({problem}), so any pod could reach the "
            f"CAS server's writable ports; {fix}"
        )
