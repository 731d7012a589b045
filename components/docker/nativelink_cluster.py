"""NativeLink on Docker: the CAS server on the JuiceFS mount, the scheduler, and N workers.

Two networks: the stack's (Redis, MinIO, the mount, CAS server, scheduler) and the workers' own,
`internal` (no route out), which only the CAS server and the scheduler join besides the workers. Build
actions therefore reach the CAS and the scheduler's ports, and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_docker as docker

from components.docker.common import (
    LOOPBACK,
    docker_cpus,
    env,
    healthcheck,
    long_running,
    on_network,
    size_mib,
    volume_mount,
)
from components.docker.jobs import one_shot
from components.nativelink import layout
from components.nativelink.clients import NativeLinkTier
from components.nativelink.render import Endpoints, grpc_scheme, render_cluster
from components.tls.pki import ClusterPki, Role, ServerNames

if TYPE_CHECKING:
    from components.nativelink.schema import CasConfig
    from components.settings import DevSettings

# The CAS server runs without CAP_DAC_OVERRIDE (and every other capability: it needs none), so the
# read-only mount point underneath JuiceFS refuses its writes whenever JuiceFS is not mounted there.
CAS_CAP_DROP = ["ALL"]
# Seconds between SIGTERM and SIGKILL for NativeLink processes, and for the probes (an init ends them at once).
SERVER_STOP_S = 30
PROBE_STOP_S = 10
# Docker label on each probe naming the container it checks.
PROBE_TARGET_LABEL = "nativelink-juicefs.probe-target"
# Docker label on each worker naming the container that copied its nativelink binary.
BINARY_LABEL = "nativelink-juicefs.worker-binary"
# A worker is healthy once it holds a connection to the scheduler's worker API: it opens it to register
# and keeps it for as long as it is registered (v1.6.6 nativelink-worker/src/local_worker.rs:890-912).
# /proc/net/tcp*: remote port in hex, then state 01 (ESTABLISHED).
WORKER_REGISTERED = [
    "CMD-SHELL",
    f"grep -qsE ' [0-9A-F]+:{layout.WORKER_API_PORT:04X} 01 ' /proc/net/tcp /proc/net/tcp6",
]


def config_upload(
    content: str, tls_files: dict[str, pulumi.Output[str]] | None = None
) -> list[docker.ContainerUploadArgs]:
    """The config and, with tls.enabled, the process's TLS files (keys readable by root alone).

    The provider marks `uploads` force-new (terraform-provider-docker, resource_docker_container.go:
    "New configuration forces a new deployment"), so a changed config or a renewed certificate
    replaces the container and NativeLink starts on the new files; no content-hash label is needed.
    """
    uploads = [docker.ContainerUploadArgs(file=layout.CONFIG_PATH, content=content)]
    for name, pem in sorted((tls_files or {}).items()):
        mode = "0600" if name.endswith(".key") else "0644"
        uploads.append(docker.ContainerUploadArgs(file=f"{layout.TLS_DIR}/{name}", content=pem, permissions=mode))
    return uploads


class DockerNativeLinkCluster(NativeLinkTier):
    """CAS server, scheduler and workers, each gated on the health of what it needs."""

    cas: docker.Container
    cas_probe: docker.Container
    scheduler: docker.Container
    scheduler_probe: docker.Container
    worker_network: docker.Network
    worker_binary: docker.Container
    workers: list[docker.Container]

    def __init__(
        self,
        name: str,
        *,
        settings: DevSettings,
        images: ClusterImages,
        network: pulumi.Input[str],
        shared_host_path: pulumi.Input[str],
        mount_container: docker.Container,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:cluster:DockerCluster", name, None, opts)
        endpoints = Endpoints(cas_host=f"{name}-cas", scheduler_host=f"{name}-scheduler")
        configs = render_cluster(
            settings, endpoints, cas_data=layout.DOCKER_CAS_DATA, worker_cpus=settings.docker.worker_cpus
        )
        self.worker_network = docker.Network(
            f"{name}-workers",
            name=f"{name}-workers",
            driver="bridge",
            internal=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Names the processes dial each other by, and Bazel's 127.0.0.1 / localhost.
        names = ServerNames([endpoints.cas_host, endpoints.scheduler_host, "localhost"], [LOOPBACK])
        self.pki = (
            ClusterPki(f"{name}-tls", settings.tls, names, opts=pulumi.ResourceOptions(parent=self))
            if (settings.tls.enabled)
            else None
        )
        services = NativeLinkContainers(self, settings, images, network, self.worker_network.name, self.pki)
        published = settings.docker.ports

        self.cas = services.cas_server(endpoints.cas_host, configs.cas_server, shared_host_path, mount_container)
        self.cas_probe = services.probe(endpoints.cas_host, self.cas)
        # Only the client API is published; the worker API (50061) stays on the private networks.
        self.scheduler = services.server(
            endpoints.scheduler_host,
            configs.scheduler,
            "scheduler",
            depends_on=[self.cas_probe],
            ports=[docker.ContainerPortArgs(internal=layout.SCHEDULER_PORT, external=published.scheduler, ip=LOOPBACK)],
        )
        self.scheduler_probe = services.probe(endpoints.scheduler_host, self.scheduler)
        self.worker_binary, self.workers = services.workers(name, configs.worker, depends_on=[self.scheduler_probe])

        scheme = grpc_scheme(settings)
        self.publish_endpoints(
            f"{scheme}://{LOOPBACK}:{published.cas}",
            f"{scheme}://{LOOPBACK}:{published.scheduler}",
            settings.nativelink,
            settings.tls,
        )


@dataclass(frozen=True)
class ClusterImages:
    nativelink: pulumi.Input[str]
    worker_init: pulumi.Input[str]
    # Build actions run in this one, with the nativelink binary copied in.
    worker: pulumi.Input[str]
    # busybox: the health probes.
    probe: pulumi.Input[str]


class NativeLinkContainers:
    """Builds the cluster's containers, one method per role, all parented by the cluster."""

    def __init__(
        self,
        parent: pulumi.Resource,
        settings: DevSettings,
        images: ClusterImages,
        network: pulumi.Input[str],
        worker_network: pulumi.Input[str],
        pki: ClusterPki | None,
    ) -> None:
        self.parent = parent
        self.settings = settings
        self.images = images
        self.network = network
        self.worker_network = worker_network
        self.pki = pki

    def _uploads(self, config: CasConfig, role: Role) -> list[docker.ContainerUploadArgs]:
        return config_upload(config.to_json(), self.pki.files(role) if self.pki else None)

    def _opts(self, depends_on: Sequence[pulumi.Resource]) -> pulumi.ResourceOptions:
        # With TLS the uploads carry private keys: state keeps them encrypted.
        secret = ["uploads"] if self.pki else None
        return pulumi.ResourceOptions(parent=self.parent, depends_on=list(depends_on), additional_secret_outputs=secret)

    def server(
        self,
        host: str,
        config: CasConfig,
        role: Role,
        *,
        depends_on: Sequence[pulumi.Resource],
        ports: list[docker.ContainerPortArgs],
        capabilities: docker.ContainerCapabilitiesArgs | None = None,
        mounts: list[docker.ContainerMountArgs] | None = None,
    ) -> docker.Container:
        """CAS server or scheduler: the NativeLink image (entrypoint `nativelink`, argument the config path).

        On the stack's network and, under the same name, on the workers'.
        """
        return docker.Container(
            host,
            name=host,
            image=self.images.nativelink,
            command=[layout.CONFIG_PATH],
            uploads=self._uploads(config, role),
            envs=[env("RUST_LOG", self.settings.nativelink.log_level)],
            capabilities=capabilities,
            mounts=mounts,
            ports=ports,
            networks_advanced=[*on_network(self.network, host), *on_network(self.worker_network, host)],
            **long_running(SERVER_STOP_S),
            opts=self._opts(depends_on),
        )

    def cas_server(
        self, host: str, config: CasConfig, shared_host_path: pulumi.Input[str], mount_container: docker.Container
    ) -> docker.Container:
        """The single writer of the JuiceFS-backed stores.

        It binds the shared host directory, not the mount: with rslave, each new JuiceFS mount on its
        `jfs` subdirectory (a restarted, killed or replaced mount container) reaches the running server,
        and each unmount leaves it the read-only mount point, which it cannot write.
        """
        return self.server(
            host,
            config,
            "cas",
            depends_on=[mount_container],
            ports=[
                docker.ContainerPortArgs(internal=layout.CAS_PORT, external=self.settings.docker.ports.cas, ip=LOOPBACK)
            ],
            capabilities=docker.ContainerCapabilitiesArgs(drops=CAS_CAP_DROP),
            mounts=[
                docker.ContainerMountArgs(
                    type="bind",
                    source=shared_host_path,
                    target=layout.DOCKER_SHARED_DIR,
                    bind_options=docker.ContainerMountBindOptionsArgs(propagation="rslave"),
                )
            ],
        )

    def probe(self, target_host: str, target: docker.Container) -> docker.Container:
        """A busybox sidecar carrying the healthcheck the NativeLink image cannot (it has no shell and no HTTP
        client); `wait` makes `pulumi up` block on it."""
        host = f"{target_host}-probe"
        url = f"http://{target_host}:{layout.HEALTH_PORT}{layout.HEALTH_PATH}"
        return docker.Container(
            host,
            name=host,
            image=self.images.probe,
            command=["sleep", "infinity"],
            # Force-new like every label: a new target (an upgrade) gets a new probe, and `up` waits again.
            labels=[docker.ContainerLabelArgs(label=PROBE_TARGET_LABEL, value=target.id)],
            # An init as PID 1 so `docker stop` ends `sleep` at once instead of after the timeout.
            init=True,
            healthcheck=healthcheck(["CMD", "wget", "-q", "-O", "/dev/null", url], start_period_s=120),
            wait=True,
            wait_timeout=180,
            networks_advanced=on_network(self.network, host),
            **long_running(PROBE_STOP_S),
            opts=self._opts([target]),
        )

    def workers(
        self,
        name: str,
        config: CasConfig,
        *,
        depends_on: Sequence[pulumi.Resource],
    ) -> tuple[docker.Container, list[docker.Container]]:
        """The binary copy job and the workers; `pulumi up` waits until each worker has registered.

        Build actions need a shell and a toolchain, which the NativeLink image lacks: workers run the
        toolchain image, and the worker-init image copies the nativelink binary into a volume they mount.
        """
        binary = docker.Volume(f"{name}-worker-binary", name=f"{name}-worker-binary", opts=self._opts([]))
        copy, copied = one_shot(
            f"{name}-worker-binary",
            parent=self.parent,
            image=self.images.worker_init,
            command_line=[layout.WORKER_BINARY],
            mounts=[volume_mount(binary.name, layout.WORKER_BINARY_DIR)],
        )
        docker_settings = self.settings.docker
        workers = []
        for index in range(self.settings.workers.count):
            # Stable, index-based names: changing the count adds or removes only the last workers.
            host = f"{name}-worker-{index}"
            # Fast store and work directory on one private volume: inputs are hard-linked between them.
            # A cache, so it goes with the worker.
            data = docker.Volume(f"{host}-data", name=f"{host}-data", opts=self._opts([]))
            workers.append(
                docker.Container(
                    host,
                    name=host,
                    image=self.images.worker,
                    entrypoints=[layout.WORKER_BINARY],
                    command=[layout.CONFIG_PATH],
                    uploads=self._uploads(config, "worker"),
                    envs=[env("RUST_LOG", self.settings.nativelink.log_level), env("WORKER_NAME", host)],
                    mounts=[
                        volume_mount(data.name, layout.WORKER_ROOT),
                        docker.ContainerMountArgs(
                            type="volume", source=binary.name, target=layout.WORKER_BINARY_DIR, read_only=True
                        ),
                    ],
                    # Force-new like every label: a new binary (new copy container) restarts the workers.
                    labels=[docker.ContainerLabelArgs(label=BINARY_LABEL, value=copy.id)],
                    # The config advertises these CPUs and runs as many actions at once.
                    cpus=docker_cpus(docker_settings.worker_cpus),
                    memory=size_mib(docker_settings.worker_memory),
                    # No swap on top: Docker's default (as much again) would read back as a change.
                    memory_swap=size_mib(docker_settings.worker_memory),
                    # An init reaps the orphans of build actions and passes SIGTERM on to the worker.
                    init=True,
                    healthcheck=healthcheck(WORKER_REGISTERED, start_period_s=120),
                    wait=True,
                    wait_timeout=180,
                    networks_advanced=on_network(self.worker_network, host),
                    **long_running(SERVER_STOP_S),
                    opts=self._opts([*depends_on, copied]),
                )
            )
        return copy, workers
