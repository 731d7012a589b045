"""Small building blocks shared by the Docker components."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_docker as docker

# Published ports answer on the host's loopback only: nothing here authenticates its clients.
LOOPBACK = "127.0.0.1"
# Long-running services come back after a crash or a daemon restart, but stay down once stopped by hand.
RESTART = "unless-stopped"


def on_network(network: pulumi.Input[str], host: str) -> list[docker.ContainerNetworksAdvancedArgs]:
    """Attach to the private network under `host`, the name other containers use to reach it."""
    return [docker.ContainerNetworksAdvancedArgs(name=network, aliases=[host])]


def volume_mount(volume: pulumi.Input[str], target: str) -> docker.ContainerMountArgs:
    return docker.ContainerMountArgs(type="volume", source=volume, target=target)


def env(name: str, value: pulumi.Input[str]) -> pulumi.Output[str]:
    """A `NAME=value` entry; secret whenever `value` is."""
    return pulumi.Output.concat(name, "=", value)


def secret_env(name: str, value: pulumi.Input[str]) -> pulumi.Output[str]:
    """A `NAME=value` entry that is always secret."""
    return pulumi.Output.secret(env(name, value))


def with_secret_envs(parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
    """Options for a container whose envs carry credentials.

    `additional_secret_outputs` keeps the `envs` output encrypted in the state, and it is what the
    policy pack can see: the engine hands policies secrets already unwrapped, so a secret env and a
    plaintext one look the same there.
    """
    return pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on), additional_secret_outputs=["envs"])


def healthcheck(
    tests: list[str], *, start_period: str, interval: str = "5s", timeout: str = "5s", retries: int = 3
) -> docker.ContainerHealthcheckArgs:
    # Failures inside start_period do not count, and the first success marks the container healthy.
    return docker.ContainerHealthcheckArgs(
        tests=tests, interval=interval, timeout=timeout, retries=retries, start_period=start_period
    )


def service_container(
    host: str,
    *,
    parent: pulumi.Resource,
    image: pulumi.Input[str],
    network: pulumi.Input[str],
    command: list[str],
    envs: list[pulumi.Input[str]],
    health_test: list[str],
    data: docker.Volume,
    data_dir: str,
    uploads: list[docker.ContainerUploadArgs] | None = None,
    ports: list[docker.ContainerPortArgs] | None = None,
) -> docker.Container:
    """A long-running service reachable as `host` on the private network, its state on `data`.

    `pulumi up` waits until it is healthy, so what depends on it starts against a ready server.
    Its envs carry credentials (see `with_secret_envs`).
    """
    return docker.Container(
        host,
        name=host,
        image=image,
        command=command,
        uploads=uploads,
        envs=envs,
        healthcheck=healthcheck(health_test, start_period="30s"),
        wait=True,
        mounts=[volume_mount(data.name, data_dir)],
        ports=ports,
        networks_advanced=on_network(network, host),
        restart=RESTART,
        must_run=True,
        opts=with_secret_envs(parent),
    )


def stateful_volume(resource_name: str, *, parent: pulumi.Resource, retain: bool) -> docker.Volume:
    """A named volume holding state that must outlive the containers using it.

    `retain_on_delete` (not `protect`) keeps the data across `pulumi destroy` without blocking the
    destroy itself: like `docker compose down`, the stack goes away and the volume stays, and the next
    `pulumi up` adopts it again because Docker returns the existing volume for the same name.
    `protect` stays off: it would make every dev `pulumi destroy` fail until unprotected by hand.
    Delete-before-replace: creating the replacement first would hand back the same named volume,
    which the deletion of the old one would then remove.
    """
    return docker.Volume(
        resource_name,
        name=resource_name,
        opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=retain, protect=False, delete_before_replace=True),
    )
