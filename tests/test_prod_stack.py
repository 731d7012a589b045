"""The prod stack under mocks, built from the real Pulumi.prod.yaml: guardrails on the registered inputs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pulumi
import pytest

from components.juicefs.backup import dump_script
from components.juicefs.commands import forget_stored_keys_script
from components.juicefs.encryption_key import ENCRYPT_KEY_COMMAND
from components.nativelink import layout
from components.settings import ConfigError, ProdSettings, parse_settings
from components.stack import StackSecrets
from tests.graph import input_sources
from tests.mocks import RecordingMocks, is_secret, plaintext_strings, reveal
from tests.netpol import Address, Peer, Pod, Policies
from tests.stacks import (
    ROOT,
    TEST_CA_BUNDLE,
    build,
    build_fresh,
    merged,
    prod_config,
    prod_stack_settings,
    resolve_exports,
    stack_config,
)

NODE_SG = "sg-0123456789abcdef0"

SUPPLIED_KUBECONFIG = "apiVersion: v1\nkind: Config\nusers: [{name: ci, user: {token: supplied-kube-token-4711}}]\n"
SUPPLIED_RSA_KEY = (
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nsupplied-encrypted-rsa-material-0815\n-----END ENCRYPTED PRIVATE KEY-----\n"
)
SUPPLIED_PASSPHRASE = "supplied-passphrase-value-9182"
# What the mocks compute for generated secrets (tests/mocks.py); none may surface in plaintext.
GENERATED_MARKERS = ("generated-", "PRIVATE KEY")
SUPPLIED_MARKERS = ("supplied-kube-token-4711", "supplied-encrypted-rsa-material-0815", SUPPLIED_PASSPHRASE)

BUCKET = "aws:s3/bucket:Bucket"
KMS_KEY = "aws:kms/key:Key"
SECRET = "kubernetes:core/v1:Secret"
STORAGE_CLASS = "kubernetes:storage.k8s.io/v1:StorageClass"
CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"


# ---- config
SERVICE = "kubernetes:core/v1:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def prod_settings(engine: str = "redis", **overrides: Any) -> ProdSettings:
    """Pulumi.prod.yaml's settings on the metadata engine `engine`, with `overrides` merged in."""
    return prod_stack_settings(**merged({"aws": {"metadataEngine": engine}}, overrides))


def supplied_secrets(**changes: pulumi.Output[str] | None) -> StackSecrets:
    values: dict[str, pulumi.Output[str] | None] = {
        "kubeconfig": pulumi.Output.secret(SUPPLIED_KUBECONFIG),
        "juicefs_rsa_key": pulumi.Output.secret(SUPPLIED_RSA_KEY),
        "juicefs_passphrase": pulumi.Output.secret(SUPPLIED_PASSPHRASE),
    }
    values.update(changes)
    return StackSecrets(**values)


GENERATED_KEY = {"juicefs_rsa_key": None, "juicefs_passphrase": None}


# ---- running the program under mocks


@pytest.fixture(params=["memorydb", "redis", "postgres"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def statements(policy: Any) -> list[dict[str, Any]]:
    return list(json.loads(reveal(policy))["Statement"])


# ---- S3


def test_prod_yaml_is_valid_and_pins_the_dev_versions() -> None:
    settings = parse_settings(prod_config())
    dev = stack_config("dev")["versions"]
    assert settings.platform == "aws"
    assert settings.juicefs.encrypt
    assert settings.allow_insecure == []
    assert prod_config()["versions"] == dev


def test_buckets_are_encrypted_versioned_private_and_replicated(mocks: RecordingMocks, engine: str) -> None:
    settings = prod_settings(engine)
    assert settings.aws is not None
    build(mocks, settings, supplied_secrets())

    primary = mocks.one(BUCKET, "cas-store-primary")
    replica = mocks.one(BUCKET, "cas-store-replica")
    assert primary.inputs["bucket"] == settings.juicefs.bucket_name
    assert primary.inputs["region"] == settings.aws.region
    assert replica.inputs["region"] == settings.aws.replica_region

    for bucket in ("cas-store-primary", "cas-store-replica"):
        key = mocks.one(KMS_KEY, f"{bucket}-key")
        assert key.inputs["enableKeyRotation"] is True
        assert key.inputs["region"] == mocks.one(BUCKET, bucket).inputs["region"]
        (rule,) = mocks.one(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            f"{bucket}-sse",
        ).inputs["rules"]
        assert rule["applyServerSideEncryptionByDefault"] == {
            "sseAlgorithm": "aws:kms",
            "kmsMasterKeyId": f"arn:aws:mock:::{bucket}-key",
        }
        assert rule["bucketKeyEnabled"] is True
        versioning = mocks.one("aws:s3/bucketVersioning:BucketVersioning", f"{bucket}-versioning")
        assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}
        block = mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", f"{bucket}-public-access")
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
            assert block.inputs[flag] is True, flag
        ownership = mocks.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", f"{bucket}-ownership")
        assert ownership.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
        (deny,) = statements(mocks.one("aws:s3/bucketPolicy:BucketPolicy", f"{bucket}-tls-only").inputs["policy"])
        assert deny["Effect"] == "Deny"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        lifecycle, dumps = mocks.one(
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", f"{bucket}-lifecycle"
        ).inputs["rules"]
        assert lifecycle["status"] == "Enabled"
        assert lifecycle["noncurrentVersionExpiration"] == {
            "noncurrentDays": settings.aws.noncurrent_version_expiration_days
        }
        # Metadata dumps expire in both regions (the replica bucket gets them by replication).
        assert dumps["filter"] == {"prefix": "metadata-dumps/"}
        assert dumps["expiration"] == {"days": settings.juicefs.metadata_dump_retention_days}

    replication = mocks.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig", "cas-store-replication")
    (rule,) = replication.inputs["rules"]
    assert rule["status"] == "Enabled"
    assert rule["destination"]["bucket"] == "arn:aws:mock:::cas-store-replica"
    assert rule["destination"]["encryptionConfiguration"] == {"replicaKmsKeyId": "arn:aws:mock:::cas-store-replica-key"}
    assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}
    assert replication.inputs["region"] == settings.aws.region
    for side in ("primary", "replica"):
        versioning = mocks.one("aws:s3/bucketVersioning:BucketVersioning", f"cas-store-{side}-versioning")
        assert any(dep is versioning.resource for dep in replication.depends_on), side


def test_replication_role_is_least_privilege(mocks: RecordingMocks) -> None:
    settings = prod_settings()
    assert settings.aws is not None
    build(mocks, settings, supplied_secrets())
    trust = json.loads(mocks.one("aws:iam/role:Role", "cas-store-replication").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}
    by_sid = {
        s["Sid"]: s
        for s in statements(mocks.one("aws:iam/rolePolicy:RolePolicy", "cas-store-replication").inputs["policy"])
    }
    assert set(by_sid) == {
        "SourceBucket",
        "SourceObjects",
        "ReplicaObjects",
        "DecryptSource",
        "EncryptReplica",
    }
    assert by_sid["SourceBucket"]["Resource"] == "arn:aws:mock:::cas-store-primary"
    assert by_sid["SourceObjects"]["Resource"] == "arn:aws:mock:::cas-store-primary/*"
    assert all(action.startswith("s3:GetObjectVersion") for action in by_sid["SourceObjects"]["Action"])
    assert by_sid["ReplicaObjects"]["Resource"] == "arn:aws:mock:::cas-store-replica/*"
    assert all(action.startswith("s3:Replicate") for action in by_sid["ReplicaObjects"]["Action"])
    assert by_sid["DecryptSource"]["Action"] == "kms:Decrypt"
    assert by_sid["DecryptSource"]["Resource"] == "arn:aws:mock:::cas-store-primary-key"
    assert by_sid["EncryptReplica"]["Action"] == "kms:Encrypt"
    assert by_sid["EncryptReplica"]["Resource"] == "arn:aws:mock:::cas-store-replica-key"
    for statement in by_sid.values():
        assert "*" not in json.dumps(statement["Action"]), statement


