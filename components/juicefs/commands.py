"""JuiceFS command lines and URLs, as pure functions.

Secrets never appear in argv or URLs: the client reads them from the environment variables named
in `SecretEnv`, so they stay out of process lists, logs and container specs' command fields.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode

from components.settings import JuiceFsSettings, size_bytes


class SecretEnv:
    """Environment variables through which the `juicefs` client takes its secrets."""

    META_PASSWORD = "META_PASSWORD"
    ACCESS_KEY = "ACCESS_KEY"
    SECRET_KEY = "SECRET_KEY"
    RSA_PASSPHRASE = "JFS_RSA_PASSPHRASE"


StorageType = Literal["minio", "s3"]


@dataclass(frozen=True)
class FormatOptions:
    """What `juicefs format` is told: the volume and where its objects go."""

    volume_name: str
    storage: StorageType
    bucket_url: str
    block_size_kib: int
    compress: str
    trash_days: int
    encrypt_rsa_key_path: str | None = None
    encrypt_algo: str = "aes256gcm-rsa"

    @classmethod
    def from_settings(
        cls, settings: JuiceFsSettings, storage: StorageType, bucket_url: str, rsa_key_path: str | None
    ) -> FormatOptions:
        return cls(
            volume_name=settings.volume_name,
            storage=storage,
            bucket_url=bucket_url,
            block_size_kib=settings.block_size_kib,
            compress=settings.compress,
            trash_days=settings.trash_days,
            encrypt_rsa_key_path=rsa_key_path if settings.encrypt else None,
            encrypt_algo=settings.encrypt_algo,
        )


def redis_meta_url(
    host: str, port: int, db: int, *, tls: bool = False, ca_file: str | None = None, user: str = ""
) -> str:
    """A Redis metadata URL without the password (the client reads META_PASSWORD)."""
    scheme = "rediss" if tls else "redis"
    auth = f"{quote(user, safe='')}@" if user else ""
    query = f"?{urlencode({'tls-ca-cert-file': ca_file})}" if tls and ca_file else ""
    return f"{scheme}://{auth}{host}:{port}/{db}{query}"


def postgres_meta_url(
    host: str, port: int, database: str, user: str, *, sslmode: str = "verify-full", sslrootcert: str | None = None
) -> str:
    """A Postgres metadata URL without the password (the client reads META_PASSWORD)."""
    params = {"sslmode": sslmode}
    if sslrootcert:
        params["sslrootcert"] = sslrootcert
    return f"postgres://{quote(user, safe='')}@{host}:{port}/{quote(database, safe='')}?{urlencode(params)}"


def minio_bucket_url(host: str, port: int, bucket: str) -> str:
    """MinIO takes path-style bucket URLs only."""
    return f"http://{host}:{port}/{bucket}"


def s3_bucket_url(bucket: str, region: str) -> str:
    return f"https://{bucket}.s3.{region}.amazonaws.com"


def format_args(options: FormatOptions, meta_url: str) -> list[str]:
    """`juicefs format`: safe to run on every start, it changes only mutable settings."""
    args = [
        "juicefs",
        "format",
        "--storage",
        options.storage,
        "--bucket",
        options.bucket_url,
        "--block-size",
        str(options.block_size_kib),
        "--compress",
        options.compress,
        "--trash-days",
        str(options.trash_days),
    ]
    if options.encrypt_rsa_key_path is not None:
        args += ["--encrypt-rsa-key", options.encrypt_rsa_key_path, "--encrypt-algo", options.encrypt_algo]
    return [*args, meta_url, options.volume_name]


@dataclass(frozen=True)
class MountOptions:
    mountpoint: str
    cache_dir: str
    cache_size: str
    metrics_address: str = "0.0.0.0:9567"
    backup_meta: str = "1h"


def mount_args(options: MountOptions, meta_url: str) -> list[str]:
    """`juicefs mount` in the foreground; the caller decides how it is supervised."""
    return [
        "juicefs",
        "mount",
        "--cache-dir",
        options.cache_dir,
        "--cache-size",
        str(size_bytes(options.cache_size) // 2**20),
        "--backup-meta",
        options.backup_meta,
        "--metrics",
        options.metrics_address,
        "--no-usage-report",
        meta_url,
        options.mountpoint,
    ]


def mount_ready_marker(mountpoint: str) -> str:
    """A file that exists only inside a live JuiceFS mount."""
    return f"{mountpoint}/.config"


FORMAT_TIMEOUT_S = 300


def mount_script(format_command: list[str], mount_command: list[str], mountpoint: str, data_dir: str) -> str:
    """Entry script of the mount container: format, mount, create the data directory, then supervise.

    The data directory exists only inside the mounted filesystem, so a consumer that binds it cannot
    start while JuiceFS is not mounted.

    The script is the container's PID 1, and everything still running when PID 1 exits is killed.
    So on TERM/INT it passes the signal on and exits only once the mount process has unmounted and
    closed its session; exiting at once would leave a dead FUSE mount and a stale session behind.
    Exiting from the trap also keeps a stop during start-up from reaching the `mkdir`, which could
    otherwise land in the directory underneath a mount that is going away.
    """
    marker = mount_ready_marker(mountpoint)
    stale = shlex.quote(f" {mountpoint} fuse.juicefs ")
    return (
        "\n".join(
            [
                "set -eu",
                # A killed predecessor leaves a dead FUSE mount that would block the new one. Clear
                # only a JuiceFS mount: in Docker the mount point is the bind of the host directory,
                # and unmounting that would keep the new mount inside the container.
                f"if grep -qF {stale} /proc/self/mounts; then umount -l {shlex.quote(mountpoint)} || true; fi",
                # An unreachable metadata engine makes the client retry for minutes; fail, and let the
                # restart policy try again, instead of hanging with the health check never passing.
                f"timeout {FORMAT_TIMEOUT_S} {shlex.join(format_command)}",
                f"{shlex.join(mount_command)} &",
                "pid=$!",
                # Pass TERM/INT on, then exit with the mount process's status once it is gone.
                'trap \'kill -TERM "$pid" 2>/dev/null || true; '
                'status=0; wait "$pid" || status=$?; exit "$status"\' TERM INT',
                f'until [ -e {shlex.quote(marker)} ]; do kill -0 "$pid"; sleep 1; done',
                f"mkdir -p {shlex.quote(data_dir)}",
                'wait "$pid"',
            ]
        )
        + "\n"
    )


def mount_healthcheck(mountpoint: str, data_dir: str) -> list[str]:
    """Docker HEALTHCHECK test that passes only while the mount is live and the data directory exists."""
    return ["CMD-SHELL", f"test -e {shlex.quote(mount_ready_marker(mountpoint))} && test -d {shlex.quote(data_dir)}"]
