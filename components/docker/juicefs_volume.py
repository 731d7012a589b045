"""The JuiceFS volume: formatted and mounted by one container, and exposed on the host."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_docker as docker

from components.docker.common import (
    healthcheck,
    long_running,
    on_network,
    secret_env,
    stateful_volume,
    volume_mount,
    with_secret_envs,
)
from components.docker.jobs import one_shot
from components.juicefs.commands import (
    CREDENTIAL_ENVS,
    FormatOptions,
    MountOptions,
    SecretEnv,
    format_args,
    mount_args,
    mount_healthcheck,
    mount_point_guard,
    mount_script,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from components.interfaces import MetadataEngine, ObjectStore
    from components.settings import JuiceFsSettings

# The shared host directory (docker.hostMountDir) as the mount container sees it, and the mount point
# inside it. Mounting in a subdirectory, never on the bind itself, is what lets a mount made by a new
# container (after a restart, a SIGKILL or a replacement) reach the host and, by propagation, the CAS
# server's bind of the same directory; a mount on the bind target would stay in the container.
SHARED_DIR = "/shared"
MOUNT_DIR_NAME = "jfs"
MOUNTPOINT = f"{SHARED_DIR}/{MOUNT_DIR_NAME}"
CACHE_DIR = "/var/jfsCache"
# The directory NativeLink's stores live in, inside the mounted filesystem.
DATA_DIR_NAME = "nativelink"
HOST_DIR_TARGET = "/host-dir"
# Seconds `juicefs mount` gets on TERM to flush and unmount (it waits up to 30 s for a busy mount).
MOUNT_STOP_S = 60


class DockerJuiceFsVolume(pulumi.ComponentResource):
    """Formats the volume, mounts it with FUSE, and propagates the mount to `host_mount_dir` on the host."""

    volume_name: pulumi.Output[str]
    # The shared host directory; consumers bind it with rslave propagation.
    shared_host_path: pulumi.Output[str]
    # `<shared_host_path>/jfs`: where the live mount appears on the host.
    mount_path: pulumi.Output[str]
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
        data_dir = f"{MOUNTPOINT}/{DATA_DIR_NAME}"

        # A `mounts` bind refuses a missing source, while a legacy `volumes` bind makes Docker create
        # it (as root, with parents). This one-shot job creates the host directory and in it the
        # read-only mount point, before any CAS server can bind the directory and write there.
        _, host_dir_ready = one_shot(
            f"{name}-host-dir",
            parent=self,
            image=helper_image,
            command_line=["sh", "-c", mount_point_guard(HOST_DIR_TARGET, MOUNT_DIR_NAME)],
            volumes=[docker.ContainerVolumeArgs(host_path=host_mount_dir, container_path=HOST_DIR_TARGET)],
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
                meta_url,
            )
            return ["sh", "-c", entry]

        # Secret as a whole: it embeds the metadata and bucket URLs, which their engines mark secret.
        urls = pulumi.Output.all(metadata.meta_url, object_store.bucket_url)
        command: pulumi.Output[list[str]] = pulumi.Output.secret(urls.apply(script))
        # The object-store keys are never stored in the volume: the client reads them at every start,
        # so new credentials (a rotation, or a destroy and up) reach the kept data.
        envs = [secret_env(SecretEnv.META_PASSWORD, metadata.meta_password)]
        access_var, secret_var = CREDENTIAL_ENVS[storage]
        if object_store.access_key is not None:
            envs.append(secret_env(access_var, object_store.access_key))
        if object_store.secret_key is not None:
            envs.append(secret_env(secret_var, object_store.secret_key))

        self.mount_container = docker.Container(
            f"{name}-mount",
            name=f"{name}-mount",
            image=image,
            command=command,
            envs=envs,
            # FUSE inside a container: the device, the capability to mount, and no AppArmor profile
            # (Docker's default profile denies mount).
            # Spelled as the Docker client sends it (moby client/container_create.go normalizes names to
            # CAP_*), which is what the provider reads back; "SYS_ADMIN" would replace it on every refresh.
            capabilities=docker.ContainerCapabilitiesArgs(adds=["CAP_SYS_ADMIN"]),
            devices=[docker.ContainerDeviceArgs(host_path="/dev/fuse", container_path="/dev/fuse")],
            security_opts=["apparmor:unconfined"],
            mounts=[
                # rshared: the FUSE mount made at MOUNTPOINT propagates back to the host directory,
                # where other containers bind it. Needs the host directory on a shared mount.
                docker.ContainerMountArgs(
                    type="bind",
                    source=host_mount_dir,
                    target=SHARED_DIR,
                    bind_options=docker.ContainerMountBindOptionsArgs(propagation="rshared"),
                ),
                volume_mount(cache.name, CACHE_DIR),
            ],
            healthcheck=healthcheck(mount_healthcheck(MOUNTPOINT, data_dir), start_period_s=120),
            # `pulumi up` goes on only once the volume is formatted, mounted and has its data directory.
            wait=True,
            wait_timeout=300,
            networks_advanced=on_network(network, f"{name}-mount"),
            # SIGTERM makes the entry script stop `juicefs mount`, which unmounts cleanly; SIGKILL
            # would leave a dead FUSE mount on the host. Give it time to flush before Docker kills it.
            stop_signal="SIGTERM",
            **long_running(MOUNT_STOP_S),
            opts=with_secret_envs(self, depends_on=[host_dir_ready, *after]),
        )

        self.volume_name = pulumi.Output.from_input(settings.volume_name)
        self.shared_host_path = pulumi.Output.from_input(host_mount_dir)
        self.mount_path = pulumi.Output.from_input(f"{host_mount_dir}/{MOUNT_DIR_NAME}")
        self.register_outputs(
            {
                "volume_name": self.volume_name,
                "shared_host_path": self.shared_host_path,
                "mount_path": self.mount_path,
            }
        )