def test_juicefs_s3_access_is_scoped_to_the_primary_bucket(mocks: RecordingMocks) -> None:
    build(mocks, prod_settings(), supplied_secrets())
    policy = statements(mocks.one("aws:iam/userPolicy:UserPolicy", "cas-store-access-s3").inputs["policy"])
    resources = {json.dumps(s["Resource"]) for s in policy}
    assert resources == {
        '"arn:aws:mock:::cas-store-primary"',
        '"arn:aws:mock:::cas-store-primary/*"',
        '"arn:aws:mock:::cas-store-primary-key"',
    }
    assert not mocks.of_type("aws:iam/role:Role")[1:], "only the replication role exists on the IAM-user path"


def test_irsa_binds_the_role_to_the_mount_pods_service_account(mocks: RecordingMocks) -> None:
    provider_url = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE1234"
    settings = prod_settings(
        aws={
            "oidcProviderArn": f"arn:aws:iam::123456789012:oidc-provider/{provider_url}",
            "oidcProviderUrl": provider_url,
        }
    )
    build(mocks, settings, supplied_secrets())
    assert not mocks.of_type("aws:iam/user:User")
    assert not mocks.of_type("aws:iam/accessKey:AccessKey")
    (trust,) = statements(mocks.one("aws:iam/role:Role", "cas-store-access-irsa").inputs["assumeRolePolicy"])
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    # The CSI node plugin's account too: mount pods of a volume provisioned before IRSA run as it.
    assert trust["Condition"]["StringEquals"] == {
        f"{provider_url}:sub": [
            "system:serviceaccount:kube-system:juicefs-mount-nativelink",
            "system:serviceaccount:kube-system:juicefs-csi-node-sa",
        ],
        f"{provider_url}:aud": "sts.amazonaws.com",
    }
    release = mocks.one("kubernetes:helm.sh/v3:Release", "juicefs-csi-driver")
    assert release.inputs["values"]["serviceAccount"]["node"] == {
        "name": "juicefs-csi-node-sa",
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:mock:::cas-store-access-irsa"},
    }
    account = mocks.one("kubernetes:core/v1:ServiceAccount", "juicefs-mount-sa")
    assert account.inputs["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:mock:::cas-store-access-irsa"
    }
    storage_class = mocks.one("kubernetes:storage.k8s.io/v1:StorageClass", "juicefs-storage-class")
    assert storage_class.inputs["parameters"]["juicefs/mount-service-account"] == "juicefs-mount-nativelink"
    data = reveal(mocks.one(SECRET, "juicefs-credentials").inputs["stringData"])
    assert "access-key" not in data
    assert "secret-key" not in data


# ---- metadata engines


def ingress_only_from_nodes(mocks: RecordingMocks, port: int) -> None:
    group = mocks.one("aws:ec2/securityGroup:SecurityGroup", "metadata-sg")
    assert "ingress" not in group.inputs
    (rule,) = mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.inputs["securityGroupId"] == "metadata-sg-id"
    assert rule.inputs["referencedSecurityGroupId"] == NODE_SG
    assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (port, port, "tcp")
    assert "cidrIpv4" not in rule.inputs
    assert "cidrIpv6" not in rule.inputs


def test_elasticache_is_tls_encrypted_private_and_never_evicts(mocks: RecordingMocks) -> None:
    settings = prod_settings("redis")
    assert settings.aws is not None
    build(mocks, settings, supplied_secrets())
    group = mocks.one("aws:elasticache/replicationGroup:ReplicationGroup", "metadata-redis")
    inputs = group.inputs
    assert inputs["transitEncryptionEnabled"] is True
    assert inputs["transitEncryptionMode"] == "required"
    assert inputs["atRestEncryptionEnabled"] is True
    assert inputs["kmsKeyId"] == "arn:aws:mock:::metadata-key"
    assert is_secret(inputs["authToken"])
    assert inputs["multiAzEnabled"] is True
    assert inputs["automaticFailoverEnabled"] is True
    assert inputs["numCacheClusters"] == 1 + settings.aws.elasticache.replicas
    assert inputs["snapshotRetentionLimit"] == settings.aws.elasticache.snapshot_retention_days
    assert inputs["securityGroupIds"] == ["metadata-sg-id"]
    params = mocks.one("aws:elasticache/parameterGroup:ParameterGroup", "metadata-params")
    assert {"name": "maxmemory-policy", "value": "noeviction"} in params.inputs["parameters"]
    assert params.inputs["family"] == "redis7"
    assert mocks.one(KMS_KEY, "metadata-key").inputs["enableKeyRotation"] is True
    ingress_only_from_nodes(mocks, 6379)
    data = reveal(mocks.one(SECRET, "juicefs-credentials").inputs["stringData"])
    assert data["metaurl"] == "rediss://master.metadata-redis.cache.amazonaws.com:6379/1"
    assert json.loads(data["envs"])["META_PASSWORD"] == "generated-metadata-auth-token-password"


def test_memorydb_is_one_shard_over_tls_with_an_acl_user_and_never_evicts(mocks: RecordingMocks) -> None:
    settings = prod_settings("memorydb")
    build(mocks, settings, supplied_secrets())
    inputs = mocks.one("aws:memorydb/cluster:Cluster", "metadata-memorydb").inputs
    assert inputs["tlsEnabled"] is True
    assert inputs["kmsKeyArn"] == "arn:aws:mock:::metadata-key"
    # JuiceFS keeps every key in the slot of {1}: one shard, replicas in other zones for failover.
    assert (inputs["numShards"], inputs["numReplicasPerShard"]) == (1, settings.aws.memorydb.replicas)
    assert (inputs["engine"], inputs["engineVersion"]) == ("redis", "7.1")
    assert inputs["snapshotRetentionLimit"] == settings.aws.memorydb.snapshot_retention_days
    assert inputs["finalSnapshotName"] == "nativelink-test-memorydb-final"
    assert inputs["securityGroupIds"] == ["metadata-sg-id"]
    subnets = mocks.one("aws:memorydb/subnetGroup:SubnetGroup", "metadata-subnets").inputs
    assert subnets["subnetIds"] == settings.aws.subnet_ids
    acl = mocks.one("aws:memorydb/acl:Acl", "metadata-acl")
    assert inputs["aclName"] == "metadata-acl-name"
    user = mocks.one("aws:memorydb/user:User", "metadata-user").inputs
    assert acl.inputs["userNames"] == [user["userName"]] == ["nativelink-juicefs-test"]
    assert user["accessString"] == "on ~* &* +@all"
    assert is_secret(user["authenticationMode"])
    assert reveal(user["authenticationMode"]) == {
        "type": "password",
        "passwords": ["generated-metadata-password-password"],
    }
    params = mocks.one("aws:memorydb/parameterGroup:ParameterGroup", "metadata-params").inputs
    assert {"name": "maxmemory-policy", "value": "noeviction"} in params["parameters"]
    assert params["family"] == "memorydb_redis7"
    ingress_only_from_nodes(mocks, 6379)
    # The user in the URL, its password in the environment; TLS against public roots.
    data = reveal(mocks.one(SECRET, "juicefs-credentials").inputs["stringData"])
    assert data["metaurl"] == (
        "rediss://nativelink-juicefs-test@clustercfg.metadata-memorydb.memorydb.amazonaws.com:6379/1"
        "?max-retry-backoff=1s"
    )
    assert json.loads(data["envs"])["META_PASSWORD"] == "generated-metadata-password-password"


