"""What every JuiceFS metadata engine on AWS shares: where it sits, its final snapshot, never evicting.

Each engine sits in its own subnet group and security group; the only ingress is the engine's port
from the Kubernetes nodes' security group, where the JuiceFS mount pods and the CSI driver run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.settings import AwsSettings

REDIS_PORT = 6379
# The Redis database JuiceFS uses; on a Redis Cluster (MemoryDB) its keys carry the hash tag {1} instead.
REDIS_DB = 1


def final_snapshot_name(suffix: str) -> str:
    """A snapshot identifier (letters, digits, single hyphens, starts with a letter) unique per stack."""
    stack = re.sub(r"[^a-z0-9]+", "-", pulumi.get_stack().lower()).strip("-")
    return f"nativelink-{stack}-{suffix}-final"


@dataclass(frozen=True)
class PrivateNetwork:
    """Where a metadata engine sits: its subnet group, and the security group admitting only the nodes."""

    subnet_group_name: pulumi.Output[str]
    security_group_id: pulumi.Output[str]


def private_network(
    name: str,
    what: str,
    port: int,
    subnet_group: Callable[..., aws.elasticache.SubnetGroup | aws.rds.SubnetGroup | aws.memorydb.SubnetGroup],
    aws_settings: AwsSettings,
    parent: pulumi.Resource,
) -> PrivateNetwork:
    """A `subnet_group` over aws.subnetIds, and a security group admitting `port` from the nodes' group.

    The security group admits nothing else and has no egress rule.
    """
    child = pulumi.ResourceOptions(parent=parent)
    region = aws_settings.region
    subnets = subnet_group(
        f"{name}-subnets", description=what, subnet_ids=aws_settings.subnet_ids, region=region, opts=child
    )
    group = aws.ec2.SecurityGroup(
        f"{name}-sg",
        description=f"{what}: port {port} from the Kubernetes nodes only",
        vpc_id=aws_settings.vpc_id,
        region=region,
        opts=child,
    )
    aws.vpc.SecurityGroupIngressRule(
        f"{name}-from-nodes",
        description=f"{what} from the Kubernetes nodes (JuiceFS mount pods, CSI driver)",
        security_group_id=group.id,
        referenced_security_group_id=aws_settings.node_security_group_id,
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        region=region,
        opts=child,
    )
    return PrivateNetwork(subnet_group_name=subnets.name, security_group_id=group.id)


def never_evicting_parameters(
    name: str,
    parameter_group: Callable[..., aws.elasticache.ParameterGroup | aws.memorydb.ParameterGroup],
    family: str,
    region: str,
    parent: pulumi.Resource,
) -> pulumi.Output[str]:
    """A Redis parameter group with `maxmemory-policy noeviction`; returns its name.

    JuiceFS cannot set the policy itself on a managed Redis (CONFIG is disabled), and evicting
    metadata keys would corrupt the filesystem.
    """
    group = parameter_group(
        f"{name}-params",
        description="JuiceFS metadata: never evict",
        family=family,
        parameters=[{"name": "maxmemory-policy", "value": "noeviction"}],
        region=region,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return group.name
