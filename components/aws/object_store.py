"""S3 for JuiceFS's data blocks: an encrypted, versioned primary bucket replicated to a second region.

Replication needs versioning; JuiceFS overwrites and deletes blocks during compaction and trash
purges, so non-current versions expire after aws.noncurrentVersionExpirationDays. The replica
also receives JuiceFS's automatic metadata backups (`<volume>/meta/`), which is what makes it
usable for disaster recovery.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pulumi
import pulumi_aws as aws

from components.aws.alarms import Alarm, s3_replication_alarms
from components.aws.common import kms_key, policy_json, service_trust_policy
from components.aws.juicefs_access import JuiceFsS3Access
from components.juicefs.backup import DUMP_PREFIX
from components.juicefs.commands import StorageType, s3_bucket_url

if TYPE_CHECKING:
    from components.settings import AwsSettings, ProdSettings

# Whatever resource configures a bucket (versioning, encryption, policy, ...).
BucketSetting = TypeVar("BucketSetting", bound=pulumi.CustomResource)


REPLICATION_RULE_ID = "replicate-everything"


@dataclass(frozen=True)
class HardenedBucket:
    bucket: aws.s3.Bucket
    key: aws.kms.Key
    versioning: aws.s3.BucketVersioning


def _hardened_bucket(
    name: str, bucket_name: str, region: str, settings: ProdSettings, aws_settings: AwsSettings, parent: pulumi.Resource
) -> HardenedBucket:
    """A bucket with its own KMS key, versioning, no public access, TLS-only policy and version expiry."""
    key = kms_key(f"{name}-key", f"S3 SSE-KMS for {bucket_name}", region, aws_settings, parent)
    bucket = aws.s3.Bucket(
        name,
        bucket=bucket_name,
        region=region,
        # Deleting the bucket deletes the CAS; removing it from the program only forgets it.
        opts=pulumi.ResourceOptions(parent=parent, protect=True, retain_on_delete=True),
    )

    def setting(
        resource: Callable[..., BucketSetting],
        suffix: str,
        *,
        depends_on: Sequence[pulumi.Resource] = (),
        **inputs: Any,
    ) -> BucketSetting:
        """A resource configuring the bucket, registered in the bucket's region."""
        return resource(
            f"{name}-{suffix}",
            bucket=bucket.id,
            region=region,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on) or None),
            **inputs,
        )

    versioning = setting(aws.s3.BucketVersioning, "versioning", versioning_configuration={"status": "Enabled"})
    setting(
        aws.s3.BucketServerSideEncryptionConfiguration,
        "sse",
        rules=[
            {
                "apply_server_side_encryption_by_default": {
                    "sse_algorithm": "aws:kms",
                    "kms_master_key_id": key.arn,
                },
                # One data key per bucket instead of per object: far fewer KMS calls for small blocks.
                "bucket_key_enabled": True,
            }
        ],
    )
    blocked = aws_settings.block_public_access
    public_access = setting(
        aws.s3.BucketPublicAccessBlock,
        "public-access",
        block_public_acls=blocked,
        block_public_policy=blocked,
        ignore_public_acls=blocked,
        restrict_public_buckets=blocked,
    )
    setting(aws.s3.BucketOwnershipControls, "ownership", rule={"object_ownership": "BucketOwnerEnforced"})
    setting(
        aws.s3.BucketPolicy,
        "tls-only",
        policy=policy_json(
            [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ]
        ),
        # S3 rejects policy writes racing the public access block.
        depends_on=[public_access],
    )
    setting(
        aws.s3.BucketLifecycleConfiguration,
        "lifecycle",
        rules=[
            {
                "id": "expire-noncurrent-versions",
                "status": "Enabled",
                "filter": {"prefix": ""},
                "noncurrent_version_expiration": {"noncurrent_days": aws_settings.noncurrent_version_expiration_days},
                # Delete markers left alone once their versions expire.
                "expiration": {"expired_object_delete_marker": True},
                "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
            },
            # Metadata dumps (components.juicefs.backup) age out; their noncurrent versions then go by the rule above.
            {
                "id": "expire-metadata-dumps",
                "status": "Enabled",
                "filter": {"prefix": f"{DUMP_PREFIX}/"},
                "expiration": {"days": settings.juicefs.metadata_dump_retention_days},
            },
        ],
        depends_on=[versioning],
    )
    return HardenedBucket(bucket=bucket, key=key, versioning=versioning)


