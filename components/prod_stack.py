"""The prod stack: AWS (S3, MemoryDB, ElastiCache or RDS, KMS, IAM) plus NativeLink on an existing Kubernetes cluster.

Order of creation follows the data: KMS keys and buckets, the metadata engine and JuiceFS's S3
identity; then the CSI driver, its Secret, StorageClass and the CAS claim (formatted by the first
mount pod); then the NativeLink tier that mounts the claim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws.alarms import StackAlarms
from components.aws.dns import external_records
from components.aws.metadata_engine import create_metadata_engine
from components.aws.network_policy_check import require_network_policy_enforcement
from components.aws.object_store import S3ObjectStore
from components.aws.rds import RDS_CA_DIR, RDS_CA_FILE
from components.kubernetes.juicefs_admin import JuiceFsAdmin
from components.kubernetes.juicefs_volume import CsiJuiceFsVolume, MountPodFiles, check_encryption_secrets
from components.kubernetes.nativelink_cluster import KubernetesNativeLinkCluster, create_namespace
from components.settings import PROJECT, ProdSettings
from components.tls.pki import tls_outputs

if TYPE_CHECKING:
    from components.stack import StackSecrets


def build_prod_stack(
    settings: ProdSettings, secrets: StackSecrets, opts: pulumi.ResourceOptions | None = None
) -> dict[str, Any]:
    """Register every prod resource; returns the stack outputs."""
    aws_settings = settings.aws
    # Everything checkable without the cloud fails here, before any resource is registered.
    check_encryption_secrets(settings, secrets)
    base = opts or pulumi.ResourceOptions()

    aws_provider = aws.Provider(
        "aws",
        region=aws_settings.region,
        default_tags={"tags": {"project": PROJECT, "stack": pulumi.get_stack(), "managed-by": "pulumi"}},
        opts=base,
    )
    # No kubeconfig: the ambient context (KUBECONFIG / current context) is used, as kubectl would.
    k8s_provider = k8s.Provider(
        "kubernetes",
        kubeconfig=secrets.kubeconfig,
        opts=base,
    )
    if aws_settings.eks_cluster_name is not None:
        require_network_policy_enforcement(aws_settings.eks_cluster_name, aws_provider)
    aws_opts = pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(providers={"aws": aws_provider}))
    k8s_opts = pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}))

    store = S3ObjectStore("cas-store", settings, opts=aws_opts)
    engine = create_metadata_engine("metadata", settings, aws_opts)
    mount_files = []
    if engine.ca_bundle_pem is not None:
        mount_files.append(MountPodFiles("rds-ca", RDS_CA_DIR, {RDS_CA_FILE: engine.ca_bundle_pem}))

    namespace = create_namespace("nativelink-namespace", settings, opts=k8s_opts)
    # Read, not managed: a class that does not exist fails the preview at once, not pods hours later.
    block_storage = k8s.storage.v1.StorageClass.get(
        "block-storage-class", settings.kubernetes.block_storage_class, opts=k8s_opts
    )
    volume = CsiJuiceFsVolume(
        "juicefs",
        settings,
        secrets,
        metadata=engine,
        store=store,
        namespace=namespace,
        mount_role_arn=store.role_arn,
        mount_files=mount_files,
        block_storage=block_storage,
        opts=k8s_opts,
    )
    vpc_cidr = None
    if settings.kubernetes.exposure == "internal-load-balancer":
        # The load balancers' health checks come from the VPC's addresses.
        invoke = pulumi.InvokeOutputOptions(provider=aws_provider)
        vpc_cidr = aws.ec2.get_vpc_output(id=aws_settings.vpc_id, opts=invoke).cidr_block
    cluster = KubernetesNativeLinkCluster(
        "nativelink",
        settings,
        namespace=namespace,
        claim_name=volume.claim_name,
        block_storage=block_storage,
        s3_identity=store.identity,
        vpc_cidr=vpc_cidr,
        opts=k8s_opts,
    )
    if cluster.external is not None:
        external_records(settings, cluster.external, aws_opts)
    JuiceFsAdmin(
        "juicefs-admin",
        settings,
        metadata=engine,
        store=store,
        block_storage=block_storage,
        irsa=store.role_arn is not None,
        # Stored keys go only once the CAS server's new mount pod holds the new credentials.
        after=[cluster.cas_server, *volume.mount_pod_inputs, store.access_policy],
        mount_files=mount_files,
        opts=k8s_opts,
    )

    alarms = StackAlarms("alarms", aws_settings, [*engine.alarms, *store.alarms], opts=aws_opts)

    outputs: dict[str, Any] = {
        **tls_outputs(cluster.pki),
        "alarmTopicArn": alarms.topic_arn,
        "bazelFlags": cluster.bazel_flags,
        "inClusterBazelFlags": cluster.in_cluster_bazel_flags,
        "casEndpoint": cluster.cas_endpoint,
        "schedulerEndpoint": cluster.scheduler_endpoint,
        "juicefsVolume": {
            "name": volume.volume_name,
            "storageClass": volume.storage_class_name,
            "claim": volume.claim_name,
            "namespace": settings.kubernetes.namespace,
            "metadataEngine": aws_settings.metadata_engine,
            "bucket": store.bucket_name,
            "replicaBucket": store.replica_bucket_name,
            "encrypted": settings.juicefs.encrypt,
        },
    }
    if cluster.external is not None:
        # For DNS records of your own (kubernetes.externalDomain without aws.privateZoneId).
        outputs["loadBalancers"] = {"cas": cluster.external.cas, "scheduler": cluster.external.scheduler}
    if volume.generated_key is not None:
        # Needed to restore JuiceFS's encrypted metadata backups; `pulumi stack output --show-secrets`.
        outputs["juicefsRsaKey"] = volume.generated_key.plain_pem
        outputs["juicefsRsaPassphrase"] = pulumi.Output.secret(volume.generated_key.passphrase)
    return outputs
