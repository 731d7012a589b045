"""Small building blocks shared by the Docker components."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypedDict

import pulumi
import pulumi_docker as docker

from components.settings import size_bytes

# Published ports answer on the host's loopback only: nothing here authenticates its clients.
LOOPBACK = "127.0.0.1"
# Long-running services come back after a crash or a daemon restart, but stay down once stopped by hand.
RESTART = "unless-stopped"
# Seconds Redis and MinIO get between SIGTERM and SIGKILL.
SERVICE_STOP_S = 30
# Docker's json-file driver keeps every line forever unless told to rotate.
LOG_DRIVER = "json-file"
LOG_OPTS = {"max-size": "20m", "max-file": "5"}


class LongRunning(TypedDict):
    """Container arguments every long-running container of the stack shares."""

    restart: str
    must_run: bool
    stop_timeout: int
    destroy_grace_seconds: int
    log_driver: str
    log_opts: dict[str, str]


def long_running(stop_s: int) -> LongRunning:
    """Restarted after a crash or a daemon restart, given `stop_s` seconds after SIGTERM (on `docker stop`
    and on the provider's delete, which ignores stop_timeout and kills at once with 0), logs rotated."""
    return LongRunning(
        restart=RESTART,
        must_run=True,
        stop_timeout=stop_s,
        destroy_grace_seconds=stop_s,
        log_driver=LOG_DRIVER,
        log_opts=LOG_OPTS,
    )


# The Docker provider's engine: `docker:host`, else DOCKER_HOST, else the local socket
# (pulumi-docker provider.go); the docker CLI would follow its current context instead.
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def docker_host() -> str:
    configured = pulumi.Config("docker").get("host") or os.environ.get("DOCKER_HOST")
    return configured or DEFAULT_DOCKER_HOST


def docker_cpus(cpus: int) -> str:
    """`cpus` as the provider reads it back (terraform-provider-docker v4.5.0 helpers.go:133-149,
    `nanoInt64ToDecimalString`): 2 -> "2.0", 10 -> "10.". Any other spelling, "2" included, is a
    change on every refresh, and `cpus` replaces the container."""
    fraction = f"{cpus}.000000000"
    return f"{cpus}.0" if fraction.count("0") == 9 else fraction.rstrip("0")


def size_mib(size: str) -> int:
    """A data size setting in MiB, the unit of the provider's `memory`."""
    return size_bytes(size) // 2**20


def go_duration(seconds: int) -> str:
    """`seconds` as Go's time.Duration.String() writes it, e.g. 120 -> "2m0s".

    The provider reads healthcheck durations back in that form (terraform-provider-docker
    resource_docker_container_funcs.go flattens them with `.String()`), so any other spelling of the
    same duration shows as a change on every `preview --refresh`.
    """
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


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
    tests: list[str], *, start_period_s: int, interval_s: int = 5, timeout_s: int = 5, retries: int = 3
) -> docker.ContainerHealthcheckArgs:
    # Failures inside start_period do not count, and the first success marks the container healthy.
    return docker.ContainerHealthcheckArgs(
        tests=tests,
        interval=go_duration(interval_s),
        timeout=go_duration(timeout_s),
        retries=retries,
        start_period=go_duration(start_period_s),
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
        healthcheck=healthcheck(health_test, start_period_s=30),
        wait=True,
        mounts=[volume_mount(data.name, data_dir)],
        ports=ports,
        networks_advanced=on_network(network, host),
        # SIGKILL mid-write would cost Redis its last AOF second and MinIO its in-flight objects.
        **long_running(SERVICE_STOP_S),
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
