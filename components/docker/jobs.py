"""One-shot containers whose failure fails `pulumi up`, with the container's own log lines in the error.

pulumi-docker's `attach` waits for such a container to stop but never reads its exit code
(terraform-provider-docker v4.5.0 resource_docker_container_funcs.go:657-670), so a failed job would
be a green `up`. A pulumi-command step after each job asks Docker for the code and the log.
"""

from __future__ import annotations

import shlex

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.docker.common import docker_host

# Lines of the job's log that reach the error.
LOG_TAIL = 40


def job_check_script(container: str) -> str:
    """Shell that exits 0 if `container` exited 0, else prints its exit code and log tail and exits 1.

    `docker wait` answers at once for a stopped container, with its exit code.
    """
    name = shlex.quote(container)
    return "\n".join(
        [
            "set -u",
            f"code=$(docker wait {name}) || exit 1",
            'if [ "$code" = 0 ]; then exit 0; fi',
            f'echo "one-shot container {container} exited with code $code; its last {LOG_TAIL} log lines:" >&2',
            f"docker logs --tail {LOG_TAIL} {name} >&2",
            "exit 1",
        ]
    )


def one_shot(
    resource_name: str,
    *,
    parent: pulumi.Resource,
    image: pulumi.Input[str],
    command_line: list[str],
    mounts: list[docker.ContainerMountArgs] | None = None,
    volumes: list[docker.ContainerVolumeArgs] | None = None,
) -> tuple[docker.Container, command.local.Command]:
    """The job (named `resource_name` in Docker too, with no network) and the step that fails unless it exited 0.

    What depends on the job's work depends on the returned step.
    """
    job = docker.Container(
        resource_name,
        name=resource_name,
        image=image,
        command=command_line,
        mounts=mounts,
        volumes=volumes,
        network_mode="none",
        attach=True,
        must_run=False,
        restart="no",
        opts=pulumi.ResourceOptions(parent=parent),
    )
    succeeded = command.local.Command(
        f"{resource_name}-succeeded",
        create=job_check_script(resource_name),
        interpreter=["/bin/sh", "-c"],
        # The engine the provider creates containers on, whatever the CLI's current context says.
        environment={"DOCKER_HOST": docker_host()},
        # A new job (a replacement) is checked again.
        triggers=[job.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[job]),
    )
    return job, succeeded
