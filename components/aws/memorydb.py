"""JuiceFS metadata on MemoryDB: a Multi-AZ transaction log, so a failover loses no acknowledged write.

ElastiCache replicates asynchronously: a failover can roll JuiceFS metadata back behind objects
already written, which JuiceFS's own docs warn of. MemoryDB acknowledges a write once its
transaction log holds it in several zones.

MemoryDB is a Redis Cluster. JuiceFS detects that from the single configuration endpoint in its
URL (CLUSTER INFO, pkg/meta/redis.go newRedisMeta) and then keeps every key under the hash tag
`{1}`, in one slot: so one shard, with replicas for failover. Access is an ACL user of the stack's
own with a generated password, over TLS (MemoryDB's certificates chain to public roots).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pulumi
import pulumi_aws as aws

from components.aws.alarms import Alarm, memorydb_alarms
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
from components.settings import PROJECT, MemoryDbSettings, ProdSettings

# The user owns every key and command: JuiceFS is the cluster's only client.
ACCESS_STRING = "on ~* &* +@all"
# Retry at least every second while a node is lost: a mount went on writing after 22 s instead of 40 s
# (the client's default cap is 10 s) when the stand-in's primary was killed (tests/realtools).
MAX_RETRY_BACKOFF = "1s"
USER_NAME_MAX = 40


def memorydb_user_name() -> str:
    """The ACL user, unique per project and stack (MemoryDB user names are per account and region)."""
    stack = re.sub(r"[^a-z0-9]+", "-", pulumi.get_stack().lower()).strip("-")
    return f"{PROJECT}-{stack}"[:USER_NAME_MAX].rstrip("-")


def memorydb_parameter_group_family(memorydb: MemoryDbSettings) -> str:
    return f"memorydb_{memorydb.engine}{memorydb.engine_version.split('.')[0]}"


def configuration_endpoint(endpoints: Sequence[aws.memorydb.outputs.ClusterClusterEndpoint]) -> str:
    """The cluster's configuration endpoint, from which a cluster client learns every node."""
    address = endpoints[0].address if endpoints else None
    if not address:
        raise RuntimeError("MemoryDB reported no cluster endpoint for the JuiceFS metadata cluster")
    return address


class MemoryDbMetadataEngine(pulumi.ComponentResource):
    """MemoryDB: one shard with replicas in other zones, TLS, an ACL user, KMS at rest, noeviction, snapshots."""

    meta_url: pulumi.Output[str]
    meta_password: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    alarms: list[Alarm]
    ca_bundle_pem: str | None = None

    def __init__(self, name: str, settings: ProdSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nativelink:metadata:MemoryDB", name, None, opts)
        aws_settings = settings.aws
        memorydb = aws_settings.memorydb
        region = aws_settings.region
        child = pulumi.ResourceOptions(parent=self)

        key = kms_key(f"{name}-key", "MemoryDB at-rest encryption for JuiceFS metadata", region, aws_settings, self)
        parameters = never_evicting_parameters(
            name, aws.memorydb.ParameterGroup, memorydb_parameter_group_family(memorydb), region, self
        )
        network = private_network(
            name, "JuiceFS metadata (MemoryDB)", REDIS_PORT, aws.memorydb.SubnetGroup, aws_settings, self
        )

        # MemoryDB passwords take 16-128 characters; letters and digits fit its every rule.
        password = generated_password(f"{name}-password", length=64, parent=self)
        user = aws.memorydb.User(
            f"{name}-user",
            user_name=memorydb_user_name(),
            access_string=ACCESS_STRING,
            authentication_mode={"type": "password", "passwords": [password]},
            region=region,
            opts=child,
        )
        # Only this user: MemoryDB's `default` user (no password) is in no ACL the stack creates.
        acl = aws.memorydb.Acl(f"{name}-acl", user_names=[user.user_name], region=region, opts=child)
        # MemoryDB applies node type and engine changes at once (it has no apply_immediately=False).
        cluster = aws.memorydb.Cluster(
            f"{name}-memorydb",
            description="JuiceFS metadata for NativeLink's CAS",
            engine=memorydb.engine,
            engine_version=memorydb.engine_version,
            node_type=memorydb.node_type,
            port=REDIS_PORT,
            # JuiceFS puts every key in one slot ({1}): more shards would hold nothing.
            num_shards=1,
            num_replicas_per_shard=memorydb.replicas,
            acl_name=acl.name,
            tls_enabled=True,
            kms_key_arn=key.arn,
            parameter_group_name=parameters,
            subnet_group_name=network.subnet_group_name,
            security_group_ids=[network.security_group_id],
            snapshot_retention_limit=memorydb.snapshot_retention_days,
            final_snapshot_name=final_snapshot_name("memorydb"),
            auto_minor_version_upgrade=True,
            region=region,
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )

        self.alarms = memorydb_alarms(cluster.name, 1 + memorydb.replicas)
        self.endpoint = cluster.cluster_endpoints.apply(configuration_endpoint)
        user_name = memorydb_user_name()
        self.meta_url = pulumi.Output.secret(
            self.endpoint.apply(
                lambda host: redis_meta_url(
                    host, REDIS_PORT, REDIS_DB, tls=True, user=user_name, max_retry_backoff=MAX_RETRY_BACKOFF
                )
            )
        )
        self.meta_password = password
        self.register_outputs({"metaUrl": self.meta_url, "endpoint": self.endpoint})
