"""JuiceFS metadata on ElastiCache (Redis): Multi-AZ, TLS with AUTH, KMS at rest, never evicting.

`meta_url` never carries the password: the client reads META_PASSWORD from the CSI Secret's envs.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.aws.alarms import Alarm, elasticache_alarms
from components.aws.common import kms_key
from components.aws.metadata_base import (
    REDIS_DB,
    REDIS_PORT,
    final_snapshot_name,
    never_evicting_parameters,
    private_network,
)
from components.juicefs.commands import redis_meta_url
from components.passwords import generated_password
from components.settings import ProdSettings


def redis_parameter_group_family(engine_version: str) -> str:
    major = int(engine_version.split(".")[0])
    return "redis6.x" if major == 6 else f"redis{major}"


class ElastiCacheMetadataEngine(pulumi.ComponentResource):
    """Redis on ElastiCache: Multi-AZ with automatic failover, TLS, AUTH, KMS at rest, noeviction."""

    meta_url: pulumi.Output[str]
    meta_password: pulumi.Output[str]
    primary_endpoint: pulumi.Output[str]
    alarms: list[Alarm]

    def __init__(self, name: str, settings: ProdSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nativelink:metadata:ElastiCache", name, None, opts)
        aws_settings = settings.aws
        cache = aws_settings.elasticache
        region = aws_settings.region
        tls = aws_settings.metadata_tls

        key = kms_key(f"{name}-key", "ElastiCache at-rest encryption for JuiceFS metadata", region, aws_settings, self)
        parameters = never_evicting_parameters(
            name, aws.elasticache.ParameterGroup, redis_parameter_group_family(cache.engine_version), region, self
        )
        network = private_network(
            name, "JuiceFS metadata (ElastiCache)", REDIS_PORT, aws.elasticache.SubnetGroup, aws_settings, self
        )

        # ElastiCache AUTH tokens: 16-128 printable characters without @, " or /.
        token = generated_password(f"{name}-auth-token", length=64, parent=self)
        replication_group = aws.elasticache.ReplicationGroup(
            f"{name}-redis",
            description="JuiceFS metadata for NativeLink's CAS",
            engine="redis",
            engine_version=cache.engine_version,
            node_type=cache.node_type,
            port=REDIS_PORT,
            num_cache_clusters=1 + cache.replicas,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            transit_encryption_enabled=tls,
            transit_encryption_mode="required" if tls else None,
            auth_token=token if tls else None,
            auth_token_update_strategy="ROTATE" if tls else None,
            at_rest_encryption_enabled=True,
            kms_key_id=key.arn,
            parameter_group_name=parameters,
            subnet_group_name=network.subnet_group_name,
            security_group_ids=[network.security_group_id],
            snapshot_retention_limit=cache.snapshot_retention_days,
            final_snapshot_identifier=final_snapshot_name("redis"),
            auto_minor_version_upgrade=True,
            apply_immediately=False,
            region=region,
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )

        self.alarms = elasticache_alarms(replication_group.id, 1 + cache.replicas)
        self.primary_endpoint = replication_group.primary_endpoint_address
        # ElastiCache certificates are Amazon-issued: the system CA store verifies them.
        self.meta_url = pulumi.Output.secret(
            replication_group.primary_endpoint_address.apply(
                lambda host: redis_meta_url(host, REDIS_PORT, REDIS_DB, tls=tls)
            )
        )
        # No AUTH without TLS on ElastiCache; an empty password means "none".
        self.meta_password = token if tls else pulumi.Output.secret("")
        self.ca_bundle_pem: str | None = None
        self.register_outputs({"metaUrl": self.meta_url, "primaryEndpoint": self.primary_endpoint})
