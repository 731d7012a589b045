"""NativeLink on Docker: the CAS server on the JuiceFS mount, the scheduler, and N workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_docker as docker

from components.docker.common import LOOPBACK, RESTART, env, healthcheck, on_network, volume_mount
from components.nativelink import layout
from components.nativelink.clients import client_outputs
from components.nativelink.render import Endpoints, render_cluster

if TYPE_CHECKING:
    from components.settings import Settings

# Docker label on the CAS server naming the mount container it was started against.
MOUNT_LABEL = "nativelink-juicefs.mount-container"
# Docker label on each worker naming the container that copied its nativelink binary.
BINARY_LABEL = "nativelink-juicefs.worker-binary"


def config_upload(content: str) -> list[docker.ContainerUploadArgs]:
    # The provider marks `uploads` force-new (terraform-provider-docker, resource_docker_container.go:
    # "New configuration forces a new deployment"), so a changed config replaces the container and
    # NativeLink starts on the new one; no content-hash label is needed for that.
    return [docker.ContainerUploadArgs(file=layout.CONFIG_PATH, content=content)]


class DockerNativeLinkCluster(pulumi.ComponentResource):
    """CAS server, scheduler and workers, each gated on the health of what it needs."""

    cas_endpoint: pulumi.Output[str]
    scheduler_endpoint: pulumi.Output[str]
    bazel_flags: pulumi.Output[str]
    cas: docker.Container
    cas_probe: docker.Container
    scheduler: docker.Container
    scheduler_probe: docker.Container
    worker_binary: docker.Container
    workers: list[docker.Container]

    def __init__(
        self,
        name: str,
        *,
        settings: Settings,
        image: pulumi.Input[str],
        worker_init_image: pulumi.Input[str],
        worker_image: pulumi.Input[str],
        probe_image: pulumi.Input[str],
        network: pulumi.Input[str],
        data_host_path: pulumi.Input[str],
        mount_container: docker.Container,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:cluster:DockerCluster", name, None, opts)
        cas_host = f"{name}-cas"
        scheduler_host = f"{name}-scheduler"
        configs = render_cluster(settings, Endpoints(cas_host=cas_host, scheduler_host=scheduler_host))
        published = settings.docker.ports
        rust_log = env("RUST_LOG", settings.nativelink.log_level)

        def nativelink(
            host: str,
            config: str,
            *,
            depends_on: list[pulumi.Resource],
            worker: bool = False,
            envs: list[pulumi.Input[str]] | None = None,
            mounts: list[docker.ContainerMountArgs] | None = None,
            labels: list[docker.ContainerLabelArgs] | None = None,
            ports: list[docker.ContainerPortArgs] | None = None,
        ) -> docker.Container:
            # The NativeLink image's entrypoint is `nativelink`; its only argument is the config path.
            # A worker runs the same binary, copied into a volume, inside the toolchain image.
            return docker.Container(
                host,
                name=host,
                image=worker_image if worker else image,
                entrypoints=[layout.WORKER_BINARY] if worker else None,
                command=[layout.CONFIG_PATH],
                uploads=config_upload(config),
                envs=[rust_log, *(envs or [])],
                mounts=mounts,
                labels=labels,
                ports=ports,
                networks_advanced=on_network(network, host),
                restart=RESTART,
                must_run=True,
                # Stop with SIGTERM and a grace period before removal, not a bare kill.
                destroy_grace_seconds=30,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
            )

        def probe(target_host: str, target: docker.Container) -> docker.Container:
            # The NativeLink image has no shell and no HTTP client, so a busybox sidecar carries the
            # healthcheck against the target's health listener; `wait` makes `pulumi up` block on it.
            host = f"{target_host}-probe"
            url = f"http://{target_host}:{layout.HEALTH_PORT}{layout.HEALTH_PATH}"
            return docker.Container(
                host,
                name=host,
                image=probe_image,
                command=["sleep", "infinity"],
                # An init as PID 1 so `docker stop` ends `sleep` at once instead of after the timeout.
                init=True,
                healthcheck=healthcheck(["CMD", "wget", "-q", "-O", "/dev/null", url], start_period="120s"),
                wait=True,
                wait_timeout=180,
                networks_advanced=on_network(network, host),
                restart=RESTART,
                must_run=True,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[target]),
            )

        # The bind source is a directory that exists only inside the live JuiceFS mount. Docker
        # refuses to start a `mounts` bind whose source is missing, so the CAS server cannot start
        # while JuiceFS is not mounted, and never writes its stores into the empty mount point.
        self.cas = nativelink(
            cas_host,
            configs.cas_server.to_json(),
            depends_on=[mount_container],
            mounts=[docker.ContainerMountArgs(type="bind", source=data_host_path, target=layout.CAS_DATA_ROOT)],
            # Labels are force-new: a new mount container (new id) also replaces the CAS server, whose
            # bind would otherwise still point into the old, dead mount.
            labels=[docker.ContainerLabelArgs(label=MOUNT_LABEL, value=mount_container.id)],
            ports=[docker.ContainerPortArgs(internal=layout.CAS_PORT, external=published.cas, ip=LOOPBACK)],
        )
        self.cas_probe = probe(cas_host, self.cas)

        # Only the client API is published; the worker API (50061) stays on the private network.
        self.scheduler = nativelink(
            scheduler_host,
            configs.scheduler.to_json(),
            depends_on=[self.cas_probe],
            ports=[docker.ContainerPortArgs(internal=layout.SCHEDULER_PORT, external=published.scheduler, ip=LOOPBACK)],
        )
        self.scheduler_probe = probe(scheduler_host, self.scheduler)

        # Build actions need a shell and a toolchain, which the NativeLink image lacks: workers run the
        # toolchain image, and the worker-init image copies the nativelink binary into a volume they mount.
        binary = docker.Volume(
            f"{name}-worker-binary", name=f"{name}-worker-binary", opts=pulumi.ResourceOptions(parent=self)
        )
        self.worker_binary = docker.Container(
            f"{name}-worker-binary",
            name=f"{name}-worker-binary",
            image=worker_init_image,
            command=[layout.WORKER_BINARY],
            mounts=[volume_mount(binary.name, layout.WORKER_BINARY_DIR)],
            network_mode="none",
            attach=True,
            must_run=False,
            restart="no",
            opts=pulumi.ResourceOptions(parent=self),
        )
        worker_config = configs.worker.to_json()
        self.workers = []
        for index in range(settings.workers.count):
            # Stable, index-based names: changing the count adds or removes only the last workers.
            host = f"{name}-worker-{index}"
            # Fast store and work directory on one private volume: inputs are hard-linked between them.
            # A cache, so it goes with the worker.
            data = docker.Volume(f"{host}-data", name=f"{host}-data", opts=pulumi.ResourceOptions(parent=self))
            self.workers.append(
                nativelink(
                    host,
                    worker_config,
                    depends_on=[self.scheduler_probe, self.worker_binary],
                    worker=True,
                    envs=[env("WORKER_NAME", host)],
                    mounts=[
                        volume_mount(data.name, layout.WORKER_ROOT),
                        docker.ContainerMountArgs(
                            type="volume", source=binary.name, target=layout.WORKER_BINARY_DIR, read_only=True
                        ),
                    ],
                    # Force-new like every label: a new binary (new copy container) restarts the workers.
                    labels=[docker.ContainerLabelArgs(label=BINARY_LABEL, value=self.worker_binary.id)],
                )
            )

        outputs = client_outputs(
            f"grpc://{LOOPBACK}:{published.cas}",
            f"grpc://{LOOPBACK}:{published.scheduler}",
            settings.nativelink.instance_name,
        )
        self.cas_endpoint = outputs["cas_endpoint"]
        self.scheduler_endpoint = outputs["scheduler_endpoint"]
        self.bazel_flags = outputs["bazel_flags"]
        self.register_outputs(outputs)