def test_rds_is_encrypted_protected_private_and_forces_tls(mocks: RecordingMocks) -> None:
    settings = prod_settings("postgres")
    assert settings.aws is not None
    build(mocks, settings, supplied_secrets())
    inputs = mocks.one("aws:rds/instance:Instance", "metadata-postgres").inputs
    assert inputs["storageEncrypted"] is True
    # Major only: RDS applies minor upgrades in its maintenance window (autoMinorVersionUpgrade).
    assert (inputs["engineVersion"], inputs["autoMinorVersionUpgrade"]) == ("16", True)
    assert inputs["kmsKeyId"] == "arn:aws:mock:::metadata-key"
    assert inputs["deletionProtection"] is True
    assert inputs["publiclyAccessible"] is False
    assert inputs["multiAz"] is True
    assert inputs["backupRetentionPeriod"] == settings.aws.rds.backup_retention_days
    assert inputs["skipFinalSnapshot"] is False
    assert inputs["finalSnapshotIdentifier"] == "nativelink-test-postgres-final"
    assert is_secret(inputs["password"])
    assert inputs["vpcSecurityGroupIds"] == ["metadata-sg-id"]
    params = mocks.one("aws:rds/parameterGroup:ParameterGroup", "metadata-params")
    assert params.inputs["family"] == "postgres16"
    assert [(p["name"], p["value"]) for p in params.inputs["parameters"]] == [("rds.force_ssl", "1")]
    ingress_only_from_nodes(mocks, 5432)

    # The CA bundle reaches the mount pod through the CSI Secret's `configs`.
    data = reveal(mocks.one(SECRET, "juicefs-credentials").inputs["stringData"])
    assert data["metaurl"] == (
        "postgres://juicefs@metadata-postgres.rds.amazonaws.com:5432/juicefs"
        "?sslmode=verify-full&sslrootcert=%2Fetc%2Fjuicefs%2Frds-ca%2Frds-ca-bundle.pem"
    )
    configs = json.loads(data["configs"])
    assert configs == {"juicefs-nativelink-credentials-rds-ca": "/etc/juicefs/rds-ca"}
    ca = mocks.one(SECRET, "juicefs-rds-ca")
    assert ca.inputs["metadata"] == {
        "name": "juicefs-nativelink-credentials-rds-ca",
        "namespace": "kube-system",
    }
    bundle = (ROOT / TEST_CA_BUNDLE).read_text()
    assert reveal(ca.inputs["stringData"]) == {"rds-ca-bundle.pem": bundle}
    # The node plugin (volume UUID at NodePublish) and the controller (quota at provisioning and expansion)
    # run `juicefs` against the same metaurl, so they mount the bundle at the same path, after it exists.
    release = mocks.one("kubernetes:helm.sh/v3:Release", "juicefs-csi-driver")
    for role in ("node", "controller"):
        values = release.inputs["values"][role]
        assert values["extraVolumes"] == [
            {"name": "rds-ca", "secret": {"secretName": "juicefs-nativelink-credentials-rds-ca"}}
        ], role
        assert values["extraVolumeMounts"] == [
            {"name": "rds-ca", "mountPath": "/etc/juicefs/rds-ca", "readOnly": True}
        ], role
    assert ca.resource in release.depends_on


# ---- JuiceFS on Kubernetes


