"""The JuiceFS volume: formatted and mounted by one container, and exposed on the host."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_docker as docker

from components.docker.common import (
    RESTART,
    healthcheck,
    on_network,
    secret_env,
    stateful_volume,
    volume_mount,
    with_secret_envs,
)
from components.juicefs.commands import (
    FormatOptions,
    MountOptions,
    SecretEnv,
    format_args,
    mount_args,
    mount_healthcheck,
    mount_script,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from components.interfaces import MetadataEngine, ObjectStore
    from components.settings import JuiceFsSettings

# Where the mount container mounts JuiceFS; its host side is docker.hostMountDir.
MOUNTPOINT = "/jfs"
CACHE_DIR = "/var/jfsCache"
# The directory NativeLink's stores live in. It exists only inside the mounted filesystem.
DATA_DIR_NAME = "nativelink"
HOST_DIR_TARGET = "/host-dir"


class DockerJuiceFsVolume(pulumi.ComponentResource):
    """Formats the volume, mounts it with FUSE, and propagates the mount to `host_mount_dir` on the host."""

    volume_name: pulumi.Output[str]
    # Host directory the live mount appears on.
    mount_path: pulumi.Output[str]
    # `<mount_path>/nativelink`: present only while the mount is live.
    data_host_path: pulumi.Output[str]
    # Consumers of the mount depend on this container.
    mount_container: docker.Container

    def __init__(
        self,
        name: str,
        *,
        settings: JuiceFsSettings,
        host_mount_dir: str,
        metadata: MetadataEngine,
        object_store: ObjectStore,
        image: pulumi.Input[str],
        helper_image: pulumi.Input[str],
        network: pulumi.Input[str],
        retain_cache: bool,
        after: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:juicefs:DockerVolume", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        data_dir = f"{MOUNTPOINT}/{DATA_DIR_NAME}"
        host_data_dir = f"{host_mount_dir}/{DATA_DIR_NAME}"

        # A `mounts` bind refuses a missing source, while a legacy `volumes` bind makes Docker create
        # it (as root, with parents). This one-shot container exists only to create the host directory.
        host_dir = docker.Container(
            f"{name}-host-dir",
            name=f"{name}-host-dir",
            image=helper_image,
            command=["true"],
            volumes=[docker.ContainerVolumeArgs(host_path=host_mount_dir, container_path=HOST_DIR_TARGET)],
            network_mode="none",
            attach=True,
            must_run=False,
            restart="no",
            opts=child,
        )
        cache = stateful_volume(f"{name}-cache", parent=self, retain=retain_cache)

        storage = object_store.storage
        mount_options = MountOptions(mountpoint=MOUNTPOINT, cache_dir=CACHE_DIR, cache_size=settings.cache_size)

        def script(urls: list[str]) -> list[str]:
            meta_url, bucket_url = urls
            format_options = FormatOptions.from_settings(settings, storage, bucket_url, None)
            entry = mount_script(
                format_args(format_options, meta_url),
                mount_args(mount_options, meta_url),
                MOUNTPOINT,
                data_dir,
            )
            return ["sh", "-c", entry]

        # Secret as a whole: it embeds the metadata and bucket URLs, which their engines mark secret.
        urls = pulumi.Output.all(metadata.meta_url, object_store.bucket_url)
        command: pulumi.Output[list[str]] = pulumi.Output.secret(urls.apply(script))
        envs = [secret_env(SecretEnv.META_PASSWORD, metadata.meta_password)]
        if object_store.access_key is not None:
            envs.append(secret_env(SecretEnv.ACCESS_KEY, object_store.access_key))
        if object_store.secret_key is not None:
            envs.append(secret_env(SecretEnv.SECRET_KEY, object_store.secret_key))

        self.mount_container = docker.Container(
            f"{name}-mount",
            name=f"{name}-mount",
            image=image,
            command=command,
            envs=envs,
            # FUSE inside a container: the device, the capability to mount, and no AppArmor profile
            # (Docker's default profile denies mount).
            capabilities=docker.ContainerCapabilitiesArgs(adds=["SYS_ADMIN"]),
            devices=[docker.ContainerDeviceArgs(host_path="/dev/fuse", container_path="/dev/fuse")],
            security_opts=["apparmor:unconfined"],
            mounts=[
                # rshared: the FUSE mount made at MOUNTPOINT propagates back to the host directory,
                # where other containers bind it. Needs the host directory on a shared mount.
                docker.ContainerMountArgs(
                    type="bind",
                    source=host_mount_dir,
                    target=MOUNTPOINT,
                    bind_options=docker.ContainerMountBindOptionsArgs(propagation="rshared"),
                ),
                volume_mount(cache.name, CACHE_DIR),
            ],
            healthcheck=healthcheck(mount_healthcheck(MOUNTPOINT, data_dir), start_period="120s"),
            # `pulumi up` goes on only once the volume is formatted, mounted and has its data directory.
            wait=True,
            wait_timeout=300,
            networks_advanced=on_network(network, f"{name}-mount"),
            restart=RESTART,
            must_run=True,
            # SIGTERM makes the entry script stop `juicefs mount`, which unmounts cleanly; SIGKILL
            # would leave a dead FUSE mount on the host. Give it time to flush before Docker kills it.
            stop_signal="SIGTERM",
            stop_timeout=60,
            destroy_grace_seconds=60,
            opts=with_secret_envs(self, depends_on=[host_dir, *after]),
        )

        self.volume_name = pulumi.Output.from_input(settings.volume_name)
        self.mount_path = pulumi.Output.from_input(host_mount_dir)
        self.data_host_path = pulumi.Output.from_input(host_data_dir)
        self.register_outputs(
            {
                "volume_name": self.volume_name,
                "mount_path": self.mount_path,
                "data_host_path": self.data_host_path,
            }
        )
