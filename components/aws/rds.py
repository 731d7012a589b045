"""JuiceFS metadata on RDS (Postgres): Multi-AZ, KMS-encrypted, TLS verified against the RDS CA.

`meta_url` never carries the password: the client reads META_PASSWORD from the CSI Secret's envs.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.aws.alarms import Alarm, rds_alarms
from components.aws.common import kms_key
from components.aws.metadata_base import final_snapshot_name, private_network
from components.juicefs.commands import postgres_meta_url
from components.passwords import generated_password
from components.settings import PROJECT_ROOT, ConfigError, ProdSettings, ca_bundle_problem

POSTGRES_PORT = 5432
# Where the RDS CA bundle appears inside the JuiceFS mount pod (CSI Secret `configs`).
RDS_CA_DIR = "/etc/juicefs/rds-ca"
RDS_CA_FILE = "rds-ca-bundle.pem"
# The CA generation the RDS instance presents; the committed bundle must contain its root.
RDS_CA_CERT_IDENTIFIER = "rds-ca-rsa2048-g1"


def postgres_parameter_group_family(engine_version: str) -> str:
    return f"postgres{engine_version.split('.')[0]}"


def load_ca_bundle(relative_path: str) -> str:
    """The RDS CA bundle committed at aws.rds.caBundleFile (settings validation has checked it)."""
    problem = ca_bundle_problem(relative_path)
    if problem is not None:
        raise ConfigError(f"nativelink-juicefs:aws.rds.caBundleFile = {relative_path!r}: {problem}")
    return (PROJECT_ROOT / relative_path).read_text(encoding="ascii")


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
        network = private_network(
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
            final_snapshot_identifier=final_snapshot_name("postgres"),
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
