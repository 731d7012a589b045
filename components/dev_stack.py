"""The dev stack: the whole cluster on the local Docker engine (default docker provider)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_docker as docker

from components.docker.juicefs_volume import DockerJuiceFsVolume
from components.docker.metadata_engine import RedisMetadataEngine
from components.docker.nativelink_cluster import ClusterImages, DockerNativeLinkCluster
from components.docker.object_store import MinioObjectStore
from components.docker.preflight import check_host
from components.settings import DevSettings
from components.tls.pki import tls_outputs

if TYPE_CHECKING:
    from components.interfaces import NativeLinkCluster


def build_dev_stack(settings: DevSettings, opts: pulumi.ResourceOptions | None = None) -> dict[str, Any]:
    """Register every dev resource; returns the stack outputs."""
    prefix = settings.docker.network_name
    base = opts or pulumi.ResourceOptions()

    def top(**options: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(**options))

    # What the host must give, checked before any resource is registered.
    check_host(settings.docker)
    # A plain bridge network: `internal` would also cut off the ports published on loopback.
    network = docker.Network(f"{prefix}-network", name=prefix, driver="bridge", opts=top())
    versions = settings.versions
    images = {
        role: docker.RemoteImage(f"{prefix}-{role}-image", name=ref, keep_locally=True, opts=top())
        for role, ref in (
            ("nativelink", versions.nativelink),
            ("nativelink-worker-init", versions.nativelink_worker_init),
            ("worker", versions.worker),
            ("juicefs", versions.juicefs),
            ("redis", versions.redis),
            ("minio", versions.minio),
            ("busybox", versions.busybox),
        )
    }
    # `docker compose down` versus `down -v`: keep the state volumes unless asked to wipe them.
    retain = not settings.docker.wipe_volumes_on_destroy

    metadata = RedisMetadataEngine(
        f"{prefix}-redis",
        image=images["redis"].image_id,
        network=network.name,
        retain_data=retain,
        opts=top(),
    )
    object_store = MinioObjectStore(
        f"{prefix}-minio",
        image=images["minio"].image_id,
        network=network.name,
        bucket_name=settings.juicefs.bucket_name,
        retain_data=retain,
        console_port=settings.docker.ports.minio_console,
        opts=top(),
    )
    # Formatting needs Redis and MinIO up; it creates the bucket itself.
    ready: list[pulumi.Resource] = [metadata.container, object_store.server]
    volume = DockerJuiceFsVolume(
        f"{prefix}-juicefs",
        settings=settings.juicefs,
        host_mount_dir=settings.docker.host_mount_dir,
        metadata=metadata,
        object_store=object_store,
        image=images["juicefs"].image_id,
        helper_image=images["busybox"].image_id,
        network=network.name,
        retain_cache=retain,
        after=ready,
        opts=top(depends_on=ready),
    )
    docker_cluster = DockerNativeLinkCluster(
        prefix,
        settings=settings,
        images=ClusterImages(
            nativelink=images["nativelink"].image_id,
            worker_init=images["nativelink-worker-init"].image_id,
            worker=images["worker"].image_id,
            probe=images["busybox"].image_id,
        ),
        network=network.name,
        shared_host_path=volume.shared_host_path,
        mount_container=volume.mount_container,
        opts=top(),
    )
    cluster: NativeLinkCluster = docker_cluster

    return {
        **tls_outputs(docker_cluster.pki),
        "bazelFlags": cluster.bazel_flags,
        "casEndpoint": cluster.cas_endpoint,
        "schedulerEndpoint": cluster.scheduler_endpoint,
        "juicefsVolume": volume.volume_name,
        "juicefsMountPath": volume.mount_path,
        "juicefsMetaUrl": pulumi.Output.secret(metadata.meta_url),
        "minioRootUser": pulumi.Output.secret(object_store.root_user),
        "minioRootPassword": pulumi.Output.secret(object_store.root_password),
    }