def replication_policy(
    source: HardenedBucket, replica: HardenedBucket, source_region: str, replica_region: str
) -> pulumi.Output[str]:
    """What S3 replication needs and nothing more: read versions from the source, write replicas."""
    return policy_json(
        [
            {
                "Sid": "SourceBucket",
                "Effect": "Allow",
                "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
                "Resource": source.bucket.arn,
            },
            {
                "Sid": "SourceObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObjectVersionForReplication",
                    "s3:GetObjectVersionAcl",
                    "s3:GetObjectVersionTagging",
                ],
                "Resource": pulumi.Output.concat(source.bucket.arn, "/*"),
            },
            {
                "Sid": "ReplicaObjects",
                "Effect": "Allow",
                "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                "Resource": pulumi.Output.concat(replica.bucket.arn, "/*"),
            },
            {
                "Sid": "DecryptSource",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": source.key.arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{source_region}.amazonaws.com"}},
            },
            {
                "Sid": "EncryptReplica",
                "Effect": "Allow",
                "Action": "kms:Encrypt",
                "Resource": replica.key.arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{replica_region}.amazonaws.com"}},
            },
        ]
    )


def s3_identity(access: JuiceFsS3Access) -> pulumi.Output[str]:
    """Which identity JuiceFS reaches S3 with, naming no secret: the IRSA role, or a digest of the key id."""
    if access.role_arn is not None:
        return pulumi.Output.concat("irsa:", access.role_arn)
    digest = pulumi.Output.from_input(access.access_key).apply(
        lambda key: "key:" + hashlib.sha256((key or "").encode()).hexdigest()[:16]
    )
    # A 64-bit digest of an access key id reveals nothing; kept secret it would hide the pod template's diff.
    return pulumi.Output.unsecret(digest)


class S3ObjectStore(pulumi.ComponentResource):
    """The JuiceFS object store on AWS (ObjectStore protocol)."""

    storage: StorageType
    bucket_url: pulumi.Output[str]
    access_key: pulumi.Output[str] | None
    secret_key: pulumi.Output[str] | None
    bucket_name: pulumi.Output[str]
    replica_bucket_name: pulumi.Output[str]
    # Set on the IRSA path.
    role_arn: pulumi.Output[str] | None
    identity: pulumi.Output[str]
    access_policy: pulumi.Resource
    alarms: list[Alarm]

    def __init__(self, name: str, settings: ProdSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nativelink:storage:S3ObjectStore", name, None, opts)
        aws_settings = settings.aws
        region, replica_region = aws_settings.region, aws_settings.replica_region

        primary = _hardened_bucket(
            f"{name}-primary", settings.juicefs.bucket_name, region, settings, aws_settings, self
        )
        replica = _hardened_bucket(
            f"{name}-replica", settings.replica_bucket_name(), replica_region, settings, aws_settings, self
        )

        role = aws.iam.Role(
            f"{name}-replication",
            description=f"S3 replication of {settings.juicefs.bucket_name} to {replica_region}",
            assume_role_policy=service_trust_policy("s3.amazonaws.com"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        role_policy = aws.iam.RolePolicy(
            f"{name}-replication",
            role=role.id,
            policy=replication_policy(primary, replica, region, replica_region),
            opts=pulumi.ResourceOptions(parent=self),
        )
        depends: Sequence[pulumi.Resource] = [primary.versioning, replica.versioning, role_policy]
        aws.s3.BucketReplicationConfig(
            f"{name}-replication",
            bucket=primary.bucket.id,
            region=region,
            role=role.arn,
            rules=[
                {
                    "id": REPLICATION_RULE_ID,
                    "status": "Enabled",
                    "priority": 1,
                    "filter": {"prefix": ""},
                    # Keeps the replica a mirror: JuiceFS deletes blocks it no longer references.
                    "delete_marker_replication": {"status": "Enabled"},
                    "source_selection_criteria": {"sse_kms_encrypted_objects": {"status": "Enabled"}},
                    "destination": {
                        "bucket": replica.bucket.arn,
                        "storage_class": "STANDARD",
                        "encryption_configuration": {"replica_kms_key_id": replica.key.arn},
                        # CloudWatch replication metrics, so failed replications can raise an alarm.
                        "metrics": {"status": "Enabled"},
                    },
                }
            ],
            # S3 refuses a replication configuration until both buckets are versioned.
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends)),
        )

        access = JuiceFsS3Access(
            f"{name}-access",
            settings,
            bucket_arn=primary.bucket.arn,
            key_arn=primary.key.arn,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.storage = "s3"
        self.bucket_name = primary.bucket.bucket
        self.replica_bucket_name = replica.bucket.bucket
        self.bucket_url = primary.bucket.bucket.apply(lambda bucket: s3_bucket_url(bucket, region))
        self.access_key = access.access_key
        self.secret_key = access.secret_key
        self.role_arn = access.role_arn
        self.identity = s3_identity(access)
        self.access_policy = access.policy
        self.alarms = s3_replication_alarms(primary.bucket.bucket, replica.bucket.bucket, REPLICATION_RULE_ID)
        self.register_outputs(
            {
                "bucketUrl": self.bucket_url,
                "bucketName": self.bucket_name,
                "replicaBucketName": self.replica_bucket_name,
            }
        )