def test_csi_driver_secret_storage_class_and_claim(mocks: RecordingMocks, engine: str) -> None:
    settings = prod_settings(engine)
    build(mocks, settings, supplied_secrets())
    release = mocks.one("kubernetes:helm.sh/v3:Release", "juicefs-csi-driver")
    assert release.inputs["chart"] == "juicefs-csi-driver"
    assert release.inputs["version"] == settings.versions.juicefs_csi_chart
    assert release.inputs["repositoryOpts"] == {"repo": "https://juicedata.github.io/charts/"}
    assert release.inputs["namespace"] == "kube-system"
    assert release.inputs["values"]["defaultMountImage"] == {"ce": settings.versions.juicefs}
    # The driver's ConfigMap outranks what a PV recorded, so every mount pod runs the pinned client.
    assert release.inputs["values"]["globalConfig"] == {
        "enabled": True,
        "mountPodPatch": [
            {
                "ceMountImage": settings.versions.juicefs,
                # 100gb of cache, 10% kept free, 10% for the filesystem: 114 GiB of its own block volume.
                "cacheDirs": [{"type": "Ephemeral", "storage": "114Gi", "storageClassName": "gp3"}],
                # Here, not on the StorageClass, whose options reach only newly provisioned volumes.
                "mountOptions": ["cache-size=95367", "free-space-ratio=0.1", "no-usage-report"],
            }
        ],
    }
    assert release.inputs["values"]["storageClasses"] == []
    if engine != "postgres":
        # MemoryDB's and ElastiCache's certificates chain to public roots the driver's image trusts.
        assert release.inputs["values"]["node"]["extraVolumes"] == []
    read = mocks.one(STORAGE_CLASS, "block-storage-class")
    assert read.resource is not None and read.resource in release.depends_on

    secret = mocks.one(SECRET, "juicefs-credentials")
    assert not mocks.of_type("kubernetes:core/v1:ConfigMap")[3:], "only the three NativeLink configs"
    assert is_secret(secret.inputs["stringData"]) or all(is_secret(v) for v in secret.inputs["stringData"].values())
    data = reveal(secret.inputs["stringData"])
    assert data["name"] == settings.juicefs.volume_name
    assert data["storage"] == "s3"
    assert data["bucket"] == f"https://{settings.juicefs.bucket_name}.s3.us-east-1.amazonaws.com"
    # The key reaches mount pods through their environment; `access-key`/`secret-key` would go to
    # `juicefs format`, which stores them in the volume, where they outlive the key.
    assert "access-key" not in data and "secret-key" not in data
    assert data["encrypt_rsa_key"] == SUPPLIED_RSA_KEY
    assert data["format-options"] == "trash-days=1,block-size=4096,compress=lz4,encrypt-algo=aes256gcm-rsa"
    envs = json.loads(data["envs"])
    assert set(envs) == {"META_PASSWORD", "JFS_RSA_PASSPHRASE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert envs["AWS_ACCESS_KEY_ID"] == "cas-store-access-key-id"
    assert envs["AWS_SECRET_ACCESS_KEY"] == "generated-cas-store-access-key-secret-key"
    assert envs["JFS_RSA_PASSPHRASE"] == SUPPLIED_PASSPHRASE
    assert envs["META_PASSWORD"] not in data["metaurl"], "the password travels in META_PASSWORD, never in the URL"

    storage_class = mocks.one("kubernetes:storage.k8s.io/v1:StorageClass", "juicefs-storage-class")
    assert storage_class.inputs["provisioner"] == "csi.juicefs.com"
    assert storage_class.inputs["reclaimPolicy"] == "Retain"
    parameters = storage_class.inputs["parameters"]
    for role in ("provisioner", "node-publish", "controller-expand"):
        assert parameters[f"csi.storage.k8s.io/{role}-secret-name"] == "juicefs-nativelink-credentials"
        assert parameters[f"csi.storage.k8s.io/{role}-secret-namespace"] == "kube-system"
    assert "juicefs/mount-image" not in parameters
    assert storage_class.inputs["allowVolumeExpansion"] is True
    assert "mountOptions" not in storage_class.inputs

    claim = mocks.one("kubernetes:core/v1:PersistentVolumeClaim", "juicefs-claim")
    assert claim.inputs["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim.inputs["spec"]["resources"] == {"requests": {"storage": settings.kubernetes.cas_volume_size}}
    assert claim.inputs["spec"]["storageClassName"] == "juicefs-nativelink"
    assert claim.inputs["metadata"]["namespace"] == settings.kubernetes.namespace


def test_the_claim_outlives_a_replaced_secret_or_storage_class(mocks: RecordingMocks, engine: str) -> None:
    """The credentials Secret is replaced whenever its data changes (rotated keys, trashDays) and the
    StorageClass whenever its parameters do. Both have fixed names, so each goes before its replacement
    comes, and the engine replaces with it whatever takes an input from it: the claim must not, or every
    such change would fail on the protected claim (or, unprotected, swap the CAS for an empty one)."""
    build(mocks, prod_settings(engine), supplied_secrets())
    claim = mocks.one(CLAIM, "juicefs-claim")
    storage_class = mocks.one(STORAGE_CLASS, "juicefs-storage-class")
    assert input_sources(mocks, claim, "spec") == set()
    assert input_sources(mocks, claim, "metadata") == {"nativelink-namespace"}
    assert input_sources(mocks, storage_class, "parameters") == set()
    # Still created in order: Secret and driver, then the StorageClass, then the claim.
    assert {dep._name for dep in storage_class.depends_on} >= {"juicefs-csi-driver", "juicefs-credentials"}
    assert {dep._name for dep in claim.depends_on} >= {"juicefs-storage-class", "juicefs-credentials"}


def test_generated_key_is_passphrase_protected_and_exported_as_secret(mocks: RecordingMocks) -> None:
    """Whoever reads the metadata (which keeps a copy of the PEM) and the bucket must not be able to decrypt."""
    exports = resolve_exports(build(mocks, prod_settings(), supplied_secrets(**GENERATED_KEY)))
    key = mocks.one("tls:index/privateKey:PrivateKey", "juicefs-rsa-key")
    assert (key.inputs["algorithm"], key.inputs["rsaBits"]) == ("RSA", 2048)
    passphrase = mocks.one("random:index/randomPassword:RandomPassword", "juicefs-rsa-passphrase")
    assert key.protect and passphrase.protect
    assert passphrase.inputs["length"] >= 32
    protect = mocks.one("command:local:Command", "juicefs-rsa-key-protected")
    assert protect.inputs["create"] == ENCRYPT_KEY_COMMAND
    # Key on stdin, passphrase in the environment, nothing logged.
    plain_pem = key.outputs["privateKeyPem"]
    assert reveal(protect.inputs["stdin"]) == plain_pem
    assert plain_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert reveal(protect.inputs["environment"]) == {"JFS_RSA_PASSPHRASE": "generated-juicefs-rsa-passphrase-password"}
    assert protect.inputs["logging"] == "none"
    assert protect.opts is not None and "stdout" in (protect.opts.additional_secret_outputs or [])

    data = reveal(mocks.one(SECRET, "juicefs-credentials").inputs["stringData"])
    assert data["encrypt_rsa_key"].startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert json.loads(data["envs"])["JFS_RSA_PASSPHRASE"] == "generated-juicefs-rsa-passphrase-password"
    for output, value in (
        ("juicefsRsaKey", plain_pem),
        ("juicefsRsaPassphrase", "generated-juicefs-rsa-passphrase-password"),
    ):
        assert exports[output] == (True, value), output


def test_a_passphrase_alone_protects_the_generated_key(mocks: RecordingMocks) -> None:
    build(mocks, prod_settings(), supplied_secrets(juicefs_rsa_key=None))
    # The generated one exists (protected, it must never drop out of the program) but is not used.
    mocks.one("random:index/randomPassword:RandomPassword", "juicefs-rsa-passphrase")
    protect = mocks.one("command:local:Command", "juicefs-rsa-key-protected")
    assert reveal(protect.inputs["environment"]) == {"JFS_RSA_PASSPHRASE": SUPPLIED_PASSPHRASE}
    data = reveal(mocks.one(SECRET, "juicefs-credentials").inputs["stringData"])
    assert json.loads(data["envs"])["JFS_RSA_PASSPHRASE"] == SUPPLIED_PASSPHRASE


# ---- NativeLink on Kubernetes


def workload(mocks: RecordingMocks, typ: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec, the single container) of a workload."""
    spec = mocks.one(typ, name).inputs["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    return spec, container


def test_nativelink_workloads(mocks: RecordingMocks, engine: str) -> None:
    settings = prod_settings(engine)
    kube = settings.kubernetes
    build(mocks, settings, supplied_secrets())

    cas, cas_container = workload(mocks, "kubernetes:apps/v1:StatefulSet", "nativelink-cas")
    assert cas["replicas"] == 1
    (data_mount,) = [m for m in cas_container["volumeMounts"] if m["name"] == "cas-data"]
    assert data_mount["mountPath"] == layout.CSI_CAS_DATA.filesystem
    assert data_mount["mountPropagation"] == "HostToContainer"
    (data_volume,) = [v for v in cas["template"]["spec"]["volumes"] if v["name"] == "cas-data"]
    assert data_volume["persistentVolumeClaim"] == {"claimName": "nativelink-cas"}
    assert cas["template"]["metadata"]["annotations"]["nativelink-juicefs/mount-image"] == settings.versions.juicefs

    scheduler, scheduler_container = workload(mocks, "kubernetes:apps/v1:Deployment", "nativelink-scheduler")
    assert scheduler["replicas"] == 1
    assert scheduler["strategy"] == {"type": "Recreate"}

    workers, worker_container = workload(mocks, "kubernetes:apps/v1:Deployment", "nativelink-worker")
    assert workers["replicas"] == settings.workers.count
    (root,) = [v for v in workers["template"]["spec"]["volumes"] if v["name"] == "worker-root"]
    # A block volume per worker, not the node's disk (EKS's default node disk is 20 GiB).
    assert root["ephemeral"]["volumeClaimTemplate"]["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": kube.block_storage_class,
        "resources": {"requests": {"storage": kube.worker_ephemeral_storage}},
    }
    assert mocks.one(STORAGE_CLASS, "block-storage-class").resource in mocks.named("nativelink-worker").depends_on
    (root_mount,) = [m for m in worker_container["volumeMounts"] if m["name"] == "worker-root"]
    assert root_mount["mountPath"] == layout.WORKER_ROOT == "/worker"
    (worker_name,) = [e for e in worker_container["env"] if e["name"] == "WORKER_NAME"]
    assert worker_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert not mocks.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")

    for spec, container, resources in (
        (cas, cas_container, kube.cas_resources),
        (scheduler, scheduler_container, kube.scheduler_resources),
        (workers, worker_container, kube.worker_resources),
    ):
        assert container["args"] == [layout.CONFIG_PATH]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["httpGet"] == {"path": "/status", "port": 50081}, probe
        assert container["resources"]["limits"] == {
            "cpu": resources.cpu_limit,
            "memory": resources.memory_limit,
        }
        assert container["resources"]["requests"]["cpu"] == resources.cpu_request
        assert container["resources"]["requests"]["memory"] == resources.memory_request
        assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == kube.termination_grace_period_s
    assert "ephemeral-storage" not in worker_container["resources"]["requests"]

    # CAS and scheduler run the NativeLink image as it is; workers run the same release's binary,
    # copied in by an init container, inside the toolchain image.
    for container in (cas_container, scheduler_container):
        assert container["image"] == settings.versions.nativelink
        assert "command" not in container
    assert worker_container["image"] == settings.versions.worker
    assert worker_container["command"] == [layout.WORKER_BINARY]
    (copy,) = workers["template"]["spec"]["initContainers"]
    assert copy["image"] == settings.versions.nativelink_worker_init
    assert copy["args"] == [layout.WORKER_BINARY]
    assert copy["volumeMounts"] == [{"name": "nativelink-binary", "mountPath": layout.WORKER_BINARY_DIR}]
    (binary_mount,) = [m for m in worker_container["volumeMounts"] if m["name"] == "nativelink-binary"]
    assert binary_mount == {"name": "nativelink-binary", "mountPath": layout.WORKER_BINARY_DIR, "readOnly": True}

    ports = {
        record.inputs["metadata"]["name"]: [(p["port"], p["name"]) for p in record.inputs["spec"]["ports"]]
        for record in mocks.of_type("kubernetes:core/v1:Service")
    }
    assert ports == {
        "nativelink-cas": [(50051, "grpc")],
        "nativelink-cas-workers": [(50071, "grpc-workers")],
        "nativelink-cas-pods": [(50051, "grpc")],
        "nativelink-scheduler": [(50052, "grpc")],
        "nativelink-worker-api": [(50061, "worker-api")],
        # The load balancers (kubernetes.exposure): client ports only.
        "nativelink-cas-external": [(50051, "grpc")],
        "nativelink-scheduler-external": [(50052, "grpc")],
    }
    services = {record.inputs["metadata"]["name"]: record.inputs["spec"] for record in mocks.of_type(SERVICE)}
    assert {name: spec.get("type") for name, spec in services.items() if name != "nativelink-cas-pods"} == {
        "nativelink-cas": "ClusterIP",
        "nativelink-cas-workers": "ClusterIP",
        "nativelink-scheduler": "ClusterIP",
        "nativelink-worker-api": "ClusterIP",
        "nativelink-cas-external": "LoadBalancer",
        "nativelink-scheduler-external": "LoadBalancer",
    }
    # The StatefulSet's governing service is headless, as Kubernetes requires.
    assert cas["serviceName"] == "nativelink-cas-pods"
    assert services["nativelink-cas-pods"]["clusterIP"] == "None"


def test_drains_can_move_the_single_cas_server_and_scheduler(mocks: RecordingMocks) -> None:
    """minAvailable 1 on one replica refuses every eviction: drains and node-group updates would stall."""
    build(mocks, prod_settings(), supplied_secrets())
    budgets = {
        record.inputs["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]: record.inputs["spec"]
        for record in mocks.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    }
    assert budgets == {
        component: {"selector": budgets[component]["selector"], "maxUnavailable": 1}
        for component in ("cas", "scheduler", "worker")
    }
    (priority,) = mocks.of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")
    assert priority.inputs["value"] > 0 and priority.inputs["preemptionPolicy"] == "PreemptLowerPriority"
    pods = {
        name: mocks.one(typ, name).inputs["spec"]["template"]["spec"]
        for typ, name in (
            ("kubernetes:apps/v1:StatefulSet", "nativelink-cas"),
            ("kubernetes:apps/v1:Deployment", "nativelink-scheduler"),
            ("kubernetes:apps/v1:Deployment", "nativelink-worker"),
        )
    }
    name = priority.inputs["metadata"]["name"]
    assert name == "nativelink-serving-nativelink" and not name.startswith("system-")
    assert 0 < priority.inputs["value"] <= 1_000_000_000  # the API's limit for user classes
    assert pods["nativelink-cas"]["priorityClassName"] == name
    assert pods["nativelink-scheduler"]["priorityClassName"] == name
    assert priority.opts is not None and priority.opts.delete_before_replace
    assert "priorityClassName" not in pods["nativelink-worker"]


def test_up_waits_as_long_as_the_startup_probes_allow(mocks: RecordingMocks) -> None:
    """pulumi-kubernetes gives a rollout 10 minutes; the CAS server's startup probe alone allows 30, and an
    update first waits for the old pod's termination grace period."""
    settings = prod_settings()
    build(mocks, settings, supplied_secrets())
    grace = settings.kubernetes.termination_grace_period_s
    waves = {"nativelink-cas": 1, "nativelink-scheduler": 1, "nativelink-worker": -(-settings.workers.count // 2)}
    for typ, name in (
        ("kubernetes:apps/v1:StatefulSet", "nativelink-cas"),
        ("kubernetes:apps/v1:Deployment", "nativelink-scheduler"),
        ("kubernetes:apps/v1:Deployment", "nativelink-worker"),
    ):
        record = mocks.one(typ, name)
        probe = record.inputs["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
        allowed_s = probe["periodSeconds"] * probe["failureThreshold"]
        assert record.opts is not None and record.opts.custom_timeouts is not None
        timeouts = record.opts.custom_timeouts

        def seconds(limit: str | None) -> int:
            assert limit is not None and limit.endswith("m")
            return int(limit[:-1]) * 60

        assert seconds(timeouts.create) > waves[name] * allowed_s, name
        assert seconds(timeouts.update) > waves[name] * (grace + allowed_s), name
        assert seconds(timeouts.delete) > grace, name


def test_config_checksum_annotation_matches_the_config_map(mocks: RecordingMocks) -> None:
    build(mocks, prod_settings(), supplied_secrets())
    for component, typ, name in (
        ("cas", "kubernetes:apps/v1:StatefulSet", "nativelink-cas"),
        ("scheduler", "kubernetes:apps/v1:Deployment", "nativelink-scheduler"),
        ("worker", "kubernetes:apps/v1:Deployment", "nativelink-worker"),
    ):
        config_map = mocks.one("kubernetes:core/v1:ConfigMap", f"nativelink-{component}-config")
        text = config_map.inputs["data"]["config.json5"]
        pod = mocks.one(typ, name).inputs["spec"]["template"]
        assert pod["metadata"]["annotations"]["checksum/config"] == hashlib.sha256(text.encode()).hexdigest()
        (config_volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "config"]
        assert config_volume["configMap"]["name"] == config_map.inputs["metadata"].get(
            "name", f"{config_map.name}-mock"
        )
        assert "password" not in text.lower()


NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def nativelink_pod(component: str) -> Pod:
    return Pod("nativelink", {"app.kubernetes.io/name": "nativelink", "app.kubernetes.io/component": component})


CAS_POD, SCHEDULER_POD, WORKER_POD = (nativelink_pod(c) for c in ("cas", "scheduler", "worker"))
CI_POD = Pod("ci", {"app": "bazel"})
OTHER_POD = Pod("web", {"app": "shop"})
DEBUG_POD = Pod("nativelink", {"run": "debug"})
DNS_POD = Pod("kube-system", {"k8s-app": "kube-dns"})
IMDS = Address("169.254.169.254")
METADATA_ENGINE = Address("10.0.5.5")


def recorded_policies(mocks: RecordingMocks) -> Policies:
    records = mocks.of_type(NETWORK_POLICY)
    assert {record.inputs["metadata"]["namespace"] for record in records} == {"nativelink"}
    return Policies("nativelink", [record.inputs["spec"] for record in records])


@pytest.mark.parametrize(
    ("source", "destination", "port", "allowed"),
    [
        # Clients: the listed namespace and address range reach the client ports, nothing else.
        (CI_POD, CAS_POD, 50051, True),
        (CI_POD, SCHEDULER_POD, 50052, True),
        (Address("10.20.3.4"), SCHEDULER_POD, 50052, True),
        (CI_POD, CAS_POD, 50071, False),
        (CI_POD, SCHEDULER_POD, 50061, False),
        (Address("10.20.3.4"), CAS_POD, 50071, False),
        (OTHER_POD, CAS_POD, 50051, False),
        (OTHER_POD, SCHEDULER_POD, 50052, False),
        (Address("10.30.0.1"), SCHEDULER_POD, 50052, False),
        (DEBUG_POD, CAS_POD, 50051, False),
        # Workers: the writable AC and the worker API; DNS; the allowed range; nothing else.
        (WORKER_POD, CAS_POD, 50071, True),
        (WORKER_POD, SCHEDULER_POD, 50061, True),
        (WORKER_POD, DNS_POD, 53, True),
        (WORKER_POD, Address("10.99.0.7"), 443, True),
        (WORKER_POD, CAS_POD, 50051, False),
        (WORKER_POD, SCHEDULER_POD, 50052, False),
        (WORKER_POD, IMDS, 80, False),
        (WORKER_POD, METADATA_ENGINE, 6379, False),
        (WORKER_POD, Address("1.1.1.1"), 443, False),
        (WORKER_POD, WORKER_POD, 50081, False),
        # The scheduler reads the cache as a client; the CAS server talks to nobody.
        (SCHEDULER_POD, CAS_POD, 50051, True),
        (SCHEDULER_POD, CAS_POD, 50071, False),
        (SCHEDULER_POD, METADATA_ENGINE, 6379, False),
        (CAS_POD, METADATA_ENGINE, 6379, False),
        (CAS_POD, SCHEDULER_POD, 50061, False),
    ],
)
def test_network_policies(mocks: RecordingMocks, source: Peer, destination: Peer, port: int, allowed: bool) -> None:
    settings = prod_settings(
        kubernetes={"clientNamespaces": ["ci"], "clientCidrs": ["10.20.0.0/16"], "workerEgressCidrs": ["10.99.0.0/24"]}
    )
    build(mocks, settings, supplied_secrets())
    assert recorded_policies(mocks).allows(source, destination, port, "UDP" if port == 53 else "TCP") is allowed


def test_without_clients_configured_nobody_reaches_the_client_ports(mocks: RecordingMocks) -> None:
    """An empty `from` admits every source: with no clients configured the rule must be absent, not empty."""
    build(mocks, prod_settings(), supplied_secrets())
    policies = recorded_policies(mocks)
    for source in (CI_POD, OTHER_POD, Address("10.20.3.4")):
        assert not policies.allows(source, SCHEDULER_POD, 50052)
        assert not policies.allows(source, CAS_POD, 50051)
    assert policies.allows(WORKER_POD, SCHEDULER_POD, 50061)
    assert policies.allows(SCHEDULER_POD, CAS_POD, 50051)


def test_pods_run_with_least_privilege(mocks: RecordingMocks) -> None:
    build(mocks, prod_settings(), supplied_secrets())
    namespace = mocks.one("kubernetes:core/v1:Namespace", "nativelink-namespace").inputs["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "baseline"
    assert namespace["pod-security.kubernetes.io/warn"] == "restricted"
    for typ, name in (("kubernetes:apps/v1:StatefulSet", "nativelink-cas"), (DEPLOYMENT, "nativelink-scheduler")):
        pod = mocks.one(typ, name).inputs["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        security = main["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] == security["runAsGroup"] == 65532, name
        assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"], name
        assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
        assert pod["automountServiceAccountToken"] is False
    worker = mocks.one(DEPLOYMENT, "nativelink-worker").inputs["spec"]["template"]["spec"]
    (main,) = worker["containers"]
    assert main["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"],
    }
    assert "NET_RAW" not in main["securityContext"]["capabilities"]["add"]


def test_the_cas_server_owns_its_store_directories_before_it_starts(mocks: RecordingMocks) -> None:
    """Earlier releases ran it as root, so an existing volume's directories are root's."""
    settings = prod_settings()
    build(mocks, settings, supplied_secrets())
    pod = mocks.one("kubernetes:apps/v1:StatefulSet", "nativelink-cas").inputs["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == settings.versions.busybox
    assert init["command"] == [
        "find",
        "/data/jfs",
        "-maxdepth",
        "3",
        "-type",
        "d",
        "-exec",
        "chown",
        "65532:65532",
        "{}",
        "+",
    ]
    assert init["volumeMounts"] == [{"name": "cas-data", "mountPath": layout.CSI_CAS_DATA.filesystem}]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}


def test_autoscaler_owns_the_worker_count_when_enabled(mocks: RecordingMocks) -> None:
    settings = prod_settings(kubernetes={"autoscaleMaxWorkers": 10})
    build(mocks, settings, supplied_secrets())
    workers = mocks.one("kubernetes:apps/v1:Deployment", "nativelink-worker").inputs["spec"]
    assert "replicas" not in workers
    (hpa,) = mocks.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert hpa.inputs["spec"]["minReplicas"] == settings.workers.count
    assert hpa.inputs["spec"]["maxReplicas"] == 10
    assert hpa.inputs["spec"]["scaleTargetRef"]["name"] == "nativelink-worker"


def test_exports(mocks: RecordingMocks, engine: str) -> None:
    exports = resolve_exports(build(mocks, prod_settings(engine), supplied_secrets()))
    assert set(exports) == {
        "bazelFlags",
        "casEndpoint",
        "schedulerEndpoint",
        "juicefsVolume",
        "alarmTopicArn",
        "caCertificate",
        "clientCertificates",
        "inClusterBazelFlags",
        "loadBalancers",
    }
    _, flags = exports["bazelFlags"]
    # Through the internal load balancers, over TLS, with the client certificate Bazel reads from files.
    elb = "load-balancer-0123456789.elb.eu-west-1.amazonaws.com"
    assert flags == (
        f"--remote_executor=grpcs://nativelink-scheduler-{elb}:50052 "
        f"--remote_cache=grpcs://nativelink-cas-{elb}:50051 "
        "--remote_upload_local_results=false "
        "--tls_certificate=nativelink-ca.crt "
        "--tls_client_certificate=nativelink-client.crt --tls_client_key=nativelink-client.key "
        "--grpc_keepalive_time=30s"
    )
    # Pods of clientNamespaces dial the services, over the same TLS.
    assert exports["inClusterBazelFlags"][1].startswith(
        "--remote_executor=grpcs://nativelink-scheduler.nativelink.svc.cluster.local:50052 "
        "--remote_cache=grpcs://nativelink-cas.nativelink.svc.cluster.local:50051 "
    )
    assert exports["loadBalancers"][1] == {"cas": f"nativelink-cas-{elb}", "scheduler": f"nativelink-scheduler-{elb}"}
    secret, ca = exports["caCertificate"]
    assert not secret and ca.startswith("-----BEGIN CERTIFICATE-----")
    secret, clients = exports["clientCertificates"]
    assert secret and set(clients) == {"ci"}
    assert clients["ci"]["privateKey"].startswith("-----BEGIN PRIVATE KEY-----")
    assert clients["ci"]["serial"].isdigit()
    _, volume = exports["juicefsVolume"]
    assert volume["claim"] == "nativelink-cas"
    assert volume["metadataEngine"] == engine


# ---- protection and secrets


def test_stateful_resources_are_protected(mocks: RecordingMocks, engine: str) -> None:
    build(mocks, prod_settings(engine), supplied_secrets())
    for typ, name in (
        (BUCKET, "cas-store-primary"),
        (BUCKET, "cas-store-replica"),
        (KMS_KEY, "cas-store-primary-key"),
        (KMS_KEY, "cas-store-replica-key"),
        (KMS_KEY, "metadata-key"),
    ):
        record = mocks.one(typ, name)
        assert record.protect, name
        assert record.retain_on_delete, name
    engine_type, engine_name = {
        "memorydb": ("aws:memorydb/cluster:Cluster", "metadata-memorydb"),
        "redis": ("aws:elasticache/replicationGroup:ReplicationGroup", "metadata-redis"),
        "postgres": ("aws:rds/instance:Instance", "metadata-postgres"),
    }[engine]
    assert mocks.one(engine_type, engine_name).protect
    assert mocks.one("kubernetes:core/v1:PersistentVolumeClaim", "juicefs-claim").protect


@pytest.mark.parametrize("key_source", ["supplied", "generated"])
def test_no_secret_appears_in_plaintext(mocks: RecordingMocks, engine: str, key_source: str) -> None:
    secrets = supplied_secrets() if key_source == "supplied" else supplied_secrets(**GENERATED_KEY)
    exports = resolve_exports(build(mocks, prod_settings(engine), secrets))
    markers = (*GENERATED_MARKERS, *SUPPLIED_MARKERS)
    for record in mocks.resources:
        for text in plaintext_strings(record.inputs):
            assert not any(marker in text for marker in markers), f"{record.typ}::{record.name} leaks {text[:60]!r}"
    for name, (secret, value) in exports.items():
        if secret:
            continue
        text = json.dumps(value)
        assert not any(marker in text for marker in markers), f"export {name} leaks a secret"
    provider = mocks.one("pulumi:providers:kubernetes", "kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])


# ---- guardrails


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"juicefs": {"encrypt": False}}, "juicefs.encrypt"),
        ({"aws": {"metadataTls": False}}, "aws.metadataTls"),
        ({"aws": {"blockPublicAccess": False}}, "aws.blockPublicAccess"),
        ({"versions": {"nativelink": "ghcr.io/tracemachina/nativelink:latest"}}, "versions.nativelink"),
        ({"versions": {"juicefs": "juicedata/mount"}}, "versions.juicefs"),
        ({"kubernetes": {"autoscaleMaxWorkers": 2}}, "kubernetes.autoscaleMaxWorkers"),
        ({"aws": {"replicaRegion": "us-east-1"}}, "aws.replicaRegion"),
        ({"aws": {"rds": {"maxAllocatedStorageGb": 20}}}, "aws.rds.maxAllocatedStorageGb"),
        ({"aws": {"elasticache": {"engineVersion": "5.0"}}}, "aws.elasticache.engineVersion"),
        ({"juicefs": {"volumeName": "NativeLink"}}, "juicefs.volumeName"),
        ({"allowInsecure": ["everything"]}, "allowInsecure"),
        # Kubernetes refuses a container whose request is above its limit, but only during `pulumi up`.
        ({"kubernetes": {"casResources": {"cpuRequest": "6"}}}, "kubernetes.casResources.cpuRequest"),
        (
            {"kubernetes": {"workerResources": {"memoryRequest": "9000Mi"}}},
            "kubernetes.workerResources.memoryRequest",
        ),
        # RDS upgrades minors itself; a pinned minor then reads as a downgrade it refuses.
        ({"aws": {"rds": {"engineVersion": "16.4"}}}, "aws.rds.engineVersion"),
        # The kubelet would evict workers mid-build once their store outgrew the emptyDir.
        ({"workers": {"fastStoreSize": "70gb"}}, "kubernetes.workerEphemeralStorage"),
    ],
)
def test_insecure_or_inconsistent_settings_are_refused(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        prod_settings(**overrides)
    assert key in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "override"),
    [
        ({"juicefs": {"encrypt": False}}, "unencrypted-juicefs"),
        ({"aws": {"metadataTls": False}}, "plaintext-metadata"),
        ({"aws": {"blockPublicAccess": False}}, "public-bucket"),
    ],
)
def test_named_override_admits_the_insecure_setting(overrides: dict[str, Any], override: str) -> None:
    prod_settings(**overrides, allowInsecure=[override])


def test_one_resource_value_can_be_set_alone() -> None:
    """`pulumi config set --path kubernetes.casResources.cpuLimit 8` keeps the other three defaults."""
    default = prod_settings().kubernetes.cas_resources
    resources = prod_settings(kubernetes={"casResources": {"cpuLimit": "8"}}).kubernetes.cas_resources
    assert resources.cpu_limit == "8"
    assert (resources.cpu_request, resources.memory_request, resources.memory_limit) == (
        default.cpu_request,
        default.memory_request,
        default.memory_limit,
    )
    worker = prod_settings(kubernetes={"workerResources": {"memoryLimit": "16Gi"}}).kubernetes.worker_resources
    assert (worker.memory_limit, worker.memory_request) == ("16Gi", "4Gi")


def test_plaintext_metadata_override_drops_tls_and_auth(mocks: RecordingMocks) -> None:
    settings = prod_settings(aws={"metadataTls": False}, allowInsecure=["plaintext-metadata"])
    build(mocks, settings, supplied_secrets())
    inputs = mocks.one("aws:elasticache/replicationGroup:ReplicationGroup", "metadata-redis").inputs
    assert inputs["transitEncryptionEnabled"] is False
    assert "authToken" not in inputs
    data = reveal(mocks.one(SECRET, "juicefs-credentials").inputs["stringData"])
    assert data["metaurl"].startswith("redis://")
    assert "META_PASSWORD" not in json.loads(data["envs"])


def test_public_bucket_override_lifts_the_block(mocks: RecordingMocks) -> None:
    build(
        mocks,
        prod_settings(aws={"blockPublicAccess": False}, allowInsecure=["public-bucket"]),
        supplied_secrets(),
    )
    block = mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "cas-store-primary-public-access")
    assert block.inputs["blockPublicPolicy"] is False


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"juicefs_passphrase": None}, "juicefsPassphrase"),
    ],
)
def test_a_supplied_key_needs_its_passphrase(mocks: RecordingMocks, changes: dict[str, None], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(mocks, prod_settings(), supplied_secrets(**changes))
    assert key in str(error.value)
    assert not mocks.resources, "refused before any resource was registered"


def test_unencrypted_supplied_key_is_refused_without_quoting_it(mocks: RecordingMocks) -> None:
    plain = pulumi.Output.secret(
        "-----BEGIN RSA PRIVATE KEY-----\nsupplied-plain-key-material\n-----END RSA PRIVATE KEY-----"
    )
    # Checked on the secret's value, so it fails the deployment (Pulumi wraps it in a ValueError).
    with pytest.raises(ValueError) as error:
        build(mocks, prod_settings(), supplied_secrets(juicefs_rsa_key=plain))
    assert "juicefsRsaKey" in str(error.value)
    assert "supplied-plain-key-material" not in str(error.value)


def test_postgres_needs_the_committed_ca_bundle_before_any_resource() -> None:
    for bundle, problem in (
        ("certs/does-not-exist.pem", "no such file in the repository"),
        ("pyproject.toml", "not a PEM bundle of CA certificates"),
    ):
        with pytest.raises(ConfigError) as error:
            prod_settings("postgres", aws={"rds": {"caBundleFile": bundle}})
        assert f"nativelink-juicefs:aws.rds.caBundleFile = {bundle!r}: {problem}" in str(error.value)


# ---- NetworkPolicy enforcement on EKS

GET_ADDON = "aws:eks/getAddon:getAddon"


def test_network_policy_enforcement_is_checked_only_with_a_cluster_name(mocks: RecordingMocks) -> None:
    build(mocks, prod_settings(), supplied_secrets())
    assert GET_ADDON not in [token for token, _ in mocks.calls]


def test_an_eks_cluster_that_enforces_network_policy_passes(mocks: RecordingMocks) -> None:
    mocks.call_results[GET_ADDON] = {"configurationValues": json.dumps({"enableNetworkPolicy": "true"})}
    build(mocks, prod_settings(aws={"eksClusterName": "builds"}), supplied_secrets())
    (args,) = [args for token, args in mocks.calls if token == GET_ADDON]
    assert (args["clusterName"], args["addonName"]) == ("builds", "vpc-cni")
    assert mocks.of_type(NETWORK_POLICY)


@pytest.mark.parametrize("values", [None, "{}", json.dumps({"enableNetworkPolicy": "false"}), "not json"])
def test_an_eks_cluster_that_ignores_network_policy_is_refused(mocks: RecordingMocks, values: str | None) -> None:
    if values is not None:
        mocks.call_results[GET_ADDON] = {"configurationValues": values}
    with pytest.raises(ConfigError) as error:
        build(mocks, prod_settings(aws={"eksClusterName": "builds"}), supplied_secrets())
    message = str(error.value)
    assert message.startswith("nativelink-juicefs:aws.eksClusterName = 'builds': the vpc-cni add-on does not enforce")
    assert "aws eks update-addon --cluster-name builds --addon-name vpc-cni" in message
    assert not mocks.of_type(NETWORK_POLICY) and not mocks.of_type(BUCKET), "refused before the tier's resources"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"kubernetes": {"clientNamespaces": ["ci", "ci"]}}, "kubernetes.clientNamespaces"),
        ({"kubernetes": {"clientCidrs": ["10.0.0.0/8", "10.0.0.0/8"]}}, "kubernetes.clientCidrs"),
        ({"kubernetes": {"clientCidrs": ["10.0.0.1/8"]}}, "kubernetes.clientCidrs"),
        ({"kubernetes": {"workerEgressCidrs": ["everything"]}}, "kubernetes.workerEgressCidrs"),
        ({"kubernetes": {"clientNamespaces": ["CI"]}}, "kubernetes.clientNamespaces"),
        ({"aws": {"eksClusterName": "-bad"}}, "aws.eksClusterName"),
    ],
)
def test_bad_network_settings_are_refused(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        prod_settings(**overrides)
    assert f"nativelink-juicefs:{key}" in str(error.value)


# ---- JuiceFS administration: stored keys, metadata dumps

IRSA: dict[str, Any] = {
    "aws": {
        "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EX",
        "oidcProviderUrl": "oidc.eks.us-east-1.amazonaws.com/id/EX",
    }
}
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"


def admin_pod(mocks: RecordingMocks, typ: str, name: str) -> dict[str, Any]:
    spec = mocks.one(typ, name).inputs["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if typ == CRON_JOB else spec["template"]
    return dict(template["spec"])


def test_switching_to_irsa_forgets_stored_keys_before_the_cas_server_mounts(mocks: RecordingMocks) -> None:
    """Keys an earlier release stored win over IRSA; once Pulumi deletes the IAM user's key, S3 says 403."""
    build(mocks, prod_settings(), supplied_secrets())
    user_identity = mocks.one("kubernetes:apps/v1:StatefulSet", "nativelink-cas").inputs["spec"]["template"]
    job = mocks.one(JOB, "juicefs-admin-forget-stored-keys")
    pod = admin_pod(mocks, JOB, "juicefs-admin-forget-stored-keys")
    (container,) = pod["containers"]
    assert container["command"] == ["/bin/sh", "-c", forget_stored_keys_script()]
    assert container["envFrom"] == [{"secretRef": {"name": "juicefs-nativelink-admin"}}]
    admin = reveal(mocks.one(SECRET, "juicefs-admin-secret").inputs["stringData"])
    assert set(admin) == {"META_URL", "META_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["fsGroup"] == 65532
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    # Only once the CAS server rolled (its new mount pod holds the key in its environment): every client
    # reloads the settings within seconds, and the old mount pod has nothing else to fall back to.
    after = {dep._name for dep in job.depends_on}
    assert after >= {"nativelink-cas", "cas-store-access-s3", "juicefs-admin-secret"}

    irsa = build_fresh(prod_settings(aws=IRSA["aws"]), supplied_secrets())
    pod = admin_pod(irsa, JOB, "juicefs-admin-forget-stored-keys")
    assert pod["serviceAccountName"] == "juicefs-mount-nativelink" and pod["automountServiceAccountToken"] is False
    assert {dep._name for dep in irsa.one(JOB, "juicefs-admin-forget-stored-keys").depends_on} >= {
        "nativelink-cas",
        "juicefs-mount-sa",
        "cas-store-access-s3",
    }
    assert set(reveal(irsa.one(SECRET, "juicefs-admin-secret").inputs["stringData"])) == {"META_URL", "META_PASSWORD"}
    # The CAS server rolls, so its mount pod starts with the new identity before the old key is deleted.
    annotation = "nativelink-juicefs/s3-identity"
    before = user_identity["metadata"]["annotations"][annotation]
    after = irsa.one("kubernetes:apps/v1:StatefulSet", "nativelink-cas").inputs["spec"]["template"]
    assert before.startswith("key:") and "cas-store-access-key-id" not in before
    assert after["metadata"]["annotations"][annotation] == "irsa:arn:aws:mock:::cas-store-access-irsa"
    assert not is_secret(before)


def test_metadata_is_dumped_into_the_replicated_bucket_on_schedule(mocks: RecordingMocks, engine: str) -> None:
    settings = prod_settings(engine)
    build(mocks, settings, supplied_secrets())
    cron = mocks.one(CRON_JOB, "juicefs-admin-metadata-dump").inputs
    assert cron["metadata"]["namespace"] == "kube-system"
    assert cron["spec"]["schedule"] == settings.juicefs.metadata_dump_schedule == "30 3 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    # Its Jobs carry the label the README's check selects on.
    assert cron["spec"]["jobTemplate"]["metadata"]["labels"]["app.kubernetes.io/component"] == "juicefs-admin"
    pod = admin_pod(mocks, CRON_JOB, "juicefs-admin-metadata-dump")
    (container,) = pod["containers"]
    destination = f"s3://{settings.juicefs.bucket_name}.s3.us-east-1.amazonaws.com/metadata-dumps/"
    assert settings.juicefs.metadata_dump_keeps_key, "Pulumi.prod.yaml: new volumes have a protected key"
    assert container["command"] == ["/bin/sh", "-c", dump_script(destination, keep_key=True)]
    assert container["image"] == settings.versions.juicefs
    (dumps,) = [volume for volume in pod["volumes"] if volume["name"] == "dumps"]
    claim = dumps["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "gp3"
    assert claim["resources"] == {"requests": {"storage": settings.kubernetes.metadata_dump_volume_size}}
    assert {"name": "dumps", "mountPath": "/dumps"} in container["volumeMounts"]
    ca_mounts = [mount for mount in container["volumeMounts"] if mount["name"] == "rds-ca"]
    assert ca_mounts == (
        [{"name": "rds-ca", "mountPath": "/etc/juicefs/rds-ca", "readOnly": True}] if engine == "postgres" else []
    )


def test_rds_backups_are_replicated_to_the_second_region(mocks: RecordingMocks) -> None:
    settings = prod_settings("postgres")
    assert settings.aws is not None
    build(mocks, settings, supplied_secrets())
    replication = mocks.one(
        "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication", "metadata-backups-replica"
    )
    assert replication.inputs["region"] == settings.aws.replica_region
    assert replication.inputs["sourceDbInstanceArn"] == "arn:aws:mock:::metadata-postgres"
    assert replication.inputs["kmsKeyId"] == "arn:aws:mock:::metadata-replica-key"
    assert replication.inputs["retentionPeriod"] == settings.aws.rds.backup_retention_days
    assert mocks.one(KMS_KEY, "metadata-replica-key").inputs["region"] == "us-west-2"


def test_prod_names_its_clients_or_says_port_forward_only() -> None:
    """NetworkPolicies admit only listed clients; unset lists would cut every Bazel client off silently."""
    raw = prod_config()
    raw["kubernetes"] = {k: v for k, v in raw["kubernetes"].items() if k not in ("clientNamespaces", "clientCidrs")}
    with pytest.raises(ConfigError) as error:
        parse_settings(merged(raw, {"aws": {"rds": {"caBundleFile": TEST_CA_BUNDLE}}}))
    assert "nativelink-juicefs:kubernetes.clientNamespaces" in str(error.value)
    assert "port-forward" in str(error.value)
    explicit: list[dict[str, Any]] = [
        {"clientNamespaces": [], "exposure": "cluster"},
        {"clientCidrs": ["10.20.0.0/16"]},
    ]
    for lists in explicit:
        assert parse_settings(merged(raw, {"kubernetes": lists, "aws": {"rds": {"caBundleFile": TEST_CA_BUNDLE}}}))


def test_the_key_is_protected_once(mocks: RecordingMocks) -> None:
    """The volume keeps its first PEM; re-protecting it with a new passphrase would lock every mount out,
    so the engine must never rerun the command (a changed juicefsPassphrase or key leaves it alone)."""
    build(mocks, prod_settings(), supplied_secrets(juicefs_rsa_key=None))
    protect = mocks.one("command:local:Command", "juicefs-rsa-key-protected")
    assert protect.opts is not None and set(protect.opts.ignore_changes or []) >= {"environment", "stdin"}
    assert not protect.inputs.get("triggers") and not protect.inputs.get("update")


# ---- alarms

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def alarms_by_suffix(mocks: RecordingMocks) -> dict[str, dict[str, Any]]:
    return {record.name.removeprefix("alarms-"): record.inputs for record in mocks.of_type(ALARM)}


def test_alarms_watch_the_metadata_engine_and_replication(mocks: RecordingMocks, engine: str) -> None:
    settings = prod_settings(engine)
    exports = resolve_exports(build(mocks, settings, supplied_secrets()))
    (topic,) = mocks.of_type("aws:sns/topic:Topic")
    topic_arn = f"arn:aws:mock:::{topic.name}"
    assert exports["alarmTopicArn"] == (False, topic_arn)
    alarms = alarms_by_suffix(mocks)
    expected = {
        "memorydb": {"memory-001", "memory-002"},
        # Lag on every node: after a failover -001 is the replica.
        "redis": {"memory-001", "memory-002", "replication-lag-001", "replication-lag-002"},
        "postgres": {"free-storage", "freeable-memory"},
    }[engine] | {"s3-replication-failures"}
    assert set(alarms) == expected
    for alarm in alarms.values():
        assert alarm["alarmActions"] == [topic_arn] and alarm["okActions"] == [topic_arn]
        assert alarm["treatMissingData"] == "notBreaching"
    if engine == "memorydb":
        # Per node of the one shard: <cluster>-0001-001 is the first.
        assert alarms["memory-002"]["namespace"] == "AWS/MemoryDB"
        assert alarms["memory-002"]["dimensions"] == {
            "ClusterName": "metadata-memorydb-name",
            "NodeName": "metadata-memorydb-name-0001-002",
        }
        assert alarms["memory-001"]["metricName"] == "DatabaseMemoryUsagePercentage"
    elif engine == "redis":
        # ElastiCache names the group's nodes <group id>-001, -002, ...
        assert alarms["memory-002"]["dimensions"] == {"CacheClusterId": "metadata-redis-id-002"}
        assert alarms["memory-001"]["metricName"] == "DatabaseMemoryUsagePercentage"
        assert alarms["replication-lag-002"]["metricName"] == "ReplicationLag"
    else:
        assert alarms["free-storage"]["dimensions"] == {"DBInstanceIdentifier": "metadata-postgres-db"}
        # Below the 10% at which RDS storage autoscaling grows the volume: fires when it could not.
        assert alarms["free-storage"]["threshold"] == settings.aws.rds.allocated_storage_gb * 0.05 * 2**30
    failures = alarms["s3-replication-failures"]
    assert failures["metricName"] == "OperationsFailedReplication"
    # S3 never retries a failed replication: one failed period is enough.
    assert failures["evaluationPeriods"] == 1
    assert failures["dimensions"]["RuleId"] == "replicate-everything"
    (rule,) = mocks.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig", "cas-store-replication").inputs[
        "rules"
    ]
    assert rule["id"] == "replicate-everything"
    assert rule["destination"]["metrics"] == {"status": "Enabled"}


def test_alarms_go_to_the_operators_topic_when_given(mocks: RecordingMocks) -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:oncall"
    exports = resolve_exports(build(mocks, prod_settings(aws={"alarmTopicArn": topic}), supplied_secrets()))
    assert not mocks.of_type("aws:sns/topic:Topic")
    assert exports["alarmTopicArn"] == (False, topic)
    assert all(alarm["alarmActions"] == [topic] for alarm in alarms_by_suffix(mocks).values())
