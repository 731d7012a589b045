"""JuiceFS metadata on a Redis container, private to the stack's network."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from components.docker.common import secret_env, service_container, stateful_volume
from components.juicefs.commands import redis_meta_url
from components.passwords import generated_password

REDIS_PORT = 6379
# Redis DB 0 stays free for anything else; one DB holds exactly one JuiceFS volume.
JUICEFS_DB = 1
CONFIG_PATH = "/usr/local/etc/redis/redis.conf"
DATA_DIR = "/data"


def redis_config(password: str) -> str:
    """The settings JuiceFS needs from Redis (persistence, no eviction), plus the password."""
    return (
        "\n".join(
            [
                f"requirepass {password}",
                "appendonly yes",
                "appendfsync everysec",
                # Evicting a metadata key would corrupt the filesystem; refuse writes instead.
                "maxmemory-policy noeviction",
                f"dir {DATA_DIR}",
                f"port {REDIS_PORT}",
            ]
        )
        + "\n"
    )


class RedisMetadataEngine(pulumi.ComponentResource):
    """Redis with a generated password, AOF persistence on a named volume, reachable only on the network."""

    meta_url: pulumi.Output[str]
    meta_password: pulumi.Output[str]
    host: str
    container: docker.Container

    def __init__(
        self,
        name: str,
        *,
        image: pulumi.Input[str],
        network: pulumi.Input[str],
        retain_data: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:metadata:RedisContainer", name, None, opts)
        self.host = f"{name}-server"

        # The password ends up in a URL and in a config line.
        self.meta_password = generated_password(f"{name}-password", length=32, parent=self)
        data = stateful_volume(f"{name}-data", parent=self, retain=retain_data)

        # No ports: only containers on the private network reach Redis.
        self.container = service_container(
            self.host,
            parent=self,
            image=image,
            network=network,
            command=["redis-server", CONFIG_PATH],
            # A file, not argv: argv would show the password in `ps` and `docker inspect`.
            uploads=[
                docker.ContainerUploadArgs(
                    file=CONFIG_PATH, content=pulumi.Output.secret(self.meta_password.apply(redis_config))
                )
            ],
            # redis-cli reads the password from REDISCLI_AUTH, so the check proves auth works.
            envs=[secret_env("REDISCLI_AUTH", self.meta_password)],
            health_test=["CMD-SHELL", "redis-cli ping | grep -q PONG"],
            data=data,
            data_dir=DATA_DIR,
        )

        self.meta_url = pulumi.Output.secret(redis_meta_url(self.host, REDIS_PORT, JUICEFS_DB))
        self.register_outputs({"meta_url": self.meta_url, "meta_password": self.meta_password})
