"""JuiceFS data blocks on a MinIO container.

`juicefs format` creates the bucket when it is missing (juicefs v1.4 cmd/format.go `doTesting` calls
`Create` after a failed put), so no one-shot job is needed, and none can fail unnoticed.
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from components.docker.common import (
    LOOPBACK,
    secret_env,
    service_container,
    stateful_volume,
)
from components.juicefs.commands import StorageType, minio_bucket_url
from components.passwords import generated_password

API_PORT = 9000
CONSOLE_PORT = 9001
DATA_DIR = "/data"


class MinioObjectStore(pulumi.ComponentResource):
    """MinIO with generated root credentials and its data on a named volume; JuiceFS's format makes the bucket."""

    storage: StorageType
    bucket_url: pulumi.Output[str]
    access_key: pulumi.Output[str] | None
    secret_key: pulumi.Output[str] | None
    root_user: pulumi.Output[str]
    root_password: pulumi.Output[str]
    host: str
    server: docker.Container

    def __init__(
        self,
        name: str,
        *,
        image: pulumi.Input[str],
        network: pulumi.Input[str],
        bucket_name: str,
        retain_data: bool,
        console_port: int | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:storage:MinioContainer", name, None, opts)
        self.host = f"{name}-server"
        self.storage = "minio"

        # Generated, never the image's well-known default; they end up in a URL.
        self.root_user = generated_password(f"{name}-root-user", length=20, upper=False, parent=self)
        self.root_password = generated_password(f"{name}-root-password", length=40, parent=self)
        data = stateful_volume(f"{name}-data", parent=self, retain=retain_data)

        # The console is for a person at this machine: loopback only, and only when asked for.
        ports = (
            [docker.ContainerPortArgs(internal=CONSOLE_PORT, external=console_port, ip=LOOPBACK)]
            if console_port is not None
            else []
        )
        self.server = service_container(
            self.host,
            parent=self,
            image=image,
            network=network,
            command=["server", DATA_DIR, "--console-address", f":{CONSOLE_PORT}"],
            envs=[
                secret_env("MINIO_ROOT_USER", self.root_user),
                secret_env("MINIO_ROOT_PASSWORD", self.root_password),
            ],
            health_test=["CMD", "mc", "ready", "local"],
            data=data,
            data_dir=DATA_DIR,
            ports=ports,
        )

        self.bucket_url = pulumi.Output.secret(minio_bucket_url(self.host, API_PORT, bucket_name))
        self.access_key = self.root_user
        self.secret_key = self.root_password
        self.register_outputs(
            {"bucket_url": self.bucket_url, "access_key": self.access_key, "secret_key": self.secret_key}
        )
