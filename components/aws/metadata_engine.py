"""JuiceFS metadata engines on AWS: ElastiCache (Redis) or RDS (Postgres), both private and encrypted.

Each engine sits in its own subnet group and security group; the only ingress is the engine's port
from the Kubernetes nodes' security group, where the JuiceFS mount pods and the CSI driver run.
`meta_url` never carries the password: the client reads META_PASSWORD from the CSI Secret's envs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.aws.alarms import Alarm, elasticache_alarms, rds_alarms
from components.aws.common import kms_key
from components.juicefs.commands import postgres_meta_url, redis_meta_url
from components.passwords import generated_password
from components.settings import PROJECT_ROOT, AwsSettings, ConfigError, ProdSettings, ca_bundle_problem

REDIS_PORT = 6379
REDIS_DB = 1
POSTGRES_PORT = 5432
# Where the RDS CA bundle appears inside the JuiceFS mount pod (CSI Secret `configs`).
RDS_CA_DIR = "/etc/juicefs/rds-ca"
RDS_CA_FILE = "rds-ca-bundle.pem"
# The CA generation the RDS instance presents; the committed bundle must contain its root.
RDS_CA_CERT_IDENTIFIER = "rds-ca-rsa2048-g1"


def _final_snapshot_name(suffix: str) -> str:
    """A snapshot identifier (letters, digits, single hyphens, starts with a letter) unique per stack."""
    stack = re.sub(r"[^a-z0-9]+", "-", pulumi.get_stack().lower()).strip("-")
    return f"nativelink-{stack}-{suffix}-final"


def redis_parameter_group_family(engine_version: str) -> str:
    major = int(engine_version.split(".")[0])
    return "redis6.x" if major == 6 else f"redis{major}"


def postgres_parameter_group_family(engine_version: str) -> str:
    return f"postgres{engine_version.split('.')[0]}"


def load_ca_bundle(relative_path: str) -> str:
    """The RDS CA bundle committed at aws.rds.caBundleFile (settings validation has checked it)."""
    problem = ca_bundle_problem(relative_path)
    if problem is not None:
        raise ConfigError(f"nativelink-juicefs:aws.rds.caBundleFile = {relative_path!r}: {problem}")
    return (PROJECT_ROOT / relative_path).read_text(encoding="ascii")


@dataclass(frozen=True)
class PrivateNetwork:
    """Where a metadata engine sits: its subnet group, and the security group admitting only the nodes."""

    subnet_group_name: pulumi.Output[str]
    security_group_id: pulumi.Output[str]


def _private_network(
    name: str,
    what: str,
    port: int,
    subnet_group: Callable[..., aws.elasticache.SubnetGroup | aws.rds.SubnetGroup],
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
        child = pulumi.ResourceOptions(parent=self)

        key = kms_key(f"{name}-key", "ElastiCache at-rest encryption for JuiceFS metadata", region, aws_settings, self)
        # JuiceFS cannot set the policy itself on ElastiCache (CONFIG is disabled) and evicting
        # metadata keys would corrupt the filesystem.
        parameters = aws.elasticache.ParameterGroup(
            f"{name}-params",
            description="JuiceFS metadata: never evict",
            family=redis_parameter_group_family(cache.engine_version),
            parameters=[{"name": "maxmemory-policy", "value": "noeviction"}],
            region=region,
            opts=child,
        )
        network = _private_network(
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
            parameter_group_name=parameters.name,
            subnet_group_name=network.subnet_group_name,
            security_group_ids=[network.security_group_id],
            snapshot_retention_limit=cache.snapshot_retention_days,
            final_snapshot_identifier=_final_snapshot_name("redis"),
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


class RdsMetadataEngine(pulumi.ComponentResource):
    """Postgres on RDS: Multi-AZ, KMS-encrypted storage, forced TLS verified against the RDS CA."""

    meta_url: pulumi.Output[str]
    meta_password: pulumi.Output[str]
    address: pulumi.Output[str]
    alarms: list[Alarm]
    # PEM the mount pod needs at RDS_CA_DIR/RDS_CA_FILE; None when TLS is off.
    ca_bundle_pem: str | None

    def __init__(self, name: str, settings: ProdSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nativelink:metadata:RdsPostgres", name, None, opts)
        aws_settings = settings.aws
        rds = aws_settings.rds
        region = aws_settings.region
        tls = aws_settings.metadata_tls
        child = pulumi.ResourceOptions(parent=self)
        # Read before anything is registered, so a missing bundle fails the preview, not the mount.
        self.ca_bundle_pem = load_ca_bundle(rds.ca_bundle_file) if tls else None

        key = kms_key(f"{name}-key", "RDS storage encryption for JuiceFS metadata", region, aws_settings, self)
        parameters = aws.rds.ParameterGroup(
            f"{name}-params",
            description="JuiceFS metadata: TLS only",
            family=postgres_parameter_group_family(rds.engine_version),
            parameters=[{"name": "rds.force_ssl", "value": "1" if tls else "0", "apply_method": "immediate"}],
            region=region,
            opts=child,
        )
        network = _private_network(
            name, "JuiceFS metadata (RDS)", POSTGRES_PORT, aws.rds.SubnetGroup, aws_settings, self
        )

        # RDS refuses /, @, " and spaces in passwords, and URLs need no escaping.
        password = generated_password(f"{name}-password", length=40, parent=self)
        instance = aws.rds.Instance(
            f"{name}-postgres",
            engine="postgres",
            engine_version=rds.engine_version,
            instance_class=rds.instance_class,
            allocated_storage=rds.allocated_storage_gb,
            max_allocated_storage=rds.max_allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=key.arn,
            db_name=rds.database_name,
            username=rds.username,
            password=password,
            port=POSTGRES_PORT,
            multi_az=True,
            publicly_accessible=False,
            db_subnet_group_name=network.subnet_group_name,
            vpc_security_group_ids=[network.security_group_id],
            parameter_group_name=parameters.name,
            ca_cert_identifier=RDS_CA_CERT_IDENTIFIER,
            backup_retention_period=rds.backup_retention_days,
            copy_tags_to_snapshot=True,
            deletion_protection=True,
            skip_final_snapshot=False,
            final_snapshot_identifier=_final_snapshot_name("postgres"),
            auto_minor_version_upgrade=True,
            apply_immediately=False,
            region=region,
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )

        # Automated backups (snapshots and transaction logs) also in the replica region, so a regional
        # outage leaves a point-in-time restore there; encrypted with a key of that region.
        replica_key = kms_key(
            f"{name}-replica-key",
            "RDS backup replicas of JuiceFS metadata",
            aws_settings.replica_region,
            aws_settings,
            self,
        )
        aws.rds.InstanceAutomatedBackupsReplication(
            f"{name}-backups-replica",
            source_db_instance_arn=instance.arn,
            kms_key_id=replica_key.arn,
            retention_period=rds.backup_retention_days,
            region=aws_settings.replica_region,
            opts=child,
        )

        self.alarms = rds_alarms(instance.identifier, rds.allocated_storage_gb)
        self.address = instance.address
        ca_path = f"{RDS_CA_DIR}/{RDS_CA_FILE}"
        self.meta_url = pulumi.Output.secret(
            instance.address.apply(
                lambda host: postgres_meta_url(
                    host,
                    POSTGRES_PORT,
                    rds.database_name,
                    rds.username,
                    sslmode="verify-full" if tls else "disable",
                    sslrootcert=ca_path if tls else None,
                )
            )
        )
        self.meta_password = password
        self.register_outputs({"metaUrl": self.meta_url, "address": self.address})
